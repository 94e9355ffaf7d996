"""ament_python package: builds with colcon on a ROS 2 install and with pip in a virtual environment."""
import runpy
import shutil
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PACKAGE = 'vidseg_ros'
NODES = ['segment_node', 'segment_lifecycle_node', 'recorder_node', 'video_source_node']

# What the code imports at run time (requirements.txt pins the versions `make` tests with; colcon does not
# read these: on a ROS install rosdep and package.xml bring numpy, opencv and yaml, pip the rest, as the README
# says). Without them `pip install vidseg_ros-*.whl` gave a venv where `vidseg --help` died on
# "No module named 'typer'". Optional parts are extras: a command missing one says which to install.
REQUIRES = [
    'torch', 'numpy', 'opencv-python-headless', 'pyyaml', 'tqdm', 'typer',
    'rosbags', 'mcap>=1.6', 'zstandard', 'lz4',   # mcap 1.6: iter_messages' starting_at/ending_before
    'backports.zstd; python_version < "3.14"',   # foreign .zstd bags (rosbags' own dependency there)
]
# vidseg_ros/extras.py, read as a file: importing the package here would need its requirements installed first
EXTRAS = runpy.run_path(str(Path(__file__).parent / PACKAGE / 'extras.py'))['EXTRAS']


class BuildPy(build_py):
    """Copy the package into a build/lib/vidseg_ros emptied first: setuptools only adds and updates files
    there, so a module deleted or moved in the source stayed in every later wheel and `make install` (still
    importable: code that imports it passed the tests run on the installed package, and failed on a clean clone)."""

    def run(self):
        shutil.rmtree(Path(self.build_lib) / PACKAGE, ignore_errors=True)
        super().run()


setup(
    name=PACKAGE,
    cmdclass={'build_py': BuildPy},
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
    install_requires=['setuptools', *REQUIRES],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer='vidseg_ros maintainers',
    maintainer_email='maintainers@vidseg-ros.invalid',
    description='Real-time video semantic segmentation for ROS 2, with recorder and training loop.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [f'{n} = {PACKAGE}.ros.entry:{n}' for n in NODES] + [
            f'vidseg = {PACKAGE}.cli:main',
        ],
    },
)
