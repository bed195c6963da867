"""Getting images to the node: QoS profiles (REP 2003, overridable) and large frames over DDS.

QoS: the inputs are sensor data (best effort, keep last `queue_size`, volatile), the outputs are
processed data (reliable, keep last 1, volatile); `use_system_default_qos` gives the inputs
the middleware's default QoS (a DDS reader's default reliability is best effort). Every
subscription and publisher takes ROS's `qos_overrides.<topic>.<subscription|publisher>.<policy>`
parameters (rclpy's QoSOverridingOptions), so a camera or a consumer with
other QoS needs no code change.

Large frames: stock Fast DDS moves data through a 512 KiB shared-memory segment; a best-effort
image larger than that travels in fragments and is lost under load (1 of 3 KITTI frames arrived
in a replay). `config/fastdds_large_images.xml` gives a 16 MiB segment. The project's own
processes use it when the user has set no profile (`use_large_image_profile`, before rclpy.init);
a camera driver needs it set in its own environment (`lost_in_transport_hint`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_system_default)
from rclpy.qos_overriding_options import QoSOverridingOptions

PROFILE_NAME = "fastdds_large_images.xml"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""Fast DDS 3 (Jazzy, Kilted) reads the first, Fast DDS 2 (Humble, Iron) the second (Fast DDS 3
warns that it is deprecated, so it is set only there)."""
FAST_DDS_2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")


def input_qos(depth: int, system_default: bool = False) -> QoSProfile:
    """Subscriptions: sensor data (best effort, keep last `depth`, volatile), or the system
    default (reliable) when asked."""
    if system_default:
        profile = QoSProfile(depth=depth)
        profile.reliability = qos_profile_system_default.reliability
        profile.durability = qos_profile_system_default.durability
        return profile
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    """Publishers: reliable (REP 2003 processed data), keep last 1 (latest frame wins). A new
    object per call: rclpy writes qos_overrides into the profile it is given."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def overridable() -> QoSOverridingOptions:
    """The qos_overrides.* parameters for reliability, durability, history and depth."""
    return QoSOverridingOptions.with_default_policies()


def _event_handler_module():
    try:
        from rclpy import event_handler as module  # noqa: PLC0415  (Iron and newer)
    except ImportError:
        from rclpy import qos_event as module  # noqa: PLC0415  (Humble)
    return module


def incompatible_qos_events(on_incompatible, publisher: bool = False):
    """Event callbacks that call on_incompatible(policy name, new events) when a peer's QoS is
    incompatible with this subscription (or publisher): nothing flows between them then."""
    from rclpy.qos import qos_policy_name_from_kind  # noqa: PLC0415

    module = _event_handler_module()

    def handle(info) -> None:
        on_incompatible(qos_policy_name_from_kind(info.last_policy_kind),
                        int(info.total_count_change))

    if publisher:
        return module.PublisherEventCallbacks(incompatible_qos=handle)
    return module.SubscriptionEventCallbacks(incompatible_qos=handle)


def large_image_profile() -> Path | None:
    """The shipped Fast DDS profile: the installed share folder (colcon or pip), else the source
    checkout's config/."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory  # noqa: PLC0415
        candidates.append(Path(get_package_share_directory("stereo_depth_ros")) / "config")
    except Exception:  # noqa: BLE001  (not installed with ament, or no ament_index here)
        pass
    candidates += [Path(sys.prefix) / "share" / "stereo_depth_ros" / "config",
                   Path(__file__).resolve().parents[2] / "config"]
    return next((folder / PROFILE_NAME for folder in candidates
                 if (folder / PROFILE_NAME).is_file()), None)


def uses_fast_dds(environ=os.environ) -> bool:
    """Whether this process's RMW is Fast DDS (the default RMW when none is named)."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def use_large_image_profile(environ=os.environ) -> str | None:
    """Point Fast DDS at the shipped large-image profile when the user set none (call before
    rclpy.init). Returns the line to log, or None when nothing changed (another RMW, a profile
    already set, or the file not found)."""
    if not uses_fast_dds(environ) or any(environ.get(name) for name in PROFILE_VARIABLES):
        return None
    profile = large_image_profile()
    if profile is None:
        return None
    environ[PROFILE_VARIABLES[0]] = str(profile)
    if environ.get("ROS_DISTRO", "").lower() in FAST_DDS_2_DISTROS:
        environ[PROFILE_VARIABLES[1]] = str(profile)
    return (f"Fast DDS: no profile set, using {profile} (16 MiB shared memory, so large "
            "best-effort images are not lost); set FASTDDS_DEFAULT_PROFILES_FILE to use your own")


def describe_qos(profile: QoSProfile) -> str:
    """'best_effort volatile keep_last 5': the policies a subscription or publisher got."""
    history = profile.history.name.lower()
    if profile.history == HistoryPolicy.KEEP_LAST:
        history += f" {profile.depth}"
    return f"{profile.reliability.name.lower()} {profile.durability.name.lower()} {history}"


def lost_in_transport_hint(image_topic: str) -> str:
    """What to do when camera_info arrives but the images do not."""
    profile = large_image_profile()
    where = str(profile) if profile else f"<share>/stereo_depth_ros/config/{PROFILE_NAME}"
    return (f"images on {image_topic} are lost before the node (their camera_info arrives): "
            "with Fast DDS, best-effort images larger than its 512 KiB shared-memory segment are "
            f"dropped. Start the camera driver / bag player with FASTDDS_DEFAULT_PROFILES_FILE="
            f"{where} (FASTRTPS_DEFAULT_PROFILES_FILE on Humble), or subscribe reliably "
            f"(qos_overrides.{image_topic}.subscription.reliability: reliable)")
