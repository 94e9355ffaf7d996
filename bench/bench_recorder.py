"""Recorder throughput: highest image rate recorded with zero loss, next to disk and DDS limits.

All in one run, on this machine:

1. ``disk``: raw sequential write speed of the bench directory's disk (8 MiB blocks, fdatasync).
2. ``writer``: BagWriter alone in this process (no DDS), same disk.
3. per resolution (640x480, 1280x720, 1920x1080 rgb8):
   ``dds``: publisher -> raw subscriber in another process that only counts (no writing);
   ``recorder``: recorder_node in another process at a rising rate ladder, each step on its own topic;
   a step passes when every published frame is in the bag (counted from the MCAP summary). The
   recorder runs with a small write queue (``--queue-mb``, default 128 MB) so that a rate it can only
   buffer, not sustain, overflows the queue within a step and shows as lost frames.
4. three 1280x720 cameras at 30 Hz together (~250 MB/s).

Run: ``python bench/bench_recorder.py [--dir /tmp] [--step-s 3]``. Bags go to a temporary folder
under ``--dir`` and are deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(150 + os.getpid() % 40))
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_shm.xml'))
os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))

RESOLUTIONS = {'640x480': (480, 640), '1280x720': (720, 1280), '1920x1080': (1080, 1920)}
LADDER_FPS = [30, 60, 90, 120, 180, 240, 300, 400]


def disk_speed(directory: Path, total: int = 1 << 30, block: int = 8 << 20) -> float:
    """Sequential write MB/s including the final fdatasync."""
    path = directory / 'disk_speed.bin'
    buf = os.urandom(block)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    try:
        for _ in range(total // block):
            os.write(fd, buf)
        os.fdatasync(fd)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    return total / dt / 1e6


def image_cdr(hw, i: int = 0) -> bytes:
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    h, w = hw
    msg = Image(height=h, width=w, encoding='rgb8', step=w * 3)
    msg.header.stamp.sec = i
    msg.data = os.urandom(h * w * 3)
    return serialize_message(msg)


def writer_speed(directory: Path, hw, seconds: float = 3.0) -> tuple[float, float]:
    """BagWriter alone (pre-serialized frames, no DDS, file closed and synced): MB/s, CPU s per GB."""
    from vidseg_ros.data.bag_writer import BagWriter
    data = image_cdr(hw)
    w = BagWriter(directory / 'writer_only', chunk_size_bytes=4 << 20, fsync_bytes=64 << 20)
    w.add_topic('/bench', 'sensor_msgs/msg/Image')
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        w.write('/bench', data, time.time_ns())
        n += 1
    w.close()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(directory / 'writer_only')
    return n * len(data) / dt / 1e6, cpu / (n * len(data) / 1e9)


def count_subscriber(topic: str, seconds: float) -> None:
    """Child role: count raw messages on a topic for ``seconds`` after the first one; print JSON."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node('bench_counter')
    state = {'n': 0, 'bytes': 0, 't0': None, 't1': None}

    def on_msg(data: bytes) -> None:
        now = time.perf_counter()
        state['t0'] = state['t0'] or now
        state['t1'] = now
        state['n'] += 1
        state['bytes'] += len(data)
    node.create_subscription(Image, topic, on_msg, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
                             raw=True)
    deadline = time.perf_counter() + seconds + 30
    while time.perf_counter() < deadline and (state['t0'] is None or time.perf_counter() - state['t0'] < seconds):
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(state), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


