#!/usr/bin/env python3
"""segment_node's exit: seconds from SIGTERM to the process gone, frames flowing, with K busy-loop processes beside
it (a starved robot computer). ros2 launch sends SIGTERM 5 s after its SIGINT and SIGKILL 5 s after that.

Prints each run's exit time and the median, and whether the last /diagnostics status (STALE) arrived. Measured on a
loaded 2-core machine (untrained keyframe_fpn, 64x96): before spin.end_now (Python's finalization of torch's
modules after the node was gone) 2.6-3.8 s with no busy loop and 7.7-11.1 s beside four; after, 0.2-0.9 s and
2.7-3.0 s (of which the frame in inference, up to EXIT_WAIT_S, and the last status's ack wait, its full 0.5 s
almost every time). With /diagnostics KEEP_LAST 1 (4ef53e1: FastDDS sends the heartbeat that brings the ack with a
sample only when it fills the history) the ack takes 6-36 ms: medians 1.10 -> 0.61 s with no busy loop, 3.48 ->
1.56 s beside four (load about 10; noisy).
Run: `.venv/bin/python bench/bench_segment_exit.py [--burners 4] [--runs 3]`.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(100, 199)))
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_shm.xml'))
os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
sys.path[:0] = [str(ROOT / 'test'), str(ROOT)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--burners', type=int, default=4, help='busy-loop processes beside the node')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--model', default='untrained:keyframe_fpn')
    args = parser.parse_args()
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image
    from support.ros_helpers import Probe, image_msg
    probe = Probe(f'exit_bench_{os.getpid()}')
    pub = probe.node.create_publisher(Image, 'image', 10)
    diag = probe.collect(DiagnosticArray, '/diagnostics')
    times = []
    try:
        for run in range(args.runs):
            node = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.ros.segment_node', '--ros-args',
                                     '-p', f'model:={args.model}', '-p', 'input_hw:=[64,96]'],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
            probe.wait_for(lambda: pub.get_subscription_count() >= 1, 180, 'the node subscribing')
            time.sleep(2.0)
            burners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(args.burners)]
            try:
                for _ in range(20):
                    pub.publish(image_msg(np.zeros((240, 320, 3), np.uint8), time.time_ns()))
                    time.sleep(0.05)
                seen = len(diag)
                t0 = time.monotonic()
                node.send_signal(signal.SIGTERM)
                code = node.wait(60)
                times.append(time.monotonic() - t0)
            finally:
                for b in burners:
                    b.kill()
                    b.wait()
            time.sleep(0.5)
            stale = any(s.level == DiagnosticStatus.STALE for m in diag[seen:] for s in m.status)
            print(f'run {run}: exit {times[-1]:.2f} s, status {code}, last status STALE: {stale}', flush=True)
    finally:
        probe.close()
    print(f'median SIGTERM -> exit with {args.burners} busy loop(s): {statistics.median(times):.2f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
