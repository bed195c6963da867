"""Shared test helpers, imported as `helpers.<module>` (pytest.ini puts test/ on sys.path).

Nothing is imported here: each test imports only what it uses, so the pure-layer tests never
pull in rclpy or torch (the oldest-stack run has neither the ROS nor the torch helpers' needs).
"""
