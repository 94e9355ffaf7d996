"""`make demo` end to end on real frames: every published frame is segmented or counted as dropped."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from support.ros_helpers import ROOT


def test_demo_accounts_for_every_frame(tmp_path, real_frames):
    import cv2
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i, rgb in enumerate(real_frames):
        cv2.imwrite(str(frames / f'{i:04d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--video', str(frames), '--no-record',
                        '--rate', '15', '--out', str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / 'summary.json').read_text())
    assert s['frames_published_by_source'] == len(real_frames)  # the first frames are not lost
    dropped = s['dropped_before_node'] + s['dropped_by_latest_frame_wins']
    assert s['frames_segmented'] + dropped == len(real_frames), s
    assert 0 < s['overlays_received'] <= s['frames_segmented']
    assert f'{len(real_frames) - s["frames_segmented"]} dropped' in r.stdout


def test_help_names_the_command_to_type():
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--help'], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith('usage: python -m vidseg_ros.ros.demo '), r.stdout[:200]


def _legend(classes, width):
    """The demo's legend for ``classes`` (dicts of id/name/color) with every class equally present."""
    from vidseg_ros.ros.demo import Collector
    collector = Collector.__new__(Collector)   # the legend needs no ROS node
    collector.classes = classes
    collector.class_hist = np.zeros(256, np.int64)
    collector.class_hist[[c['id'] for c in classes]] = 1000
    return collector._legend(width)


def _swatch_pixels(strip, color) -> int:
    return int((strip == np.array(color, np.uint8)).all(-1).sum())


def test_the_contact_sheet_legend_names_every_class():
    from vidseg_ros.constants import CAMVID_CLASSES, CAMVID_PALETTE
    camvid = [{'id': i, 'name': n, 'color': c} for i, (n, c) in enumerate(zip(CAMVID_CLASSES, CAMVID_PALETTE))]
    strip = _legend(camvid, 960)    # CamVid val pairs: 2 x 480 px; one row used to cut off Bicyclist
    assert strip.shape[1] == 960
    missing = [c['name'] for c in camvid if _swatch_pixels(strip, c['color']) < 250]
    assert not missing, f'legend lost {missing}'
    # a user's own long class list on a narrow sheet wraps onto more rows instead of losing classes
    rng = np.random.default_rng(0)
    own = [{'id': i, 'name': f'my_robot_class_{i:02d}', 'color': [int(v) for v in rng.integers(0, 200, 3)]}
           for i in range(30)]
    strip = _legend(own, 640)
    assert strip.shape[0] > 5 * 28 and strip.shape[1] == 640
    missing = [c['name'] for c in own if _swatch_pixels(strip, c['color']) < 250]
    assert not missing, f'legend lost {missing}'
