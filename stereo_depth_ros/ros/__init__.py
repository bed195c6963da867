"""ROS 2 layer: the only package importing rclpy, *_msgs, message_filters or cv_bridge.

stereo_depth_node (the node and main()), image_conversion (Image <-> numpy), messages (CameraInfo
pair -> StereoCalibration; DisparityImage, depth, PointCloud2, rectified CameraInfo), sync (exact /
approximate four-topic synchroniser), params (descriptors + validation from config.py),
diagnostics (counters and latency -> /diagnostics).
"""
