"""Stereo depth for ROS 2: PSMNet and OpenCV SGBM behind one node."""

__version__ = "0.1.0"