class Publisher:
    """Publishes pre-serialized frames (publish(bytes): no per-frame conversion) at a given rate."""

    def __init__(self):
        import rclpy
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node('bench_publisher')

    def publisher(self, topic: str):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        return self.node.create_publisher(Image, topic, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def wait_matched(self, pubs, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while not all(p.get_subscription_count() > 0 for p in pubs):
            if time.time() > deadline:
                raise TimeoutError('subscriber never matched')
            time.sleep(0.05)

    def run(self, pubs, data: bytes, fps: float, seconds: float) -> tuple[int, int, float]:
        """Publish on every publisher at ``fps`` (0: as fast as possible).

        Returns (messages published, publish calls that failed, seconds). A failed publish (the DDS
        writer's history is full: the reader is not keeping up) is counted, not retried.
        """
        from rclpy.subscription import RCLError
        n = failed = 0
        t0 = time.perf_counter()
        ticks = 0
        while time.perf_counter() - t0 < seconds:
            for p in pubs:
                try:
                    p.publish(data)
                    n += 1
                except RCLError:
                    failed += 1
            ticks += 1
            if fps:
                time.sleep(max(0.0, t0 + ticks / fps - time.perf_counter()))
        return n, failed, time.perf_counter() - t0


def dds_limit(pub: Publisher, hw, seconds: float) -> float:
    topic = f'/bench_dds_{hw[1]}'
    child = subprocess.Popen([sys.executable, __file__, '--count-sub', topic, str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    p = pub.publisher(topic)
    pub.wait_matched([p])
    data = image_cdr(hw)
    pub.run([p], data, 0, seconds + 1.5)
    out = json.loads(child.communicate(timeout=60)[0].strip().splitlines()[-1])
    pub.node.destroy_publisher(p)
    dt = max((out['t1'] or 0) - (out['t0'] or 0), 1e-6)
    return out['bytes'] / dt / 1e6


QUEUE_BYTES = 128 << 20


def start_recorder(directory: Path, topics: list[str]) -> subprocess.Popen:
    args = [sys.executable, '-m', 'vidseg_ros.ros.recorder_node', '--ros-args',
            '-p', f'output_dir:={directory}', '-p', 'bag_prefix:=bench', '-p', f'topics:=[{",".join(topics)}]',
            '-p', 'discovery_period_s:=0.2', '-p', 'min_free_disk_bytes:=2000000000',
            '-p', f'queue_max_bytes:={QUEUE_BYTES}']
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def reap_cpu_s(proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """Wait for the recorder to exit; returns its user+system CPU seconds (os.wait4 rusage)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    raise TimeoutError('recorder did not exit')


def bag_counts(directory: Path) -> dict[str, int]:
    from mcap.reader import make_reader
    counts: dict[str, int] = {}
    for path in directory.glob('bench_*/*.mcap'):
        with open(path, 'rb') as f:
            summary = make_reader(f).get_summary()
        for cid, channel in summary.channels.items():
            counts[channel.topic] = counts.get(channel.topic, 0) + summary.statistics.channel_message_counts.get(cid, 0)
    return counts


def record_ladder(pub: Publisher, directory: Path, name: str, hw, step_s: float, cameras: int = 1,
                  ladder=LADDER_FPS) -> list[dict]:
    """Rising rates until a step loses a frame (or the publisher cannot keep the pace)."""
    data = image_cdr(hw)
    results = []
    for fps in ladder:
        topics = [f'/bench_{name}_{fps}_{c}' for c in range(cameras)]
        bag_dir = directory / f'rec_{name}_{fps}'
        bag_dir.mkdir()
        proc = start_recorder(bag_dir, topics)
        pubs = [pub.publisher(t) for t in topics]
        try:
            pub.wait_matched(pubs)
            time.sleep(0.3)
            sent, failed, dt = pub.run(pubs, data, fps, step_s)
            time.sleep(1.0)  # let DDS deliver the tail before stopping
            proc.send_signal(signal.SIGINT)
            cpu_s = reap_cpu_s(proc)
        finally:
            proc.kill()
            for p in pubs:
                pub.node.destroy_publisher(p)
        counts = bag_counts(bag_dir)
        shutil.rmtree(bag_dir)
        got = sum(counts.get(t, 0) for t in topics)
        achieved = sent / cameras / dt
        mbps = sent * len(data) / dt / 1e6
        cpu_per_gb = cpu_s / max(got * len(data) / 1e9, 1e-9)
        ok = got == sent and failed == 0 and achieved >= 0.95 * fps
        results.append({'fps': fps, 'cameras': cameras, 'sent': sent, 'recorded': got, 'lost': sent - got,
                        'publish_failed': failed, 'achieved_fps': achieved, 'MB_s': mbps, 'ok': ok,
                        'cpu_s_per_GB': cpu_per_gb})
        print(f'  {name} x{cameras} @ {fps:4d} Hz target ({achieved:6.1f} achieved): sent {sent:5d}, recorded '
              f'{got:5d}, lost {sent - got:4d}, publish failed {failed:4d}  {mbps:6.1f} MB/s  '
              f'recorder CPU {cpu_per_gb:4.1f} s/GB  {"OK" if ok else "FAIL"}', flush=True)
        if not ok:
            break
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default=tempfile.gettempdir(), help='where bench bags go (deleted after)')
    parser.add_argument('--step-s', type=float, default=4.0, help='seconds per rate step')
    parser.add_argument('--queue-mb', type=int, default=128, help="recorder's queue_max_bytes in MB")
    parser.add_argument('--resolutions', nargs='+', default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    parser.add_argument('--count-sub', nargs=2, metavar=('TOPIC', 'SECONDS'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_sub:
        count_subscriber(args.count_sub[0], float(args.count_sub[1]))
        return 0
    global QUEUE_BYTES
    QUEUE_BYTES = args.queue_mb << 20
    from vidseg_ros.data.recorder import tune_malloc_for_large_buffers
    tune_malloc_for_large_buffers()  # as recorder_node does; also helps this process's publisher
    work = Path(tempfile.mkdtemp(prefix='vidseg_bench_rec_', dir=args.dir))
    try:
        disk = disk_speed(work)
        print(f'disk sequential write (fdatasync): {disk:.0f} MB/s  [{work}]; CPUs {os.cpu_count()}, '
              f'load average {os.getloadavg()[0]:.1f}', flush=True)
        pub = Publisher()
        rows = []
        for name in args.resolutions:
            hw = RESOLUTIONS[name]
            frame_mb = hw[0] * hw[1] * 3 / 1e6
            writer, writer_cpu = writer_speed(work, hw)
            dds = dds_limit(pub, hw, args.step_s)
            print(f'{name} ({frame_mb:.2f} MB/frame): BagWriter alone {writer:.0f} MB/s '
                  f'({writer_cpu:.1f} CPU s/GB), '
                  f'DDS publisher->subscriber {dds:.0f} MB/s ({dds / frame_mb:.0f} Hz)', flush=True)
            ladder = record_ladder(pub, work, name, hw, args.step_s)
            best = max((r for r in ladder if r['ok']), key=lambda r: r['MB_s'], default=None)
            rows.append((name, frame_mb, writer, dds, best, ladder))
        print('three 1280x720 cameras at 30 Hz:', flush=True)
        three = record_ladder(pub, work, 'three720', RESOLUTIONS['1280x720'], 2 * args.step_s, cameras=3,
                              ladder=[30])[0]
        disk_end = disk_speed(work)
        print(f'disk sequential write again at the end: {disk_end:.0f} MB/s; load average '
              f'{os.getloadavg()[0]:.1f}', flush=True)
        disk = (disk + disk_end) / 2
        print(f'\nsummary (zero-loss = every published frame is in the bag; queue {args.queue_mb} MB; '
              f'disk = mean of start and end: {disk:.0f} MB/s)')
        print(f'{"resolution":>10} {"best Hz":>8} {"MB/s":>7} {"% disk":>7} {"rec CPU s/GB":>13} '
              f'{"writer MB/s":>12} {"DDS MB/s":>9}')
        for name, frame_mb, writer, dds, best, ladder in rows:
            hz = best['achieved_fps'] if best else 0.0
            mb = best['MB_s'] if best else 0.0
            cpu = min(r['cpu_s_per_GB'] for r in ladder)
            print(f'{name:>10} {hz:8.0f} {mb:7.0f} {100 * mb / disk:6.0f}% {cpu:13.1f} {writer:12.0f} {dds:9.0f}')
        print(f'disk {disk:.0f} MB/s; 3x 1280x720 @ 30 Hz: {three["MB_s"]:.0f} MB/s, lost {three["lost"]} '
              f'of {three["sent"]} -> {"OK" if three["ok"] else "FAIL"}')
        pub.node.destroy_node()
        pub.rclpy.try_shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
