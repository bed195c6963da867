"""ament_python package definition (works with colcon and with plain pip)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "stereo_depth_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")
         + glob("config/*.xml")),
    ],
    install_requires=[
        "setuptools",
        # The oldest versions tested (`make test-oldest`): ROS 2 Humble's apt NumPy and OpenCV,
        # so a pip install on Humble does not replace ROS's own NumPy.
        "numpy>=1.21",
        "opencv-python-headless>=4.5.4",
        "torch>=2.1",
        "PyYAML>=5.4",
    ],
    extras_require={
        "bags": ["rosbags>=0.10"],
        # stereo_depth_train's TensorBoard summaries (without it: a one-line hint, JSON log only)
        "train": ["tensorboard>=2.14"],
        # stereo_depth_export (onnx + onnxruntime) and backend onnx (onnxruntime alone; on a
        # Jetson or with CUDA/TensorRT install onnxruntime-gpu instead)
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "test": ["pytest"],
    },
    zip_safe=True,
    maintainer="stereo_depth_ros maintainers",
    maintainer_email="maintainers@users.noreply.example",
    description="Stereo depth for ROS 2: PSMNet and OpenCV SGBM, disparity, depth and point clouds.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "stereo_depth_infer = stereo_depth_ros.tools.infer:main",
            "stereo_depth_node = stereo_depth_ros.ros.stereo_depth_node:main",
            "stereo_depth_lifecycle_node = "
            "stereo_depth_ros.ros.stereo_depth_lifecycle_node:main",
            "stereo_depth_point_cloud_node = stereo_depth_ros.ros.point_cloud_node:main",
            "stereo_depth_kitti2bag = stereo_depth_ros.tools.kitti2bag:main",
            "stereo_depth_replay = stereo_depth_ros.tools.replay:main",
            "stereo_depth_dump = stereo_depth_ros.tools.dump:main",
            "stereo_depth_eval = stereo_depth_ros.tools.evaluate:main",
            "stereo_depth_train = stereo_depth_ros.tools.train:main",
            "stereo_depth_bench = stereo_depth_ros.tools.bench:main",
            "stereo_depth_export = stereo_depth_ros.tools.export:main",
        ],
    },
)
