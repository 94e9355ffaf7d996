"""recorder_node across processes with real rclpy + FastDDS: every frame recorded, splits, kill + recovery."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from support.bags import mount_tmpfs  # noqa: E402
from support.ros_helpers import ProcessLog, ServiceCaller, call_service  # noqa: E402

from vidseg_ros.data.bags.recover import is_complete  # noqa: E402

N = 60
SIZES = {'/cam_vga/image': (480, 640), '/cam_hd/image': (720, 1280)}
INFO = '/cam_hd/camera_info'


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    n = rclpy.create_node('recorder_test_pub', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(n)
    n.executor_ = executor
    yield n
    n.destroy_node()
    rclpy.try_shutdown(context=context)


def spinner(node):
    """What spins the test's node while a service answer is awaited (its executor runs in no thread)."""
    return lambda timeout_s: node.executor_.spin_once(timeout_sec=timeout_s)


def start_recorder(tmp_path: Path, *params: str, log_dir: Path | None = None, preexec_fn=None) -> subprocess.Popen:
    """recorder_node in its own process; ``params`` (name:=value) override the test defaults."""
    values = {'output_dir': str(tmp_path), 'bag_prefix': 'test', 'discovery_period_s': '0.2',
              'diagnostics_period_s': '0.3', 'min_free_disk_bytes': '0'}
    values.update(p.split(':=', 1) for p in params)
    args = [sys.executable, '-m', 'vidseg_ros.ros.recorder_node', '--ros-args']
    for name, value in values.items():
        if value != 'default':
            args += ['-p', f'{name}:={value}']
    tmp_path.mkdir(exist_ok=True)
    log = open((log_dir or tmp_path) / 'recorder.log', 'w')
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)


def wait_matched(node, pubs, proc, timeout=30.0):
    deadline = time.time() + timeout
    while not all(p.get_subscription_count() > 0 for p in pubs):
        assert proc.poll() is None, 'recorder exited early'
        assert time.time() < deadline, 'recorder never subscribed'
        node.executor_.spin_once(timeout_sec=0.05)


def make_image(i: int, hw) -> Image:
    h, w = hw
    msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
    msg.header.stamp.sec, msg.header.frame_id = i, f'frame{i}'
    row = (np.arange(w * 3, dtype=np.uint16) + i).astype(np.uint8)  # numbered, differs per frame
    msg.data = np.tile(row, h).tobytes()
    return msg


def make_info(i: int) -> CameraInfo:
    msg = CameraInfo(height=720, width=1280, distortion_model='plumb_bob')
    msg.header.stamp.sec, msg.header.frame_id = i, f'frame{i}'
    msg.k = [1000.0, 0.0, 640.0, 0.0, 1000.0, 360.0, 0.0, 0.0, 1.0]
    return msg


def content(msg) -> tuple:
    """What must survive recording, from an rclpy, rosbags or mcap_ros2 message.

    Raw CDR bytes are not comparable: FastCDR leaves alignment padding uninitialised, so two
    serialisations of one message may differ in padding. Every field is compared instead, and the
    pixel buffer byte for byte.
    """
    head = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id, msg.height, msg.width)
    if hasattr(msg, 'encoding'):
        return head + (msg.encoding, msg.is_bigendian, msg.step, bytes(msg.data))
    return head + (msg.distortion_model, tuple(msg.k), tuple(msg.d))


def publish_all(node, pubs: dict, n: int, rate_hz: float = 30.0) -> dict[str, list[tuple]]:
    """Publish n numbered messages per topic at rate_hz; returns the expected content per topic."""
    sent = {t: [] for t in pubs}
    t0 = time.monotonic()
    for i in range(n):
        for topic, pub in pubs.items():
            msg = make_info(i) if topic == INFO else make_image(i, SIZES[topic])
            pub.publish(msg)
            sent[topic].append(content(msg))
        time.sleep(max(0.0, t0 + (i + 1) / rate_hz - time.monotonic()))
    return sent


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout=60) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout)


def stop_cleanly(proc: subprocess.Popen, log: Path, sig=signal.SIGINT) -> None:
    """A user stop: exit code 0 well within 5 s, and not one ERROR line in the log."""
    t0 = time.monotonic()
    assert stop(proc, sig, timeout=10) == 0
    assert time.monotonic() - t0 < 5.0
    assert 'ERROR' not in log.read_text()


