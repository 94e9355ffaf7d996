"""The recorder's ROS-free core: byte-bounded queue, writer thread, snapshot ring, disk reserve."""
