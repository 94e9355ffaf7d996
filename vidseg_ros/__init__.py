"""vidseg_ros: real-time video semantic segmentation for ROS 2 and the data loop that improves it.

Layers (imports point downward only): ros -> tools/cli -> training -> data -> engine -> models.
Only ``vidseg_ros.ros`` imports rclpy.
"""
__version__ = '0.1.0'
