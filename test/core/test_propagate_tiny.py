"""`vidseg propagate` on tiny frames: OpenCV's DIS flow refused frames under 12 px a side ('internal error, please
report it') and killed the process (SIGSEGV, no message) on frames 8..15 px high and ~40..200 wide, as it did in
eval's TC until ``training.metrics`` enlarged such frames; propagation now goes through the same guard
(``data.labelling.flow.flow_any_size``)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import extracted_source, read_index


def _dataset(root, h, w, n=4):
    """An extracted drive of ``n`` frames of h x w (a block moving right), a human label on frame 0 only."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        f = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        f[:, i % w:i % w + max(1, w // 2)] = 220
        frames.append(f)
    write_bag(root / 'bag', [frames])
    extract([root / 'bag'], root / 'ds')
    first = read_index(root / 'ds')[0]
    mask = np.zeros((h, w), np.uint8)
    mask[:, :max(1, w // 2)] = 1
    write_label(root / 'lab' / f'{first.stamp_ns}.png', mask)
    import_labels(root / 'ds', root / 'lab', class_names=['bg', 'obj'])
    return root / 'ds'


@pytest.mark.parametrize('hw, options', [
    ((2, 3), ()),                                   # cv2.error: 'width or height >= 12' (internal error)
    ((12, 40), ('--dis-preset', 'medium')),         # SIGSEGV
    ((10, 100), ('--dis-preset', 'fast')),          # SIGSEGV
    ((24, 200), ('--dis-preset', 'ultrafast')),     # SIGSEGV: fast and ultrafast up to 31 px high
    ((40, 40), ('--flow-scale', '0.25')),           # the flow of 10x10 frames: cv2.error
])
def test_propagate_flow_on_tiny_frames(tmp_path, hw, options):
    ds = _dataset(tmp_path, *hw)
    proc = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'propagate', str(ds), *options],
                          capture_output=True, text=True, timeout=120)      # a child: the old code killed it
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert json.loads(proc.stdout)['total_propagated'] == 3
    src = extracted_source(ds)
    labels = [src.read_label(r) for r in src.records]
    assert all(lab is not None and lab.shape == hw for lab in labels)


def test_every_dis_preset_on_sides_where_opencv_failed():
    """The flow estimator of each preset on the sizes OpenCV refused or crashed on (measured: medium up to 15 px,
    fast / ultrafast up to 31 px on the shorter side), in a child process: the flow has the frames' size."""
    code = """if True:
        import numpy as np
        from vidseg_ros.data.labelling.propagate import FlowEstimator, PropagateConfig
        rng = np.random.default_rng(0)
        for preset in ('ultrafast', 'fast', 'medium', 'fine'):
            fe = FlowEstimator(PropagateConfig(dis_preset=preset))
            for h, w in ((2, 3), (12, 40), (15, 2000), (31, 500), (24, 200), (500, 31), (11, 11)):
                a = rng.integers(0, 255, (h, w, 3), np.uint8)
                f = fe(fe.gray(a), fe.gray(np.roll(a, 1, 1)), (h, w))
                assert f.shape == (h, w, 2) and np.isfinite(f).all(), (preset, h, w, f.shape)
        print('ok')"""
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', (proc.returncode, proc.stderr[-500:])
