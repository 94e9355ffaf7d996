"""docs/tutorial.md, "your robot in ten commands", run as a new user would: every step a real `vidseg`
process, the last a real segment_node serving the retrained model over DDP.

The "drive" is real video from a registry (Debian's opencv-doc clip, the `sample_video` fixture), so
this runs on a fresh clone without ../shared. The human labels of 3 frames are synthesised: moving
people against the clip's median background (its camera is static), class ids 0 = background,
1 = person. Step counts are tiny; `VIDSEG_TUTORIAL_TIMINGS=FILE` saves each step's wall time.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from support.ros_helpers import ROOT, image_msg, stamp_of
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vidseg_ros.data.sample_video import read_frames

HW = (144, 192)        # the "camera" resolution of the drive
FRAMES = 24
LABELLED = (0, 11, 23)  # the frames a user would paint
CLASSES = 'background,person'
LICENCE = 'vtest.avi from Debian opencv-doc (Apache-2.0 AND BSD-3-Clause per its copyright file)'
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def person_mask(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Class ids: 1 where the frame differs from the static background (people walking), else 0."""
    moving = (np.abs(rgb.astype(np.int16) - background).max(2) > 40).astype(np.uint8)
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.morphologyEx(moving, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))


class Steps:
    """Runs `vidseg ...` in the user's folder, one process per command; keeps wall times."""

    def __init__(self, cwd: Path):
        self.cwd, self.timings = cwd, {}

    def __call__(self, name: str, *args: str) -> dict:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *args], cwd=self.cwd, text=True,
                              capture_output=True, timeout=600, env=os.environ.copy())
        self.timings[name] = round(time.perf_counter() - t0, 1)
        assert proc.returncode == 0, f'vidseg {" ".join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}'
        assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
        return json.loads(proc.stdout)      # stdout is the command's JSON alone (tables go to stderr)


def test_your_robot_in_ten_commands(tmp_path, sample_video, start_node, probe):
    run = Steps(tmp_path)
    # 0. The user's video: a folder of frames here (a .mp4 or a recorded bag works the same way).
    frames = read_frames(sample_video, FRAMES, every=2, start=100, size_hw=HW)
    (tmp_path / 'video').mkdir()
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(tmp_path / 'video' / f'{i:04d}.png'), rgb[:, :, ::-1])

    # 1. video -> bag (what the recorder would have written on the robot).
    out = run('bag-from-frames', 'bag-from-frames', 'video', '--out', 'drive_bag', '--rate-hz', '5')
    assert out['frames'] == FRAMES

    # 2. bag -> an indexed all-frame dataset.
    out = run('extract', 'extract', 'drive_bag', '--out', 'drive')
    assert out['written'] == FRAMES and out['failed'] == 0
    rows = list(csv.DictReader((tmp_path / 'drive' / 'index.csv').open()))
    assert len(rows) == FRAMES

    # 3. "Label" 3 frames: one class-id PNG per frame, named by the frame's stamp.
    bg_frames = read_frames(sample_video, 40, every=15, size_hw=HW)
    background = np.median(np.stack(bg_frames), 0).astype(np.int16)
    (tmp_path / 'my_labels').mkdir()
    human = {}
    for i in LABELLED:
        rgb = cv2.imread(str(tmp_path / 'drive' / rows[i]['image']))[:, :, ::-1]
        human[i] = person_mask(rgb, background)
        assert 0.002 < human[i].mean() < 0.3, 'the clip has people walking in every labelled frame'
        cv2.imwrite(str(tmp_path / 'my_labels' / f'{rows[i]["stamp_ns"]}.png'), human[i])

    # 4. label-import with your class names (and the data's licence, for the model's provenance).
    out = run('label-import', 'label-import', 'drive', 'my_labels', '--class-names', CLASSES,
              '--licence', LICENCE)
    assert out == {'imported': 3, 'unmatched': 0, 'frames': FRAMES}
    meta = yaml.safe_load((tmp_path / 'drive' / 'dataset.yaml').read_text())
    assert meta['classes'] == CLASSES.split(',') and meta['licence'] == LICENCE

    # 5. propagate the 3 labels to every frame.
    out = run('propagate', 'propagate', 'drive')
    assert out['total_human'] == 3 and out['total_propagated'] == FRAMES - 3
    rows = list(csv.DictReader((tmp_path / 'drive' / 'index.csv').open()))
    assert all(r['label'] for r in rows)
    middle = cv2.imread(str(tmp_path / 'drive' / rows[5]['label']), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(middle)) <= {0, 1, 255} and (middle == 1).mean() > 0.002

    # 6. train from a shipped model with your classes (tiny step count here).
    out = run('train', 'train', str(ROOT / 'config' / 'train' / 'your_robot.yaml'),
              '--set', 'data_root=drive', '--set', 'output=models/your_robot.pt', '--set', 'runs_dir=runs',
              '--set', 'epochs=1', '--set', 'steps_per_epoch=2', '--set', 'batch_size=2',
              '--set', 'input_hw=[96, 128]', '--set', 'num_threads=1')
    assert out['epochs'] == 1 and (tmp_path / 'models' / 'your_robot.pt').is_file()
    from vidseg_ros.models.checkpoint import read_checkpoint
    ckpt = read_checkpoint(tmp_path / 'models' / 'your_robot.pt')['meta']
    assert ckpt['classes'] == CLASSES.split(',') and ckpt['arch_config']['num_classes'] == 2
    prov = ckpt['provenance']
    assert prov['transfer']['reinitialised'] == 2 and prov['transfer']['kept'] > 100   # all but the classifier
    assert LICENCE in prov['licence'] and 'CamVid' in prov['licence']   # the data's and camvid_fpn's

    # 7. eval on your labels.
    out = run('eval', 'eval', 'models/your_robot.pt', 'drive', '--split', 'all', '--key-intervals', '1')
    assert out['labelled'] and 0 <= out['intervals']['1']['mIoU'] <= 1
    assert Path(tmp_path / out['metrics']).is_file()

    # 8. export for the node.
    out = run('export', 'export', 'models/your_robot.pt', 'models/your_robot.onnx')
    assert out['max_abs_diff'] < 1e-3

    # 9. segment_node serves it with your class table.
    t0 = time.perf_counter()
    node = start_node('vidseg_ros.ros.segment_node',
                      {'model': str(tmp_path / 'models' / 'your_robot.onnx'), 'input_reliability': 'reliable'})
    masks = probe.collect(Image, '/vidseg_segmenter/mask', RELIABLE)
    tables = probe.collect(String, '/vidseg_segmenter/class_table', LATCHED)
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    probe.wait_for(lambda: tables, 60, 'class table', node)
    table = json.loads(tables[-1].data)
    assert [c['name'] for c in table['classes']] == CLASSES.split(',')
    assert [c['color'] for c in table['classes']] == ckpt['palette']
    for i in (3, 17):
        msg = image_msg(frames[i], time.time_ns())
        pub.publish(msg)
        probe.wait_for(lambda: any(stamp_of(m) == stamp_of(msg) for m in masks), 60, f'mask of frame {i}', node)
        mask = next(m for m in masks if stamp_of(m) == stamp_of(msg))
        ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.step)[:, :mask.width]
        assert ids.shape == HW and set(np.unique(ids)) <= {0, 1}
    run.timings['segment_node (start, 2 frames)'] = round(time.perf_counter() - t0, 1)
    if os.environ.get('VIDSEG_TUTORIAL_TIMINGS'):
        Path(os.environ['VIDSEG_TUTORIAL_TIMINGS']).write_text(json.dumps(run.timings, indent=2))
    print('tutorial step wall times (s):', run.timings)