def wait_for(node, condition, timeout=20.0, what='condition'):
    """Spin the test node until condition() is true (instead of sleeping a fixed time)."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f'timed out waiting for {what}'
        node.executor_.spin_once(timeout_sec=0.05)


def topic_values(diags: list, name: str) -> dict:
    """Key/values of the latest status called ``name`` in the received DiagnosticArrays."""
    values = {}
    for arr in diags:
        for st in arr.status:
            if st.name == name:
                values = {kv.key: kv.value for kv in st.values}
    return values


def only_bag(tmp_path: Path) -> Path:
    bags = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith('test_')]
    assert len(bags) == 1, bags
    return bags[0]


def read_rosbags(paths) -> dict[str, list[tuple]]:
    """Decoded with rosbags' own CDR decoder and the bag's schemas (AnyReader)."""
    out: dict[str, list[tuple]] = {}
    with AnyReader([Path(p) for p in paths]) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(content(reader.deserialize(raw, conn.msgtype)))
    return out


def read_mcap(path: Path) -> dict[str, list[tuple]]:
    """Decoded with mcap + mcap_ros2 from the schemas stored in this one file."""
    out: dict[str, list[tuple]] = {}
    with open(path, 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages(log_time_order=False):
            out.setdefault(channel.topic, []).append(content(decoded))
    return out


def test_records_every_frame_and_splits(node, tmp_path):
    qos = QoSProfile(depth=N, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {t: node.create_publisher(Image, t, qos) for t in SIZES}
    pubs[INFO] = node.create_publisher(CameraInfo, INFO, qos)
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    proc = start_recorder(tmp_path, f'topics:=[{",".join(pubs)}]', 'max_bag_size_bytes:=60000000',
                          'chunk_size_bytes:=2000000')
    try:
        wait_matched(node, pubs.values(), proc)
        sent = publish_all(node, pubs, N)
        wait_for(node, lambda: topic_values(diags, '/vidseg_recorder').get('messages_written') == str(3 * N),
                 what='every message written')
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()
    bag = only_bag(tmp_path)
    files = sorted(bag.glob('*.mcap'))
    assert len(files) >= 3 and (bag / 'metadata.yaml').exists()
    got = read_rosbags([bag])
    for topic in sent:
        assert len(got[topic]) == N, (topic, len(got[topic]))
        assert got[topic] == sent[topic]  # every field and pixel identical, in order
    merged: dict[str, list[tuple]] = {}
    for f in files:  # each split file opens on its own, with both readers
        assert is_complete(f)
        alone = read_mcap(f)
        assert alone == {t: v for t, v in read_rosbags([f]).items()}
        for topic, msgs in alone.items():
            merged.setdefault(topic, []).extend(msgs)
    assert merged == sent


def test_services_and_diagnostics(node, tmp_path):
    pub = node.create_publisher(Image, '/small/image', QoSProfile(depth=50))
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    proc = start_recorder(tmp_path, 'topics:=[/small/image]', 'start_paused:=true')
    services = ServiceCaller(node, ProcessLog(proc, tmp_path / 'recorder.log'), spin=spinner(node))
    for name in ('pause', 'resume', 'split'):
        services.client(Trigger, f'/vidseg_recorder/{name}', wait=False)   # discovery starts now

    def call(name):
        # an answer FastDDS dropped (the recorder logs it) was served: the diagnostics below check each resume
        # and split
        answer = services.call(Trigger, f'/vidseg_recorder/{name}', Trigger.Request(), answer_s=10, lost_ok=True)
        assert answer is None or answer.success
    per_topic = '/vidseg_recorder: /small/image'
    try:
        wait_matched(node, [pub], proc)
        for i in range(5):  # paused: not recorded
            pub.publish(make_image(100 + i, (8, 8)))
            node.executor_.spin_once(timeout_sec=0.02)
        wait_for(node, lambda: topic_values(diags, per_topic).get('skipped_paused') == '5',
                 what='all delivered (and skipped) before resuming')
        call('resume')
        for part in range(2):
            for i in range(5):
                pub.publish(make_image(part * 5 + i, (8, 8)))
                node.executor_.spin_once(timeout_sec=0.02)
            wait_for(node, lambda: topic_values(diags, per_topic).get('messages_written') == str(5 * part + 5),
                     what='this part written')
            call('split')
        wait_for(node, lambda: topic_values(diags, '/vidseg_recorder').get('files') == '2'
                 and topic_values(diags, '/vidseg_recorder').get('current_file') == '', what='the second split')
        stop_cleanly(proc, tmp_path / 'recorder.log', signal.SIGTERM)
    finally:
        proc.kill()
    bag = only_bag(tmp_path)
    assert len(list(bag.glob('*.mcap'))) == 2
    assert len(read_rosbags([bag])['/small/image']) == 10
    values = topic_values(diags, per_topic)
    assert values.get('messages_written') == '10' and values.get('skipped_paused') == '5'
    assert values.get('dropped') == '0' and values.get('lost') == '0'


def test_records_with_sim_time_before_any_clock(node, tmp_path):
    """use_sim_time with no /clock yet (a bag player not started, a simulator paused): discovery and
    diagnostics ran on ROS-clock timers that never fired, so the recorder subscribed to nothing, recorded
    nothing and published no /diagnostics."""
    pub = node.create_publisher(Image, '/small/image', QoSProfile(depth=50))
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    proc = start_recorder(tmp_path, 'topics:=[/small/image]', 'use_sim_time:=true')
    try:
        wait_matched(node, [pub], proc)
        for i in range(5):
            pub.publish(make_image(i, (8, 8)))
            node.executor_.spin_once(timeout_sec=0.02)
        wait_for(node, lambda: topic_values(diags, '/vidseg_recorder: /small/image').get('messages_written') == '5',
                 what='5 frames written and said on /diagnostics')
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()
    assert len(read_rosbags([only_bag(tmp_path)])['/small/image']) == 5
    assert (tmp_path / 'recorder.log').read_text().count('no /clock has arrived') == 1   # logged at 0: said once


def test_sigkill_then_recover(node, tmp_path):
    pub = node.create_publisher(Image, '/cam_hd/image', QoSProfile(depth=N))
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    # chunks smaller than a frame: every frame ends a chunk, so every written frame must come back
    proc = start_recorder(tmp_path, 'topics:=[/cam_hd/image]', 'chunk_size_bytes:=1000000')
    try:
        wait_matched(node, [pub], proc)
        sent = publish_all(node, {'/cam_hd/image': pub}, N)['/cam_hd/image']
        written, deadline = 0, time.time() + 20
        while written < N and time.time() < deadline:
            node.executor_.spin_once(timeout_sec=0.1)
            for arr in diags:
                for st in arr.status:
                    if st.name == '/vidseg_recorder: /cam_hd/image':
                        written = int({kv.key: kv.value for kv in st.values}['messages_written'])
        assert written == N
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    bag = only_bag(tmp_path)
    (mcap_file,) = bag.glob('*.mcap')
    assert not is_complete(mcap_file) and not (bag / 'metadata.yaml').exists()
    result = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', str(bag), '--force'],
                            capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == 0, result.stderr
    out = bag.with_name(f'{bag.name}_recovered')
    assert is_complete(out / mcap_file.name) and (out / 'metadata.yaml').exists()
    assert not is_complete(mcap_file)  # the original is left as it was
    assert read_rosbags([out])['/cam_hd/image'] == sent
    assert read_mcap(out / mcap_file.name)['/cam_hd/image'] == sent


def test_best_effort_camera_via_qos_override_and_auto(node, tmp_path):
    # a: best-effort through ROS's per-topic QoS override; c: through auto reliability, given under its old
    # name qos_reliability (renamed input_reliability: old parameter files keep working);
    # d: listed, reliable publisher; b: matched by the regex but excluded (c: for the auto recorder)
    proc = start_recorder(tmp_path, 'topic_regex:=^/be/', 'exclude_regex:=/b/|/c/', 'topics:=[/plain/d]',
                          'qos_overrides./be/a/image.subscription.reliability:=best_effort')
    proc_auto = start_recorder(tmp_path / 'auto', 'topics:=[/be/c/image]', 'qos_reliability:=auto')
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    # the topics appear after both recorders run their timers: found by the discovery timer
    wait_for(node, lambda: node.count_publishers('/diagnostics') >= 2 and len(diags) >= 2, timeout=60,
             what='both recorders running')
    be = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    pubs = {t: node.create_publisher(Image, t, be) for t in ('/be/a/image', '/be/b/image', '/be/c/image')}
    pubs['/plain/d'] = node.create_publisher(Image, '/plain/d', QoSProfile(depth=10))
    try:
        wait_matched(node, [pubs['/be/a/image'], pubs['/be/c/image'], pubs['/plain/d']], proc)
        for i in range(5):
            for pub in pubs.values():
                pub.publish(make_image(i, (8, 8)))
            time.sleep(0.05)
        for topic in ('/be/a/image', '/plain/d', '/be/c/image'):
            wait_for(node, lambda: topic_values(diags, f'/vidseg_recorder: {topic}').get('messages_written') == '5',
                     timeout=60, what=f'5 messages of {topic} written')
        assert pubs['/be/b/image'].get_subscription_count() == 0  # excluded
        assert stop(proc) == 0 and stop(proc_auto) == 0
    finally:
        proc.kill()
        proc_auto.kill()
    got = read_rosbags([only_bag(tmp_path)])
    assert sorted(got) == ['/be/a/image', '/plain/d'] and all(len(v) == 5 for v in got.values())
    got = read_rosbags([only_bag(tmp_path / 'auto')])
    assert list(got) == ['/be/c/image'] and len(got['/be/c/image']) == 5


@pytest.mark.parametrize('min_free', ['0', 'default'])
def test_full_disk_ends_with_a_readable_bag_an_error_and_exit_1(node, tmp_path, min_free):
    """Camera frames into a small tmpfs: the bag closes properly, ERROR on /diagnostics, exit code 1."""
    fs = tmp_path / 'fs'
    default = 1 << 30  # RecorderSettings.min_free_disk_bytes: a 40 MB disk above that threshold
    mount_tmpfs(fs, 40 + (default >> 20 if min_free == 'default' else 0))
    try:
        pub = node.create_publisher(Image, '/cam_hd/image', QoSProfile(depth=N))
        diags = []
        node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
        proc = start_recorder(fs, 'topics:=[/cam_hd/image]', f'min_free_disk_bytes:={min_free}', log_dir=tmp_path)
        wait_matched(node, [pub], proc)
        t0, i = time.monotonic(), 0
        while proc.poll() is None and i < 100:  # 40 MB hold 14 frames
            pub.publish(make_image(i, SIZES['/cam_hd/image']))
            i += 1
            node.executor_.spin_once(timeout_sec=max(0.0, t0 + i / 30 - time.monotonic()))
        assert proc.wait(30) == 1
        last = wait_for_final_error(node, diags)
        values = {kv.key: kv.value for kv in last.values}
        assert last.level == DiagnosticStatus.ERROR and 'disk nearly full' in last.message
        assert 'closed properly' in last.message and values['last_file'].endswith('.mcap')
        bag = only_bag(fs)
        (mcap_file,) = bag.glob('*.mcap')
        assert is_complete(mcap_file) and (bag / 'metadata.yaml').exists()
        written = int(values['messages_written'])
        assert written >= 5
        assert len(read_rosbags([bag])['/cam_hd/image']) == len(read_mcap(mcap_file)['/cam_hd/image']) == written
        log = (tmp_path / 'recorder.log').read_text()
        assert f'{written} messages written' in log and 'bag closed:' not in log
    finally:
        proc.kill()
        subprocess.run(['umount', '-l', str(fs)], check=False)


def test_snapshot_writes_exactly_the_buffered_window(node, tmp_path):
    from rclpy.serialization import serialize_message
    pub = node.create_publisher(Image, '/snap/image', QoSProfile(depth=50))
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    frame = lambda i: make_image(i, (16, 16))  # noqa: E731 - every frame serialises to the same size
    size, window, n = len(serialize_message(frame(10))), 8, 30
    proc = start_recorder(tmp_path, 'topics:=[/snap/image]', 'snapshot_mode:=true',
                          f'snapshot_max_bytes:={window * size + size // 2}', 'snapshot_max_duration_s:=0.0')
    services = ServiceCaller(node, ProcessLog(proc, tmp_path / 'recorder.log'), spin=spinner(node))
    services.client(Trigger, '/vidseg_recorder/snapshot', wait=False)   # discovery starts now
    try:
        wait_matched(node, [pub], proc)
        for i in range(10, 10 + n):
            pub.publish(frame(i))
            node.executor_.spin_once(timeout_sec=0.01)
        per_topic = '/vidseg_recorder: /snap/image'
        wait_for(node, lambda: topic_values(diags, per_topic).get('messages_received') == str(n),
                 what='every frame buffered')
        # the answer names the bag: a dropped answer fails saying so
        answer = services.call(Trigger, '/vidseg_recorder/snapshot', Trigger.Request(), answer_s=10)
        assert answer.success, answer.message
        bag = Path(answer.message.rsplit(' to ', 1)[1])
        wait_for(node, lambda: (bag / 'metadata.yaml').exists(), what='the snapshot bag')
        wait_for(node, lambda: topic_values(diags, per_topic).get('messages_written') == str(window),
                 what='the snapshot counted')
        assert topic_values(diags, per_topic)['expired_snapshot'] == str(n - window)
        assert topic_values(diags, per_topic)['lost'] == '0'
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()
    expected = [content(frame(i)) for i in range(10 + n - window, 10 + n)]
    assert read_rosbags([bag])['/snap/image'] == expected  # first and last stamps included
    (mcap_file,) = bag.glob('*.mcap')
    assert read_mcap(mcap_file)['/snap/image'] == expected


@pytest.mark.parametrize('param', [
    'max_bag_size_bytes:=-1', 'max_bag_duration_s:=-1.0', 'discovery_period_s:=0.0', 'discovery_period_s:=-1.0',
    'chunk_size_bytes:=0', 'queue_max_bytes:=-5', 'input_depth:=0', 'fsync_bytes:=-1', 'snapshot_max_bytes:=-1',
    'min_free_disk_bytes:=-1', 'diagnostics_period_s:=0.0'])
def test_nonsense_startup_value_is_one_clear_line_and_exit_2(tmp_path, param):
    """Before: -1 sizes split after every message, a 0.0 period span a timer at full CPU, a negative one
    died with a raw RCLError; a clamped depth said nothing. Now: exit 2, one line with the valid range."""
    proc = start_recorder(tmp_path, param)
    try:
        assert proc.wait(30) == 2
    finally:
        proc.kill()
    log = (tmp_path / 'recorder.log').read_text()
    name = param.split(':=')[0]
    lines = [ln for ln in log.splitlines() if name in ln]
    assert len(lines) == 1 and 'out of range' in lines[0] and 'Min' in lines[0], log[-2000:]
    assert 'Traceback' not in log and 'RCLError' not in log
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # no bag folder was created


def test_parameters_are_read_only_at_run_time(node, tmp_path):
    """Before: every `ros2 param set` answered "successful", `param get` then showed the new value, and the
    recorder went on with the old one. Now each is refused with the reason and nothing changes."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters

    def call(srv_type, name, request):
        """(Each of these requests changes nothing when asked again: a dropped answer is asked again.)"""
        return call_service(node, ProcessLog(proc, tmp_path / 'recorder.log'), srv_type, f'/vidseg_recorder/{name}',
                            request, answer_s=10, spin=spinner(node))
    changes = {'compression': ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='gzip'),
               'output_dir': ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='/nonexistent'),
               'max_bag_size_bytes': ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=-7),
               'queue_max_bytes': ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=1 << 21),
               'next_output_dirs': ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY,
                                                  string_array_value=['/tmp'])}
    proc = start_recorder(tmp_path, 'topics:=[/ro/image]')
    try:
        request = SetParameters.Request(parameters=[ParameterMsg(name=k, value=v) for k, v in changes.items()])
        for name, result in zip(changes, call(SetParameters, 'set_parameters', request).results):
            assert not result.successful and 'read-only' in result.reason and name in result.reason, result
        values = call(GetParameters, 'get_parameters', GetParameters.Request(names=list(changes))).values
        assert [v.string_value for v in values[:2]] == ['none', str(tmp_path)]
        assert [v.integer_value for v in values[2:4]] == [0, 1 << 30] and list(values[4].string_array_value) == []
        described = call(DescribeParameters, 'describe_parameters', DescribeParameters.Request(names=list(changes)))
        assert all(d.read_only for d in described.descriptors)  # what `ros2 param describe` prints
        rng = described.descriptors[2].integer_range[0]
        assert (rng.from_value, rng.to_value) == (0, 10**15)
        assert proc.poll() is None
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()


