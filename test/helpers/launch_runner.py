"""Run a package's launch file through the real launch API, as `ros2 launch` does.

    python launch_runner.py <package> <launch file> [name:=value ...]

The `ros2` CLI is not on PyPI; this is the part of `ros2 launch` the tests need: find the file in
the package's installed share directory (ament index), include it with the launch arguments, and
run a LaunchService until its processes exit or SIGINT arrives (which the service forwards to
them). Exit status: the service's.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    package, file_name, *pairs = argv
    path = os.path.join(get_package_share_directory(package), "launch", file_name)
    arguments = []
    for pair in pairs:
        name, separator, value = pair.partition(":=")
        if not separator:
            print(f"launch argument {pair!r} is not name:=value", file=sys.stderr)
            return 2
        arguments.append((name, value))
    service = LaunchService(argv=pairs, noninteractive=True)
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(path), launch_arguments=arguments)]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
