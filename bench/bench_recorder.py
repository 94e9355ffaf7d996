"""Recorder throughput: highest image rate recorded with zero loss, next to disk and DDS limits.

All in one run, on this machine:

1. ``disk``: raw sequential write speed of the bench directory's disk (8 MiB blocks, fdatasync).
2. ``writer``: BagWriter alone in this process (no DDS), same disk.
3. per resolution (640x480, 1280x720, 1920x1080 rgb8), the same rising rate ladder into two sinks,
   each step on its own topic and in a fresh process:
   ``dds``: a raw subscriber that only counts (no writing): the inter-process DDS limit;
   ``recorder``: recorder_node; a step passes when every published frame is in the bag (counted
   from the MCAP summary). The
   recorder runs with a small write queue (``--queue-mb``, default 128 MB) so that a rate it can only
   buffer, not sustain, overflows the queue within a step and shows as lost frames.
4. three 1280x720 cameras at 30 Hz together (~250 MB/s).

The disk is measured before and after each resolution; the table uses the median (on a VM the
host's cache makes single fdatasync runs swing several-fold).

Run: ``python bench/bench_recorder.py [--dir /tmp] [--step-s 3]``. Bags go to a temporary folder
under ``--dir`` and are deleted at the end. ``--quick`` runs only BagWriter alone at 1280x720 and the
three-camera check (CPU seconds per GB of both), for before/after comparisons.
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
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(150 + os.getpid() % 40))
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_shm.xml'))

RESOLUTIONS = {'640x480': (480, 640), '1280x720': (720, 1280), '1920x1080': (1080, 1920)}
LADDER_FPS = [30, 60, 90, 120, 180, 240, 300, 400]


def disk_speed(directory: Path, total: int = 1 << 30, block: int = 8 << 20, direct: bool = False) -> float:
    """Sequential write MB/s including the final fdatasync (``direct``: O_DIRECT, as the recorder)."""
    import mmap
    path = directory / 'disk_speed.bin'
    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(block))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o644)
    t0 = time.perf_counter()
    try:
        for _ in range(total // block):
            os.write(fd, buf)
        os.fdatasync(fd)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
        buf.close()
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
    from vidseg_ros.data.bags.writer import BagWriter
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


def count_subscriber(topics: list[str]) -> None:
    """Child role (the DDS-only sink): count raw messages per topic until SIGINT; print JSON counts."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vidseg_ros.engine.memory import tune_allocator
    tune_allocator()  # same allocator setting as the recorder: a fair comparison
    rclpy.init()
    node = rclpy.create_node('bench_counter')
    counts = dict.fromkeys(topics, 0)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for topic in topics:
        node.create_subscription(Image, topic, lambda data, t=topic: counts.__setitem__(t, counts[t] + 1), qos,
                                 raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    print(json.dumps(counts), flush=True)
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


def start_counter(topics: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, '--count-sub', ','.join(topics)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def run_step(pub: Publisher, directory: Path, sink: str, name: str, data: bytes, fps: int, cameras: int,
             step_s: float) -> dict:
    """One rate step into a fresh sink process ('recorder' or 'dds' = count only)."""
    topics = [f'/bench_{sink}_{name}_{fps}_{c}' for c in range(cameras)]
    bag_dir = directory / f'{sink}_{name}_{fps}'
    bag_dir.mkdir()
    proc = start_recorder(bag_dir, topics) if sink == 'recorder' else start_counter(topics)
    pubs = [pub.publisher(t) for t in topics]
    try:
        pub.wait_matched(pubs)
        time.sleep(0.3)
        sent, failed, dt = pub.run(pubs, data, fps, step_s)
        time.sleep(1.0)  # let DDS deliver the tail before stopping
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read() if proc.stdout else ''
        cpu_s = reap_cpu_s(proc)
    finally:
        proc.kill()
        for p in pubs:
            pub.node.destroy_publisher(p)
    counts = bag_counts(bag_dir) if sink == 'recorder' else json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(bag_dir)
    got = sum(counts.get(t, 0) for t in topics)
    achieved = sent / cameras / dt
    return {'sink': sink, 'fps': fps, 'cameras': cameras, 'sent': sent, 'got': got, 'lost': sent - got,
            'publish_failed': failed, 'achieved_fps': achieved, 'MB_s': sent * len(data) / dt / 1e6,
            'cpu_s_per_GB': cpu_s / max(got * len(data) / 1e9, 1e-9),
            'ok': got == sent and failed == 0 and achieved >= 0.95 * fps}


def ladder(pub: Publisher, directory: Path, sink: str, name: str, hw, step_s: float, cameras: int = 1,
           rates=LADDER_FPS) -> list[dict]:
    """Rising rates until a step loses a frame (or the publisher cannot keep the pace)."""
    data = image_cdr(hw)
    results = []
    for fps in rates:
        r = run_step(pub, directory, sink, name, data, fps, cameras, step_s)
        results.append(r)
        print(f'  {sink:8s} {name} x{cameras} @ {fps:4d} Hz ({r["achieved_fps"]:6.1f} achieved): sent '
              f'{r["sent"]:5d}, received {r["got"]:5d}, lost {r["lost"]:4d}, publish failed '
              f'{r["publish_failed"]:3d}  {r["MB_s"]:6.1f} MB/s  CPU {r["cpu_s_per_GB"]:4.1f} s/GB  '
              f'{"OK" if r["ok"] else "FAIL"}', flush=True)
        if not r['ok']:
            break
    return results


def best(results: list[dict]) -> dict:
    return max((r for r in results if r['ok']), key=lambda r: r['MB_s'],
               default={'achieved_fps': 0.0, 'MB_s': 0.0})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', default=tempfile.gettempdir(), help='where bench bags go (deleted after)')
    parser.add_argument('--step-s', type=float, default=4.0, help='seconds per rate step')
    parser.add_argument('--queue-mb', type=int, default=128, help="recorder's queue_max_bytes in MB")
    parser.add_argument('--resolutions', nargs='+', default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    parser.add_argument('--quick', action='store_true', help='only BagWriter at 720p and the 3x 720p @ 30 Hz check')
    parser.add_argument('--count-sub', metavar='TOPICS', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_sub:
        count_subscriber(args.count_sub.split(','))
        return 0
    global QUEUE_BYTES
    QUEUE_BYTES = args.queue_mb << 20
    from vidseg_ros.engine.memory import tune_allocator
    tune_allocator()  # as every node does (spin.run); also helps this process's publisher
    work = Path(tempfile.mkdtemp(prefix='vidseg_bench_rec_', dir=args.dir))
    try:
        disks = [disk_speed(work)]
        directs = [disk_speed(work, direct=True)]
        print(f'disk sequential write (fdatasync): {disks[0]:.0f} MB/s, O_DIRECT {directs[0]:.0f} MB/s  [{work}]; '
              f'CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}', flush=True)
        pub = Publisher()
        rows = []
        for name in [] if args.quick else args.resolutions:
            hw = RESOLUTIONS[name]
            writer, writer_cpu = writer_speed(work, hw)
            print(f'{name} ({hw[0] * hw[1] * 3 / 1e6:.2f} MB/frame): BagWriter alone {writer:.0f} MB/s '
                  f'({writer_cpu:.1f} CPU s/GB)', flush=True)
            dds = ladder(pub, work, 'dds', name, hw, args.step_s)
            rec = ladder(pub, work, 'recorder', name, hw, args.step_s)
            rows.append((name, writer, best(dds), best(rec), min(r['cpu_s_per_GB'] for r in rec)))
            disks.append(disk_speed(work))
            directs.append(disk_speed(work, direct=True))
            print(f'disk sequential write (fdatasync): {disks[-1]:.0f} MB/s, O_DIRECT {directs[-1]:.0f} MB/s; '
                  f'load average {os.getloadavg()[0]:.1f}', flush=True)
        if args.quick:
            writer, writer_cpu = writer_speed(work, RESOLUTIONS['1280x720'])
            print(f'1280x720: BagWriter alone {writer:.0f} MB/s ({writer_cpu:.2f} CPU s/GB)', flush=True)
        print('three 1280x720 cameras at 30 Hz:', flush=True)
        three = ladder(pub, work, 'recorder', 'three720', RESOLUTIONS['1280x720'], 2 * args.step_s, cameras=3,
                       rates=[30])[0]
        disk = sorted(disks)[len(disks) // 2]
        print(f'\nsummary: zero-loss = every published frame arrived (dds: counted by a subscriber that writes '
              f'nothing; recorder: in the bag, queue {args.queue_mb} MB)')
        print(f'disk sequential write with fdatasync, {len(disks)} runs: min {min(disks):.0f}, median {disk:.0f}, '
              f'max {max(disks):.0f} MB/s (O_DIRECT: median {sorted(directs)[len(directs) // 2]:.0f} MB/s)')
        print(f'{"resolution":>10} {"rec Hz":>7} {"rec MB/s":>9} {"% disk":>7} {"rec CPU s/GB":>13} '
              f'{"DDS Hz":>7} {"DDS MB/s":>9} {"writer MB/s":>12}')
        for name, writer, dds, rec, cpu in rows:
            print(f'{name:>10} {rec["achieved_fps"]:7.0f} {rec["MB_s"]:9.0f} {100 * rec["MB_s"] / disk:6.0f}% '
                  f'{cpu:13.1f} {dds["achieved_fps"]:7.0f} {dds["MB_s"]:9.0f} {writer:12.0f}')
        print(f'3x 1280x720 @ 30 Hz: {three["MB_s"]:.0f} MB/s, lost {three["lost"]} of {three["sent"]}, publisher '
              f'reached {three["achieved_fps"]:.1f} Hz, recorder {three["cpu_s_per_GB"]:.2f} CPU s/GB '
              f'-> {"OK" if three["ok"] else "FAIL"}')
        pub.node.destroy_node()
        pub.rclpy.try_shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
