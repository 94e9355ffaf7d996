"""A recurrent model (mode: sequence) is validated as the node runs it: frames in order with the state carried,
and reset where the node resets it: at a new sequence and at a stamp gap above the engine's max_gap_s. The state
was carried from one sequence's last frame into the next sequence's first, and across gaps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support.eval_data import folder_dataset
from support.tiny_models import TinyRecurrent

from vidseg_ros.data.datasets.layouts import FrameRecord, write_index
from vidseg_ros.training import data_setup
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.metrics import ConfusionMatrix
from vidseg_ros.training.steps import normalize
from vidseg_ros.training.validation import validate_frames

# (sequence, stamp in s): 'b' starts with no gap after 'a' ends; 'b' then has a 2 s gap (the node resets there)
FRAMES = [('a', 0.0), ('a', 0.1), ('b', 0.2), ('b', 0.3), ('b', 0.4), ('b', 2.4), ('b', 2.5)]
RUNS = [[0, 1], [2, 3, 4], [5, 6]]       # what the node streams without a reset; 2 ranks split the 7 at 3


def _val_set(root):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in FRAMES]
    labels = [rng.integers(0, 3, (32, 32)).astype(np.uint8) for _ in FRAMES]
    folder_dataset(root, images, labels, classes=('x', 'y', 'z'))
    write_index(root, [FrameRecord(seq, i, root / 'images' / 's' / f'{i}.png', root / 'labels' / 's' / f'{i}.png',
                                   int(t * 1e9), 'human') for i, (seq, t) in enumerate(FRAMES)])
    return _val_set_of(root)


def _val_set_of(root):
    cfg = TrainConfig(mode='sequence', arch='recurrent_unet', dataset='folder', data_root=str(root), val_split='all',
                      num_classes=3, ignore_index=255, input_hw=[32, 32])
    return cfg, data_setup.val_dataset(cfg)


def _model():
    torch.manual_seed(0)
    model = TinyRecurrent()
    with torch.no_grad():     # a state that matters: the gate weighs the carried state heavily
        model.gate.weight[:, 8:] *= 20
    return model


@torch.no_grad()
def _node_miou(model, val_set) -> float:
    cm = ConfusionMatrix(3, 255)
    for run in RUNS:
        state = None
        for i in run:
            sample = val_set[i]
            logits, state = model.step(normalize(sample['image'][None]), state)
            up = torch.nn.functional.interpolate(logits, size=(32, 32), mode='bilinear', align_corners=False)
            cm.update(up.argmax(1).numpy(), sample['label'][None].numpy())
    return cm.scores()['mIoU']


def test_the_state_resets_at_a_new_sequence_and_a_time_gap(tmp_path):
    cfg, val_set = _val_set(tmp_path / 'd')
    assert [(r.sequence, r.stamp_ns) for r in val_set.items] == [(s, int(t * 1e9)) for s, t in FRAMES]
    model = _model()
    want = _node_miou(model, val_set)
    assert validate_frames(model, val_set, cfg, torch.device('cpu'))['mIoU'] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize('world', [2, 3, 4])
def test_under_ddp_every_share_starts_where_the_node_resets(world):
    """A share that began inside a run started it with no state: the score depended on the number of processes."""
    from vidseg_ros.training.validation import share
    starts = {0, 3, 5}
    shares = [share(7, rank, world, starts) for rank in range(world)]
    assert [i for s in shares for i in s] == list(range(7))
    assert all(s.start in starts for s in shares if len(s))
    assert [list(share(7, rank, 2)) for rank in range(2)] == [[0, 1, 2], [3, 4, 5, 6]]   # frames: an even split


def test_two_ranks_score_as_one_process(tmp_path):
    """Under torchrun (2 CPU ranks, gloo) each rank scored a contiguous half of the frames from a fresh state:
    rank 1's half began inside a run."""
    root = tmp_path / 'd'
    cfg, val_set = _val_set(root)
    want = validate_frames(_model(), val_set, cfg, torch.device('cpu'))['mIoU']
    test_dir = Path(__file__).resolve().parents[1]
    env = {**os.environ, 'GLOO_SOCKET_IFNAME': 'lo', 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join(filter(None, [str(test_dir.parent), str(test_dir), os.environ.get('PYTHONPATH')]))}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', __file__, str(root)]
    for _ in range(2):      # gloo's teardown abort (test_ddp.GLOO_ABORT) earns one more try, nothing else does
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0 or 'terminate called without an active exception' not in proc.stdout + proc.stderr:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((root / f'rank{rank}.json').read_text())['mIoU'] == pytest.approx(want, abs=1e-12)


if __name__ == '__main__':      # a rank of test_two_ranks_score_as_one_process
    import torch.distributed as dist
    dist.init_process_group('gloo')
    _root = Path(sys.argv[1])
    _cfg, _set = _val_set_of(_root)
    _rank, _world = dist.get_rank(), dist.get_world_size()
    _miou = validate_frames(_model(), _set, _cfg, torch.device('cpu'), _rank, _world)['mIoU']
    (_root / f'rank{_rank}.json').write_text(json.dumps({'mIoU': _miou}))
    dist.barrier()
    dist.destroy_process_group()


def test_stream_starts_where_the_node_resets_its_state():
    """The first frame, a new sequence, a stamp going backwards and a gap of more than max_gap_s (0.5 s) start a
    stream; exactly 0.5 s, the same stamp twice and a new sequence's own gap-free start do not start another."""
    from types import SimpleNamespace
    from vidseg_ros.training.validation import stream_starts
    s = 1_000_000_000
    frames = [('a', 0), ('a', s // 2), ('a', s // 2), ('a', s + 1), ('a', s // 2), ('b', s // 2 + 1),
              ('b', s + s // 2 + 1), ('b', 2 * s + 1), ('b', 2 * s + 2)]
    items = [SimpleNamespace(sequence=q, stamp_ns=t) for q, t in frames]
    assert stream_starts(SimpleNamespace(items=items)) == {0, 3, 4, 5, 6}
    assert stream_starts(SimpleNamespace(items=[])) == {0} and stream_starts([1, 2]) == {0}
