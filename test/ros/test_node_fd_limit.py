"""segment_node under a low open-file limit (RLIMIT_NOFILE: a container's or a systemd unit's ulimit). Too low to
start: one line that names the limit (rcl said "Type support not from this implementation", the 'Too many open files'
cut from the line). Enough (64): it serves frames of changing sizes and parameter changes with its descriptor count
flat, and stops with exit 0."""
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from support.paths import ROOT  # noqa: E402
from support.ros_helpers import call_service, image_msg, process_resources  # noqa: E402

ARGS = [sys.executable, '-m', 'vidseg_ros.ros.segment_node', '--ros-args', '-p', 'model:=untrained:keyframe_fpn',
        '-p', 'input_hw:=[64,96]', '-p', 'diagnostics_period_s:=0.3']


def _start(limit: int, log_path, **kw) -> subprocess.Popen:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    return subprocess.Popen(ARGS, preexec_fn=lower, env=env, cwd=str(ROOT), **kw)


def test_too_low_an_open_file_limit_is_one_line_naming_it_and_exit_2(tmp_path):
    proc = _start(22, None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, (proc.returncode, err)
    assert err.startswith('SegmentNode: too many open files: the open-file limit (RLIMIT_NOFILE, ulimit -n) is 22'), err


def test_under_ulimit_64_it_serves_changing_sizes_and_parameters_with_fds_flat_and_exits_0(tmp_path, probe):
    log = open(tmp_path / 'node.log', 'w')
    proc = _start(64, None, stdout=log, stderr=subprocess.STDOUT)
    try:
        masks = probe.collect(Image, '/vidseg_segmenter/mask')
        pub = probe.node.create_publisher(Image, 'image', 10)
        probe.wait_for(lambda: pub.get_subscription_count() >= 1, 120, 'the node subscribing')
        fds = []
        stamp = 1_000_000_000

        def served_once(rgb) -> None:
            # sent again until its mask comes: the probe's mask subscription may not match the node's publisher
            # yet (discovery under load), and a mask published before it matches is lost, not late
            nonlocal stamp
            served, deadline = len(masks), time.monotonic() + 120
            while len(masks) <= served and proc.poll() is None and time.monotonic() < deadline:
                stamp += 33_000_000
                pub.publish(image_msg(rgb, stamp))
                with contextlib.suppress(AssertionError):
                    probe.wait_for(lambda: len(masks) > served or proc.poll() is not None, 5, 'a mask')
            assert len(masks) > served, f'no mask in 120 s: {(tmp_path / "node.log").read_text()[-3000:]}'

        for k, (h, w) in enumerate([(48, 64), (120, 160), (37, 53), (240, 320), (48, 64)]):
            rgb = np.random.default_rng(k).integers(0, 255, (h, w, 3), np.uint8)
            for _ in range(25):
                served_once(rgb)
            request = SetParameters.Request(parameters=[
                Parameter('overlay_alpha', value=0.1 * (k + 1)).to_parameter_msg(),
                Parameter('input_hw', value=[32, 64] if k % 2 else [64, 96]).to_parameter_msg()])
            answer = call_service(probe, None, SetParameters, '/vidseg_segmenter/set_parameters', request)
            assert all(r.successful for r in answer.results), answer
            assert proc.poll() is None, (tmp_path / 'node.log').read_text()[-3000:]
            fds.append(process_resources(proc.pid)['fds'])
        # 125 frames, 5 sizes, 5 parameter changes: a descriptor per message or per size would show here
        assert max(fds) <= fds[0] + 2, fds
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, (tmp_path / 'node.log').read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert 'Too many open files' not in (tmp_path / 'node.log').read_text()
