"""The optional parts of the package: pip extra -> the packages it adds (``pip install "vidseg_ros[onnx]"``).

One definition for setup.py (which reads this file without importing the package) and for the line a command
prints when one of these packages is missing.
"""
EXTRAS = {
    'onnx': ['onnx', 'onnxscript', 'onnxruntime'],     # vidseg export, .onnx models
    'dask': ['dask', 'distributed'],                   # --executor dask
    'plots': ['matplotlib'],                           # vidseg eval's plots
    # ROS 2 Kilted from PyPI, for a venv without a ROS install (a ROS install has them: do not add them there)
    'ros': ['ros-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-sensor-msgs', 'ros-std-msgs', 'ros-diagnostic-msgs',
            'ros-std-srvs', 'ros-lifecycle-msgs', 'ros-ament-index-python'],
}
EXTRAS['all'] = sorted({r for rs in EXTRAS.values() for r in rs})


def extra_of(package: str) -> str | None:
    """The extra (other than ``all``) that brings ``package`` (a pip name, ``dask[distributed]`` as ``dask``)."""
    name = package.split('[')[0]
    return next((extra for extra, names in EXTRAS.items() if extra != 'all' and name in names), None)
