"""`make demo` end to end on real frames: every published frame is segmented or counted as dropped."""
from __future__ import annotations

import json
import subprocess
import sys

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
