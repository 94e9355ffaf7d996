"""`vidseg eval` on data nobody chose: frames under 16 px a side (OpenCV's DIS flow raised, or killed the process
with SIGSEGV), void pixels of a two-class dataset (counted as the object in J&F; a frame of nothing but void scored
J&F 1.0), and a split without a scored pixel (matplotlib's 'No artists with labels' warning)."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from support.eval_data import folder_dataset, noise_images, tiny_fpn
from vidseg_ros.tools.evaluate import run_evaluation
from vidseg_ros.training.metrics import j_and_f


def _model(path: Path) -> Path:
    return tiny_fpn(path)


def _data(root: Path, labels: list[np.ndarray]) -> Path:
    """A folder dataset naming [bg, obj] (ignore 255): one sequence, a frame every 0.1 s."""
    return folder_dataset(root, noise_images(labels), labels)


def test_frames_smaller_than_the_flow_takes_get_tc(tmp_path):
    """2x3 frames: 'OpenCV ... The input image must have either width or height >= 12' (exit 1, internal error)."""
    label = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    report = run_evaluation(_model(tmp_path / 'm.pt'), _data(tmp_path / 'd', [label] * 3), split='all',
                            out_dir=tmp_path / 'ev', write_card=False)
    assert report['intervals']['1']['TC_pairs'] == 2 and 0 <= report['intervals']['1']['TC'] <= 1


def test_a_12_px_high_frame_does_not_kill_the_process(tmp_path):
    """DIS flow on 12x40 frames (or any 8..15 px high, ~40..200 wide) was a segmentation fault: no message, no
    metrics. Run in a child process, which the old code killed."""
    code = ('import numpy as np; from vidseg_ros.training.metrics import optical_flow; '
            'a = np.random.default_rng(0).integers(0, 255, (12, 40, 3), np.uint8); '
            'b = np.roll(a, 1, axis=1); print(optical_flow(a, b).shape)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == '(12, 40, 2)', (r.returncode, r.stderr[-500:])


def test_void_pixels_are_left_out_of_j_and_f():
    """An object in the left half, void (255) on the right half, the object predicted exactly: J was 0.27 (the void
    half counted as object), now 1.0; a frame of nothing but void scored J = F = 1, now it is left out."""
    gt = np.zeros((32, 32), np.uint8)
    gt[8:24, 4:16] = 1
    gt[:, 16:] = 255
    pred = np.zeros_like(gt)
    pred[8:24, 4:16] = 1
    out = j_and_f([gt], [pred], ignore_index=255)
    assert out['J'] == 1.0 and out['F'] == 1.0 and out['frames'] == 1
    assert j_and_f([gt], [pred])['J'] == 192 / 704                    # without the ignore id: void is object
    void = j_and_f([np.full((32, 32), 255, np.uint8)], [pred], ignore_index=255)
    assert void['frames'] == 0 and np.isnan(void['J&F'])


def _strict(constant: str):
    raise ValueError(f'{constant} is not JSON')


def test_an_all_void_split_has_no_j_and_f_no_plot_warning_and_strict_json(tmp_path):
    """Labels of nothing but 255: eval reported J&F 1.0, the plot warned 'No artists with labels found', and
    metrics.json held bare NaN (mIoU; latency_current_ms of every per-frame model), which JSON readers refuse."""
    data = _data(tmp_path / 'd', [np.full((64, 64), 255, np.uint8)] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter('error')      # any warning (matplotlib's UserWarning) fails the run
        run_evaluation(_model(tmp_path / 'm.pt'), data, split='all', out_dir=tmp_path / 'ev', write_card=False)
    saved = json.loads((tmp_path / 'ev' / 'metrics.json').read_text(), parse_constant=_strict)['intervals']['1']
    assert 'J&F' not in saved and saved['mIoU'] is None and saved['latency_current_ms'] is None
    assert (tmp_path / 'ev' / 'accuracy_latency.png').is_file()


def test_a_sequence_keeps_its_frames_at_the_flow_size_only(tmp_path, monkeypatch):
    """Every frame of a sequence was kept whole until its flows were computed: 11.2 MB per 1080p frame in all (a
    1000-frame drive: 11 GB). The flow takes frames of at most FLOW_MAX_SIDE (now of each pair as it streams:
    test_eval_memory)."""
    from vidseg_ros.tools import eval_stream
    seen = []
    flow = eval_stream.optical_flow
    monkeypatch.setattr(eval_stream, 'optical_flow', lambda a, b: seen.append([a.shape, b.shape]) or flow(a, b))
    label = np.zeros((60, 960), np.uint8)
    label[:, 400:] = 1
    report = run_evaluation(_model(tmp_path / 'm.pt'), _data(tmp_path / 'd', [label] * 3), split='all',
                            out_dir=tmp_path / 'ev', write_card=False)
    assert seen == [[(30, 480, 3)] * 2] * 2 and report['intervals']['1']['TC_pairs'] == 2