def wait_for_final_error(node, diags: list):
    """The recorder's last ERROR status, the one that says how its bag ended. A periodic status can go out
    while the writer is still closing the bag (its error said, the outcome not yet): the first ERROR status to
    arrive lacked it now and then (CI: 'writing ... failed: File too large' without 'closed there')."""
    ended = ('closed', 'no bag file was written')

    def final():
        st = latest_status(diags, '/vidseg_recorder')
        return st if st is not None and st.level == DiagnosticStatus.ERROR and any(e in st.message for e in ended) \
            else None
    wait_for(node, lambda: final() is not None, timeout=10, what='the final ERROR diagnostic (how the bag ended)')
    return final()


def latest_status(diags: list, name: str):
    """The latest DiagnosticStatus called ``name`` in the received DiagnosticArrays (None before one)."""
    found = None
    for arr in diags:
        for st in arr.status:
            if st.name == name:
                found = st
    return found


def test_type_change_on_a_recorded_topic_is_said_loudly(node, tmp_path):
    """Before: a new publisher of another type on a recorded topic lost all its messages with no log and OK
    diagnostics. The bag cannot hold them (one type per topic): now a WARN log naming both types, a WARN
    status for the topic and the recorder, and a line at close."""
    from std_msgs.msg import String
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    proc = start_recorder(tmp_path, 'topics:=[/tt]')
    per_topic = '/vidseg_recorder: /tt'
    try:
        strings = node.create_publisher(String, '/tt', QoSProfile(depth=20))
        wait_matched(node, [strings], proc)
        for i in range(20):
            strings.publish(String(data=str(i)))
        wait_for(node, lambda: topic_values(diags, per_topic).get('messages_written') == '20', what='20 strings')
        assert latest_status(diags, per_topic).level == DiagnosticStatus.OK
        node.destroy_publisher(strings)
        images = node.create_publisher(Image, '/tt', QoSProfile(depth=20))
        for i in range(20):
            images.publish(make_image(i, (8, 8)))
        wait_for(node, lambda: 'sensor_msgs/msg/Image' in topic_values(diags, per_topic).get('unrecorded_types', ''),
                 what='the type change on /diagnostics')
        st = latest_status(diags, per_topic)
        assert st.level == DiagnosticStatus.WARN
        assert 'std_msgs/msg/String' in st.message and 'sensor_msgs/msg/Image' in st.message
        wait_for(node, lambda: latest_status(diags, '/vidseg_recorder').level == DiagnosticStatus.WARN,
                 what='the recorder status WARN')
        assert '/tt' in latest_status(diags, '/vidseg_recorder').message
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()
    log = (tmp_path / 'recorder.log').read_text()
    warned = [ln for ln in log.splitlines() if 'WARN' in ln and 'sensor_msgs/msg/Image' in ln]
    assert len(warned) == 2, log  # once when it appeared (not every discovery period), once at close
    assert 'std_msgs/msg/String' in warned[0] and 'NOT recorded' in warned[0]
    with AnyReader([only_bag(tmp_path)]) as reader:
        assert [c.msgtype for c in reader.connections] == ['std_msgs/msg/String']
        assert sum(1 for _ in reader.messages()) == 20


