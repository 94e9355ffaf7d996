"""Shared test set-up: ROS 2 kept on loopback with a per-run domain id (setup.cfg puts the checkout and
``test/`` on sys.path: helpers are ``support.<module>``)."""
import logging
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from support.paths import DATA, ROOT

# Every ROS participant in this run (this process and the nodes it starts) stays on loopback,
# in a domain of its own, with the shared-memory profile that carries camera-sized messages.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(100, 199)))
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_shm.xml'))
os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)

# A run started as a background job of a script (`make test &` without job control) inherits SIGINT ignored, and
# so does every process a test starts: the tests that Ctrl-C a command or a node then waited until their timeout.
# The processes the tests start get SIGINT as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _vidseg_logs_reach_caplog():
    """Importing ROS 2's ``launch`` (the launch tests do, at collection) makes its LaunchLogger, which does not
    propagate, the class of every logger made afterwards: a vidseg_ros module first imported later then logged
    past caplog, and a test of a log line passed alone and failed in the full run. The CLI and the nodes never
    import launch; only this process mixes them."""
    logging.setLoggerClass(logging.Logger)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith('vidseg_ros') and isinstance(logger, logging.Logger) and type(logger) is not logging.Logger:
            logger.propagate = True


@pytest.fixture(scope='session')
def camvid_dir():
    """The CamVid copy in ../shared/data (never copied into the repo); skips when absent."""
    path = DATA / 'camvid'
    if not path.is_dir():
        pytest.skip(f'CamVid not found at {path} (set VIDSEG_DATA)')
    return path


@pytest.fixture(scope='session')
def davis_dir():
    """The DAVIS 2016 copy in ../shared/data; skips when absent."""
    path = DATA / 'davis2016'
    if not path.is_dir():
        pytest.skip(f'DAVIS 2016 not found at {path} (set VIDSEG_DATA)')
    return path


@pytest.fixture(scope='session')
def sample_video():
    """Debian's opencv-doc clip vtest.avi (real video from a registry), fetched once into the cache."""
    from vidseg_ros.data.sample_video import SampleVideoError, fetch_opencv_sample
    try:
        return fetch_opencv_sample()
    except SampleVideoError as e:
        pytest.skip(f'no real video: {e}')


def pytest_sessionfinish(session, exitstatus):
    """Leave the machine as the run found it: no ros2 CLI daemon, no shared memory of killed nodes."""
    import subprocess
    if 'support.launch_helpers' in sys.modules:
        # `ros2 param/lifecycle/topic` start a daemon for this run's domain that outlives pytest (one per
        # run, since each run has its own domain id)
        ros2 = sys.modules['support.launch_helpers'].BIN / 'ros2'
        if ros2.exists():
            subprocess.run([str(ros2), 'daemon', 'stop'], capture_output=True, timeout=30)
    # A SIGKILLed participant leaves its FastDDS segment in /dev/shm (32 MB with the shipped profile); the
    # kill and crash tests left ~45 per run, 585 MB of RAM. FastDDS's own `fastdds shm clean` removes the
    # files no live process holds; it is run as a module because its CLI front end also wants psutil.
    fastdds_tools = Path(sys.prefix) / 'tools' / 'fastdds'
    if (fastdds_tools / 'shm' / 'clean.py').exists():
        subprocess.run([sys.executable, '-c', 'from shm.clean import Clean; Clean().run(False)'],
                       cwd=fastdds_tools, capture_output=True, timeout=60)
