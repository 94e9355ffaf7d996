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
# pytest-xdist (`make test` runs on several workers): each worker gets a domain of its own, the run's id plus its
# index (workers inherit the id from the controller, which imported this file first), or tests that list nodes
# and topics, and the ros2 daemon of a domain, would see another worker's.
WORKER = os.environ.get('PYTEST_XDIST_WORKER')
if WORKER and os.environ['ROS_DOMAIN_ID'].isdigit():
    os.environ['ROS_DOMAIN_ID'] = str((int(os.environ['ROS_DOMAIN_ID']) + int(WORKER.removeprefix('gw'))) % 233)
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_shm.xml'))
os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)

# A run started as a background job of a script (`make test &` without job control) inherits SIGINT ignored, and
# so does every process a test starts: the tests that Ctrl-C a command or a node then waited until their timeout.
# The processes the tests start get SIGINT as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Under xdist (`make test`) the workers take whole files in this order: the ROS files, which mostly wait
    (discovery, nodes starting, windows where nothing may arrive), interleaved with the CPU-bound core files, so
    the two kinds share the cores all along instead of all workers on core files and then all waiting. Each file
    keeps its tests' order; plain pytest keeps the collection order."""
    if WORKER is None:
        return
    files: dict[Path, list] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    kinds: dict[bool, list[Path]] = {}
    for path in files:
        kinds.setdefault(path.parent.name == 'ros', []).append(path)
    share = {path: (i + 0.5) / len(paths) for paths in kinds.values() for i, path in enumerate(paths)}
    items[:] = [item for path in sorted(files, key=share.__getitem__) for item in files[path]]


def _utf8(text: str) -> str:
    return text.encode('utf-8', 'backslashreplace').decode('utf-8')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A worker sends its reports to the controller as UTF-8, and a lone surrogate (a non-UTF-8 file name as
    Python decodes it, in a test's captured log or its failure) ended the whole run in an INTERNALERROR
    (test_non_utf8_paths). Such characters are sent escaped (\\udce9)."""
    outcome = yield
    report = outcome.get_result()
    if WORKER is None:
        return
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        report.longrepr = tuple(_utf8(x) if isinstance(x, str) else x for x in report.longrepr)
    elif report.longrepr is not None and _utf8(text := str(report.longrepr)) != text:
        report.longrepr = _utf8(text)


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
    # Under xdist only the controller cleans, after every worker has ended: a worker would race the others' nodes.
    fastdds_tools = Path(sys.prefix) / 'tools' / 'fastdds'
    if WORKER is None and (fastdds_tools / 'shm' / 'clean.py').exists():
        subprocess.run([sys.executable, '-c', 'from shm.clean import Clean; Clean().run(False)'],
                       cwd=fastdds_tools, capture_output=True, timeout=60)