def test_file_size_limit_ends_with_a_readable_bag_an_error_and_exit_1(node, tmp_path):
    """QA's `ulimit -f 50000` (a write fails with EFBIG, as on a full disk): before, exit 1 with the file
    NOT closed and no metadata.yaml (rosbags: `Expected metadata file`) until `vidseg bag-recover`. Now the
    file is cut back to its last complete chunk and closed there: exit 1, ERROR saying so, bag readable."""
    limit = 48 << 20   # above FastDDS's 32 MB shared-memory segment (a file too), below 100 VGA frames

    def lower_file_size_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit raises EFBIG, no kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    topic = '/cam_vga/image'
    pub = node.create_publisher(Image, topic, QoSProfile(depth=N))
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    proc = start_recorder(tmp_path, f'topics:=[{topic}]', 'chunk_size_bytes:=2000000',
                          preexec_fn=lower_file_size_limit)
    try:
        wait_matched(node, [pub], proc)
        t0, i = time.monotonic(), 0
        while proc.poll() is None and i < 100:
            pub.publish(make_image(i, SIZES[topic]))
            i += 1
            node.executor_.spin_once(timeout_sec=max(0.0, t0 + i / 30 - time.monotonic()))
        assert proc.wait(30) == 1
        last = wait_for_final_error(node, diags)
    finally:
        proc.kill()
    assert last.level == DiagnosticStatus.ERROR and 'File too large' in last.message
    assert 'closed there' in last.message and 'NOT closed' not in last.message
    written = int(topic_values(diags, '/vidseg_recorder')['messages_written'])
    bag = only_bag(tmp_path)
    (mcap_file,) = bag.glob('*.mcap')
    assert is_complete(mcap_file) and (bag / 'metadata.yaml').exists() and mcap_file.stat().st_size <= limit
    got = read_rosbags([bag])[topic]
    assert len(got) == written >= 20 and got == read_mcap(mcap_file)[topic]
    assert [m[0] for m in got] == list(range(written))   # the first frames, in order, none missing
    log = (tmp_path / 'recorder.log').read_text()
    assert f'{written} messages written' in log and 'bag-recover' not in log


