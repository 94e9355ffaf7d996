"""bench/keyframe_curve.py runs end to end (--quick), so the fixed-vs-adaptive curve never rots."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'bench' / 'keyframe_curve.py'
H, W = 64, 96


def _oracle():
    """bench/keyframe_oracle.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location('keyframe_oracle', ROOT / 'bench' / 'keyframe_oracle.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _davis_with_cut(root: Path, n: int = 12, cut: int = 6) -> Path:
    """One 24 Hz DAVIS-layout sequence: a square moving one pixel a frame over a still background,
    which changes completely at frame ``cut`` (a scene cut the adaptive policy must key on)."""
    rng = np.random.default_rng(0)
    backgrounds = [rng.integers(0, 60, (H, W, 3), dtype=np.uint8), rng.integers(150, 255, (H, W, 3), np.uint8)]
    (root / 'JPEGImages/480p/s').mkdir(parents=True)
    (root / 'Annotations/480p/s').mkdir(parents=True)
    for t in range(n):
        img = backgrounds[t >= cut].copy()
        mask = np.zeros((H, W), np.uint8)
        mask[20:40, 10 + t:30 + t] = 255
        img[mask > 0] = 220
        cv2.imwrite(str(root / f'JPEGImages/480p/s/{t:05d}.jpg'), img)
        cv2.imwrite(str(root / f'Annotations/480p/s/{t:05d}.png'), mask)
    return root


def _fit(model, data: Path, steps: int = 15) -> None:
    """A few steps on the synthetic frames, so the prediction follows the square (a random model labels
    every pixel alike, and then a stale cache would change nothing)."""
    from vidseg_ros.constants import IMAGENET_MEAN, IMAGENET_STD
    imgs = sorted((data / 'JPEGImages/480p/s').glob('*.jpg'))
    x = torch.stack([torch.from_numpy(cv2.imread(str(p))[..., ::-1].copy()) for p in imgs]).permute(0, 3, 1, 2)
    x = (x.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    y = torch.stack([torch.from_numpy(cv2.imread(str(p).replace('JPEGImages', 'Annotations')[:-3] + 'png', 0) > 0)
                     for p in imgs]).long()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _checkpoint(path: Path, data: Path) -> Path:
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, cached_levels=2)
    _fit(model, data)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=['background', 'object'],
                        palette=[[0, 0, 0], [255, 0, 0]], ignore_index=255, input_hw=[H, W])
    return save_checkpoint(path, model, meta)


def test_curve_on_synthetic_video(tmp_path):
    data, out = _davis_with_cut(tmp_path / 'davis'), tmp_path / 'out'
    proc = _bench('--data', data, '--split', 'all', '--model', _checkpoint(tmp_path / 'm.pt', data), '--out', out,
                  '--intervals', '1,3,5', '--thresholds', '0,0.3,100', '--max-interval', '4', '--twin', '')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '| fixed | k=3 |' in proc.stdout and '| adaptive | threshold 0.3 |' in proc.stdout
    report = json.loads((out / 'keyframe_curve.json').read_text())
    assert (out / 'keyframe_curve.png').stat().st_size > 0
    keys = {(p['policy'], p['setting']): p['key_frames'] for p in report['fixed'] + report['adaptive']}
    assert keys[('fixed', 1)] == 12 and keys[('fixed', 3)] == 4 and keys[('fixed', 5)] == 3
    assert keys[('adaptive', 0.0)] == 12          # every frame differs a little: all keys
    assert keys[('adaptive', 100.0)] == 3         # the setting's maximum never triggers: frames 0, 4, 8 (max interval 4)
    # 0.3 keys on the cut (frame 6) but not on the moving square: 0, 4 (max interval), 6 (cut), 10
    cut = next(p for p in report['adaptive'] if p['setting'] == 0.3)
    assert keys[('adaptive', 0.3)] == 4 and cut['key_spacing'] == [[4, 2, 4]]
    oracle = report['oracle']            # hindsight bound: from the fewest keys (3) to no flip left
    assert oracle[0]['key_frames'] == 3 and oracle[-1]['flips'] == 0 < oracle[0]['flips']
    assert all(a['flips'] >= b['flips'] for a, b in zip(oracle, oracle[1:]))     # more keys, fewer flips
    assert report['replay_matches_engine'] is True                       # the offline replay is exact
    assert len(report['change_x_age']) > 1 and all(p['key_frames'] >= 3 for p in report['change_x_age'])
    for p in report['fixed'] + report['adaptive']:
        assert 0 <= p['mIoU'] <= 1 and p['model_ms'] > 0 and p['key_ratio'] == p['key_frames'] / 12
        assert (p['descriptor_ms'] > 0) == (p['policy'] == 'adaptive')
    k3 = next(e for e in report['equal_ratio'] if e['k'] == 3)      # ratio 4/12, inside the adaptive range
    assert k3['adaptive_mIoU'] is not None
    assert k3['adaptive_minus_fixed_mIoU'] == k3['adaptive_mIoU'] - k3['fixed_mIoU']
    flips = {(p['policy'], p['setting']): p['flips'] for p in report['fixed'] + report['adaptive']}
    assert flips[('fixed', 1)] == 0 and flips[('adaptive', 0.0)] == 0     # all key frames: the k=1 labels
    check = report['descriptor_check']                                  # on fixed k=5's 9 current frames
    assert check['current_frames'] == 9 and 'rank correlation' in proc.stdout


