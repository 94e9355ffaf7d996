"""`make demo` end to end on real frames: every published frame is segmented or counted as dropped."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.ros_helpers import ROOT


def test_demo_accounts_for_every_frame(tmp_path, real_frames):
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


def test_make_demo_as_typed_records_every_frame_and_mask_of_the_shipped_model(tmp_path):
    """`make demo` passes no --model and, unless VIDEO= is given, no --video; it records by default: the default
    video (CamVid val, else the opencv-doc clip), the shipped trained model and the bag were in no other test."""
    from vidseg_ros.data.bags.reader import deserialize, read_messages
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--max-frames', '8', '--out', str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    if r.returncode == 2 and 'pass one with --video' in r.stderr:
        pytest.skip(f'no default video here: {r.stderr.strip()[:200]}')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'model : camvid_keyframe_fpn (default)' in r.stdout and 'UNTRAINED' not in r.stdout, r.stdout[:2000]
    s = json.loads((out / 'summary.json').read_text())
    assert s['trained'] and '(camvid_keyframe_fpn.pt)' in s['model'], s
    bag = Path(s['outputs']['bag'])
    assert bag.parent == out and (bag / 'metadata.yaml').is_file() and f'bag           : {bag}' in r.stdout, s
    stamps: dict[str, list[int]] = {}
    for m in read_messages(bag):
        stamp = deserialize(m).header.stamp
        stamps.setdefault(m.topic, []).append(stamp.sec * 10**9 + stamp.nanosec)
    assert {t: len(v) for t, v in stamps.items()} == {
        '/image': 8, '/camera_info': 8, '/vidseg_segmenter/mask': s['frames_segmented']}, (stamps, s)
    assert s['frames_published_by_source'] == 8 and s['frames_segmented'] > 0, s
    assert set(stamps['/vidseg_segmenter/mask']) <= set(stamps['/image']) == set(stamps['/camera_info'])


def test_foreign_messages_on_the_demo_topics_are_counted_and_the_demo_goes_on(tmp_path, real_frames, probe):
    """The demo runs in the user's domain, where another node may publish on /image or the segmenter's topics: a
    malformed image or a class table that is not one ended the demo with a traceback (ValueError from reshape,
    JSONDecodeError) and no summary."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i, rgb in enumerate(real_frames[:6]):
        cv2.imwrite(str(frames / f'{i:04d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    image = probe.node.create_publisher(Image, '/image', 10)
    overlay = probe.node.create_publisher(Image, '/vidseg_segmenter/overlay', 10)
    table = probe.node.create_publisher(String, '/vidseg_segmenter/class_table', latched)
    short = Image(height=10, width=10, encoding='rgb8', step=30, data=bytes(7))     # 7 bytes of 300
    texts = iter(['{"classes": 5}', 'not json', '{"classes": [{"id": 300}]}'] * 1000)

    def foreign():
        image.publish(short)
        overlay.publish(short)
        table.publish(String(data=next(texts)))
    probe.node.create_timer(0.2, foreign)
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--video', str(frames), '--no-record',
                        '--rate', '5', '--out', str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads((out / 'summary.json').read_text())
    assert s['frames_published_by_source'] == 6 and s['overlays_received'] > 0, s
    assert set(s['messages_not_used']) == {'/image', '/vidseg_segmenter/overlay', '/vidseg_segmenter/class_table'}, s
    for topic in s['messages_not_used']:     # one line each, however many came
        assert r.stderr.count(f'demo: warning: a message on {topic} was not used') == 1, r.stderr
    assert cv2.imread(str(out / 'contact_sheet.png')) is not None


def _installed_package(cwd) -> bool:
    """Whether this Python imports vidseg_ros from its installation (`make install`), not the checkout."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    r = subprocess.run([sys.executable, '-c', 'import vidseg_ros; print(vidseg_ros.__file__)'], capture_output=True,
                       text=True, cwd=cwd, env=env)
    return r.returncode == 0 and ROOT / 'vidseg_ros' not in Path(r.stdout.strip()).parents


def test_the_installed_demo_uses_the_shipped_profile_and_writes_to_the_current_folder(tmp_path, real_frames):
    """Installed (not run from the checkout) the demo looked for config/ and demo_out/ in site-packages: every
    node logged "XMLPARSER Error" and fell back to FastDDS's 512 KB segment (large frames lost), and the output
    went into site-packages/demo_out (from a read-only folder too)."""
    work = tmp_path / 'work'
    work.mkdir()
    if not _installed_package(work):
        pytest.skip('vidseg_ros is not installed into this Python (make install)')
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i, rgb in enumerate(real_frames[:4]):
        cv2.imwrite(str(frames / f'{i:04d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'FASTDDS_DEFAULT_PROFILES_FILE')}
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--video', str(frames), '--no-record'],
                       capture_output=True, text=True, timeout=300, cwd=work, env=env)
    out = work / 'demo_out'
    assert r.returncode == 0 and (out / 'summary.json').is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    logs = {p.name: p.read_text() for p in out.glob('*.log')}
    assert 'segment_node.log' in logs and not any('XMLPARSER' in t or 'will be lost' in t for t in logs.values()), logs
    assert 'XMLPARSER' not in r.stderr and 'warning' not in r.stderr, r.stderr


def test_a_read_only_current_folder_is_one_line_and_exit_2(tmp_path):
    """The default --out is demo_out in the current folder. From a read-only folder the demo wrote into the
    checkout (or site-packages) instead; now it says so and stops (a private read-only bind mount: root only)."""
    if os.geteuid() != 0 or shutil.which('unshare') is None:
        pytest.skip('a read-only folder for root needs unshare and a bind mount')
    ro = tmp_path / 'ro'
    ro.mkdir()
    existed = (ROOT / 'demo_out').exists()
    script = 'mount --bind -o ro "$1" "$1" && cd "$1" && shift && exec "$@"'
    r = subprocess.run(['unshare', '-m', 'sh', '-c', script, 'sh', str(ro), sys.executable, '-m',
                        'vidseg_ros.ros.demo', '--video', str(tmp_path), '--no-record'],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    if 'mount' in r.stderr and r.returncode != 2:
        pytest.skip(f'cannot bind-mount read-only here: {r.stderr.strip()[:200]}')
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip() == f'demo: cannot create the output folder {ro}/demo_out: Read-only file system; ' \
                               'pass --out DIR', r.stderr
    assert existed or not (ROOT / 'demo_out').exists()     # nothing written into the checkout


def test_a_model_that_does_not_load_is_one_line_saying_why_and_exit_2(tmp_path):
    """The segmenter exits 2 with one line saying why; the demo said only 'the segmenter did not come up; see the
    logs in OUT' and exited 1, the reason left in OUT/segment_node.log."""
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--video', str(tmp_path), '--no-record',
                        '--model', str(tmp_path / 'my_model.pt'), '--out', str(tmp_path / 'out')],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr == (f'demo: the segmenter did not come up: SegmentNode: CheckpointError: model file not found: '
                        f'{tmp_path}/my_model.pt (exit status 2; logs in {tmp_path}/out)\n'), r.stderr


def test_help_names_the_command_to_type():
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.ros.demo', '--help'], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith('usage: python -m vidseg_ros.ros.demo '), r.stdout[:200]


def _legend(classes, width):
    """The demo's legend for ``classes`` (dicts of id/name/color) with every class equally present."""
    from vidseg_ros.ros.demo import Collector
    from vidseg_ros.ros.demo_report import legend_classes
    collector = Collector.__new__(Collector)   # the legend needs no ROS node
    collector.classes = legend_classes(json.dumps({'classes': classes}))
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


def test_the_profile_lookup_does_not_import_torch(tmp_path):
    """package_file found config/fastdds_shm.xml through engine.stream.model_dirs, importing torch (~3 s
    before the demo printed a word) for a file lookup."""
    code = ('import sys; from vidseg_ros.ros import demo; path = demo.package_file("config", "fastdds_shm.xml"); '
            'print(path); sys.exit(3 if "torch" in sys.modules else 0)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, f'torch imported by the profile lookup\n{r.stdout}{r.stderr[-2000:]}'
    assert Path(r.stdout.strip()).is_file(), r.stdout + r.stderr[-2000:]


def test_choosing_the_model_does_not_import_torch():
    """choose_model asked engine.stream where the node looks for models, importing torch (~3 s) before the
    demo started anything."""
    code = ('import sys; from vidseg_ros.ros import demo; print(demo.choose_model(None)); '
            'sys.exit(3 if "torch" in sys.modules else 0)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, f'torch imported by choose_model\n{r.stdout}{r.stderr[-2000:]}'
    assert r.stdout.strip() == "('', True)", r.stdout + r.stderr[-2000:]    # the shipped model of the checkout