IMAGE_PUBLISHERS = '''
import rclpy, time
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('image_publishers')
pubs = [node.create_publisher(Image, t, 5) for t in ('/m1', '/m2')]
while True:
    time.sleep(1)
'''


def test_every_topic_offered_in_several_types_is_said(node, tmp_path):
    """A topic with publishers of two types is not recorded (as with ros2 bag record). The warning was logged
    once per process, so a second such topic was skipped with no word; now each is named in the log, on the
    recorder's /diagnostics status and at close."""
    from std_msgs.msg import String
    diags = []
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    # Both types appear between two looks (3 s apart) as a rule, taking the several-types path; if a look falls
    # between them, the type-change path says it instead: either way each topic must be named, once.
    proc = start_recorder(tmp_path, 'topics:=[/m1, /m2]', 'discovery_period_s:=3.0')
    pubs = [node.create_publisher(String, topic, QoSProfile(depth=5)) for topic in ('/m1', '/m2')]
    images = subprocess.Popen([sys.executable, '-c', IMAGE_PUBLISHERS])   # DDS: one type per topic per process
    try:
        wait_for(node, lambda: all(t in (latest_status(diags, '/vidseg_recorder') or DiagnosticStatus()).message
                                   for t in ('/m1', '/m2')), timeout=30, what='both topics on /diagnostics')
        assert latest_status(diags, '/vidseg_recorder').level == DiagnosticStatus.WARN
        stop_cleanly(proc, tmp_path / 'recorder.log')
    finally:
        proc.kill()
        images.kill()
    del pubs
    log = (tmp_path / 'recorder.log').read_text()
    for topic in ('/m1', '/m2'):
        said = [ln for ln in log.splitlines() if 'WARN' in ln and (
            f'{topic} has several types' in ln or f'{topic}: publisher(s) of type' in ln)]
        assert len(said) == 1, log          # once, not every discovery period
        assert 'std_msgs/msg/String' in said[0] and 'sensor_msgs/msg/Image' in said[0]
        assert any(f'{topic}: messages of type' in ln for ln in log.splitlines()), log    # and at close


