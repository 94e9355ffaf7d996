"""Bags: read (any rosbag2/ROS 1, damaged too), write (rosbag2 MCAP), recover; frames -> bags."""