def test_placement_costs_match_the_stream(tmp_path):
    """The hindsight bound prices a placement by (frame, cache age) pairs: that must equal the engine's
    streamed output, i.e. a current frame depends on its key frame only."""
    best_placement, pair_costs = _oracle().best_placement, _oracle().pair_costs
    from vidseg_ros.tools.evaluate import EvalSession
    data = _davis_with_cut(tmp_path / 'davis')
    ev = EvalSession(_checkpoint(tmp_path / 'm.pt', data), data, split='all')
    ev.score(keyframe_interval=1)
    every = [r['pred'] for r in ev.runs]
    flips = pair_costs(ev, every, 4)[0]['flips']
    ev.score(keyframe_interval=3)
    streamed = [float((p != e).mean()) for p, e in zip(ev.runs[0]['pred'], every[0])]
    assert [flips[i, i % 3] for i in range(12)] == streamed
    assert flips[:, 0].tolist() == [0.0] * 12 and flips[5:, 1:].max() > 0
    fewest = best_placement(flips, 1e9)                  # keys cost everything: the fewest the gap allows
    assert len(fewest) == 3 and fewest[0] == 0 and max(np.diff(fewest + [12])) <= 4


def test_replayed_rules_space_keys_by_speed():
    """alpha 0 (the engine's rule) spaces key frames by 1 / speed, alpha 1 (change x age) by 1 / sqrt(speed)."""
    rule_placement = _oracle().rule_placement
    steps = [1.0] * 100 + [4.0] * 100                    # the scene moves 4x faster in the second half
    pos = np.cumsum([0.0] + steps) * 1000                # change vs a key frame = speed x age x 1e-6
    desc = [torch.tensor([1e9, p], dtype=torch.float64) for p in pos]
    for alpha, threshold, slow, fast in ((0.0, 15.5e-6, 16, 4), (1.0, 63.5e-6, 8, 4)):
        gaps = np.diff(rule_placement(desc, 1000, threshold, alpha))
        assert set(gaps[:5]) == {slow} and set(gaps[-5:]) == {fast}, (alpha, gaps)


def test_curve_label_free_when_classes_differ(tmp_path):
    """A model whose classes are not the data's (a CamVid model on DAVIS) gets flips, not mIoU."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=11, cached_levels=2)
    ckpt = save_checkpoint(tmp_path / 'c.pt', model, default_meta('keyframe_fpn', model.arch_config, input_hw=[H, W]))
    proc = _bench('--data', _davis_with_cut(tmp_path / 'davis'), '--split', 'all', '--model', ckpt, '--out', tmp_path,
                  '--intervals', '1,4', '--thresholds', '0.3', '--max-interval', '4', '--twin', '')
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / 'keyframe_curve.json').read_text())
    assert not report['labelled'] and 'nan' not in proc.stdout
    k4, adaptive = report['fixed'][1], report['adaptive'][0]
    assert all(p['mIoU'] != p['mIoU'] for p in report['fixed'] + report['adaptive'])     # NaN: no labels
    assert k4['flips'] > 0 and k4['key_frames'] == 3 and adaptive['key_frames'] == 4
    assert (tmp_path / 'keyframe_curve.png').stat().st_size > 0


def test_curve_quick_on_camvid(tmp_path, camvid_dir):
    proc = _bench('--data', camvid_dir, '--quick', '--out', tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / 'keyframe_curve.json').read_text())
    assert report['timing']['video'] and report['frames'] == 12
    fixed = {p['setting']: p for p in report['fixed']}
    assert fixed[1]['key_ratio'] == 1 and fixed[5]['key_frames'] == 3       # frames 0, 5, 10
    assert fixed[1]['mIoU'] > 0.4                                          # the shipped model, real frames
    assert fixed[1]['flips'] == 0 < fixed[2]['flips'] < fixed[10]['flips']  # an older cache flips more labels
    ratios = [p['key_ratio'] for p in report['adaptive']]
    assert ratios[0] > ratios[-1]          # thresholds 0.05 .. 0.3: the lowest keys most often
    assert report['replay_matches_engine'] is True


def test_mistakes_are_one_line(tmp_path):
    proc = _bench('--data', tmp_path / 'nowhere', '--out', tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'data not found' in proc.stderr
    data = _davis_with_cut(tmp_path / 'davis', n=3)
    proc = _bench('--data', data, '--split', 'all', '--model', tmp_path / 'none.pt', '--out', tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'not found' in proc.stderr