IMAGE_PUBLISHER = '''
import sys, time, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('image_publisher')
if sys.argv[2] == 'gated':
    sys.stdin.readline()   # the participant is known to the recorder by now: the publisher alone is news
pub = node.create_publisher(Image, sys.argv[1], 5)
print('ready', flush=True)
while True:
    time.sleep(1)
'''


def test_a_topic_with_publishers_of_two_types_is_not_recorded_whichever_dds_reports_first(node, tmp_path):
    """QA: with publishers of two types on one topic, the type recorded (or whether the topic was recorded at
    all) depended on the order DDS discovery reported them. Now a topic's type is fixed SETTLE_S after the
    recorder first sees it (its messages held meanwhile, none lost): publishers of another type seen by then
    -> not recorded (as ros2 bag record), one WARN naming both types. /mix: the Image publisher is created
    only once the recorder has subscribed the String one (the old recorder recorded /mix as String); /both:
    both publishers exist before the recorder starts; /solo: one type, every message from the first."""
    from std_msgs.msg import String
    strings = {t: node.create_publisher(String, t, QoSProfile(depth=50)) for t in ('/mix', '/solo', '/both')}
    both = subprocess.Popen([sys.executable, '-c', IMAGE_PUBLISHER, '/both', 'now'], stdout=subprocess.PIPE, text=True)
    gated = subprocess.Popen([sys.executable, '-c', IMAGE_PUBLISHER, '/mix', 'gated'], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    log = tmp_path / 'recorder.log'
    try:
        assert both.stdout.readline().strip() == 'ready'
        proc = start_recorder(tmp_path, 'topics:=[/mix, /solo, /both]', 'discovery_period_s:=0.1')
        try:
            wait_matched(node, [strings['/mix'], strings['/solo']], proc)   # subscribed, type not fixed yet
            gated.stdin.write('go\n')
            gated.stdin.flush()
            assert gated.stdout.readline().strip() == 'ready'
            for i in range(20):
                for pub in strings.values():
                    pub.publish(String(data=str(i)))
            wait_for(node, lambda: all(f'{t} has several types' in log.read_text() for t in ('/mix', '/both')),
                     what='the several-types warnings')
            wait_for(node, lambda: 'recording /solo' in log.read_text(), what='/solo recorded')
            stop_cleanly(proc, log)
        finally:
            proc.kill()
    finally:
        both.kill()
        gated.kill()
    text = log.read_text()
    for topic in ('/mix', '/both'):
        said = [ln for ln in text.splitlines() if 'WARN' in ln and f'{topic} has several types' in ln]
        assert len(said) == 1 and 'std_msgs/msg/String' in said[0] and 'sensor_msgs/msg/Image' in said[0], text
        assert f'recording {topic}' not in text and f'{topic}: publisher(s) of type' not in text, text
    with AnyReader([only_bag(tmp_path)]) as reader:
        assert [c.topic for c in reader.connections] == ['/solo']
        assert [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages()] == [str(i) for i in range(20)]


@pytest.mark.parametrize('compression,package', [('zstd', 'zstandard'), ('lz4', 'lz4')])
def test_compression_without_its_codec_is_one_line_and_exit_2(tmp_path, monkeypatch, compression, package):
    """Without the Python codec the recorder said "recording", failed on the first message ("unsupported
    compression type zstandard; closing ... failed ()"), exit 1, and left an empty bag on every respawn."""
    stub = tmp_path / 'stub' / package
    stub.mkdir(parents=True)
    (stub / '__init__.py').write_text(f'raise ImportError("No module named {package!r} (simulated)")\n')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(stub.parent),
                                                                  os.environ.get('PYTHONPATH')])))
    out = tmp_path / 'bags'
    proc = start_recorder(out, f'compression:={compression}')
    try:
        assert proc.wait(60) == 2
    finally:
        proc.kill()
    log = (out / 'recorder.log').read_text()
    assert log.strip() == (f"RecorderNode: ValueError: compression {compression!r} needs the Python package "
                           f"{package}, which cannot be imported (No module named {package!r} (simulated)): "
                           f"pip install {package}, or set compression to none"), log
    assert [p.name for p in out.iterdir()] == ['recorder.log']   # no bag folder


@pytest.mark.parametrize('output_dir', ['/proc/vidseg_nope', '{file}/bags'])
def test_an_output_dir_that_cannot_be_made_is_one_line_naming_the_setting(tmp_path, output_dir):
    """It said 'RecorderNode: FileNotFoundError: [Errno 2] No such file or directory: '/proc/nope'' (under
    ros2 launch, output_dir:= given wrong): nothing said which setting."""
    (tmp_path / 'file').write_text('a file, not a folder')
    proc = start_recorder(tmp_path, f'output_dir:={output_dir.format(file=tmp_path / "file")}', 'topics:=[/x]')
    proc.wait(timeout=60)
    out = (tmp_path / 'recorder.log').read_text()
    assert proc.returncode == 2, out
    assert "output_dir: cannot make '" in out and 'Traceback' not in out, out
