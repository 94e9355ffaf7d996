"""ament_python package: builds with colcon on a ROS 2 install and with pip in a virtual environment."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vidseg_ros'
NODES = ['segment_node', 'segment_lifecycle_node', 'recorder_node', 'video_source_node']

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml') + glob('config/*.rviz')),
        ('share/' + PACKAGE + '/config/train', glob('config/train/*.yaml')),
        ('share/' + PACKAGE + '/models', glob('models/*.pt') + glob('models/*.ts') + glob('models/*.onnx') + glob('models/*.md')),
        # `ros2 run` and launch_ros look in lib/<pkg>/, pip puts console scripts in bin/: ship both.
        ('lib/' + PACKAGE, ['scripts/' + n for n in NODES]),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='vidseg_ros maintainers',
    maintainer_email='maintainers@vidseg-ros.invalid',
    description='Real-time video semantic segmentation for ROS 2, with recorder and training loop.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [f'{n} = {PACKAGE}.ros.entry:{n}' for n in NODES] + [
            f'vidseg = {PACKAGE}.cli:main',
        ],
    },
)
