"""Data-parallel training under torchrun (gloo, CPU): the same weights as one process with the global
batch, only rank 0 writes, exact resume, validation over the whole set; plus a two-node simulation.

Run by itself under torchrun (``python -m torch.distributed.run ... test_ddp.py OUT``) this file is the worker of
the recurrent (mode: sequence) scenario."""
import functools
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from support import ddp_worker
from support.ddp_worker import FROZEN, config, data, model

from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.loop import train

WORKER = Path(ddp_worker.__file__)
ROOT = Path(__file__).resolve().parents[2]
BATCH = 2   # per process: the global batch of 2 processes is 4


def _env() -> dict:
    # gloo on loopback only; the package and the test helpers importable from the checkout
    return {**os.environ, 'GLOO_SOCKET_IFNAME': 'lo', 'OMP_NUM_THREADS': '1',
            'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), str(ROOT / 'test'),
                                                        os.environ.get('PYTHONPATH')]))}


# gloo's known teardown abort (a C++ thread destroyed while joinable; pytorch/pytorch#179291): seen in 2 of
# ~10 full clean-clone runs, never in 24 runs of this scenario alone under load. It is not our training logic,
# so a scenario that meets it runs once more from scratch; any other failure fails at once.
GLOO_ABORT = 'terminate called without an active exception'


class GlooAbort(AssertionError):
    pass


def retry_gloo_abort(test):
    """Run ``test(tmp_path)`` again in a fresh folder when a torchrun in it hit GLOO_ABORT (once)."""
    @functools.wraps(test)
    def run(tmp_path):
        try:
            return test(tmp_path / 'try1')
        except GlooAbort as e:
            warnings.warn(f'gloo teardown abort, scenario repeated: {str(e)[-300:]}')
            return test(tmp_path / 'try2')
    return run


def _torchrun(out: Path, epochs: int, *extra: str, launcher: list[str] | None = None) -> None:
    launcher = launcher or ['--standalone', '--nproc_per_node', '2']
    cmd = [sys.executable, '-m', 'torch.distributed.run', *launcher, str(WORKER), str(out), str(epochs),
           str(BATCH), *extra]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    if proc.returncode != 0 and GLOO_ABORT in proc.stdout + proc.stderr:
        raise GlooAbort(log)
    assert proc.returncode == 0, log


def _single(out: Path, epochs: int, freeze: list[str] | None = None) -> tuple[dict, dict]:
    train_set, val_set = data()
    net = model()
    result = train(config(out, epochs, BATCH * 2, freeze), model=net, train_set=train_set, val_set=val_set)
    return net.state_dict(), result


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f'{k} differs')


def _load(out: Path, rank: int) -> dict:
    return torch.load(out / f'weights_rank{rank}.pt', weights_only=True)


@retry_gloo_abort
def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    _torchrun(tmp_path / 'ddp', 2)
    single, result = _single(tmp_path / 'one', 2)
    _assert_same_weights(_load(tmp_path / 'ddp', 0), single)
    _assert_same_weights(_load(tmp_path / 'ddp', 1), single)
    ranks = [json.loads((tmp_path / 'ddp' / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [r['world'] for r in ranks] == [2, 2]
    # train() destroys the group it made: left to interpreter exit, gloo aborted a rank now and then (SIGABRT,
    # "terminate called without an active exception": pytorch/pytorch#190489)
    assert [r['group_left'] for r in ranks] == [False, False]
    # only rank 0 writes checkpoints (last.pt every epoch, best.pt when validation improves)
    assert ranks[1]['writes'] == []
    assert any(w.endswith('last.pt') for w in ranks[0]['writes'])
    # validation covers the whole set on every rank: the same scores as one process
    for r in ranks:
        for got, want in zip(r['history'], result['history']):
            assert got['mIoU'] == pytest.approx(want['mIoU'], abs=1e-9)
            assert got['pixel_acc'] == pytest.approx(want['pixel_acc'], abs=1e-9)


@retry_gloo_abort
def test_frozen_layers_stay_fixed_on_every_rank(tmp_path):
    """freeze under DDP: the fixed layer is the initial one on both ranks, the rest equals one process."""
    _torchrun(tmp_path / 'ddp', 2, 'freeze')
    single, _ = _single(tmp_path / 'one', 2, FROZEN)
    initial = model().state_dict()
    for rank in (0, 1):
        got = _load(tmp_path / 'ddp', rank)
        _assert_same_weights(got, single)
        assert all(torch.equal(got[k], initial[k]) for k in got if k.startswith('low.'))
        assert not torch.equal(got['head.weight'], initial['head.weight'])


@retry_gloo_abort
def test_resume_under_ddp_continues_exactly(tmp_path):
    out = tmp_path / 'ddp'
    _torchrun(out, 1)
    _torchrun(out, 2, 'resume')
    straight = tmp_path / 'straight'
    _torchrun(straight, 2)
    _assert_same_weights(_load(out, 0), _load(straight, 0))
    history = json.loads((out / 'rank0.json').read_text())['history']
    assert [h['epoch'] for h in history] == [1, 2]


@retry_gloo_abort
def test_a_loss_diverging_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Rank 1's loss goes NaN at step 3 while rank 0's is finite: a rank that stopped alone would leave the other
    waiting in its next collective. Both stop with the same message, at step 3, before anything of epoch 1 is kept."""
    _torchrun(tmp_path / 'ddp', 2, 'diverge')
    errors = [json.loads((tmp_path / 'ddp' / f'rank{r}.json').read_text())['error'] for r in (0, 1)]
    assert errors[0] == errors[1]
    assert 'the loss became nan at epoch 1 step 3: training diverged' in errors[0]
    assert 'nothing was written' in errors[0]


def test_the_logged_loss_is_the_global_batch_loss(tmp_path):
    """Under DDP the loss each rank logs is the mean over the ranks (it was rank 0's own shard): as one process
    with the global batch logs it."""
    _torchrun(tmp_path / 'ddp', 1)
    _, result = _single(tmp_path / 'one', 1)
    for r in (0, 1):
        got = json.loads((tmp_path / 'ddp' / f'rank{r}.json').read_text())['history']
        assert got[0]['loss'] == pytest.approx(result['history'][0]['loss'], rel=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@retry_gloo_abort
def test_two_node_rendezvous_on_one_machine(tmp_path):
    """Two torchrun launchers (one process each) meeting through a c10d rendezvous, as two machines would."""
    port, out = _free_port(), tmp_path / 'nodes'
    common = ['--nnodes', '2', '--nproc_per_node', '1', '--rdzv_backend', 'c10d',
              '--rdzv_endpoint', f'127.0.0.1:{port}', '--rdzv_id', 'vidseg_test']
    cmds = [[sys.executable, '-m', 'torch.distributed.run', *common, str(WORKER), str(out), '2', str(BATCH)]
            for _ in range(2)]
    procs = [subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    if any(p.returncode for p in procs) and any(GLOO_ABORT in log for log in logs):
        raise GlooAbort('\n'.join(log[-1000:] for log in logs))
    assert [p.returncode for p in procs] == [0, 0], '\n'.join(log[-2000:] for log in logs)
    single, _ = _single(tmp_path / 'one', 2)
    _assert_same_weights(_load(out, 0), single)
    _assert_same_weights(_load(out, 1), single)


SEQ_HW = (16, 16)


def _sequence_config(out: Path, batch: int) -> TrainConfig:
    return TrainConfig(name='seq', arch='recurrent_unet', mode='sequence', seq_len=4, tbptt=2, dataset='folder',
                       num_classes=3, ignore_index=255, input_hw=[32, 32], batch_size=batch, lr=1e-2, epochs=1,
                       val_split='', runs_dir=str(out / 'runs'), device='cpu', num_threads=1, amp=False,
                       lr_policy='constant')


def _train_sequence(out: Path, batch: int) -> dict:
    """The tiny recurrent model trained one epoch on 8 labelled clips of 4 frames; its final weights."""
    from support.tiny_models import TinyRecurrent
    g = torch.Generator().manual_seed(5)
    clips = [{'frames': torch.rand(4, 3, *SEQ_HW, generator=g),
              'labels': torch.randint(0, 3, (4, *SEQ_HW), generator=g),
              'label_pos': int(torch.randint(0, 4, (), generator=g))} for _ in range(8)]
    torch.manual_seed(0)
    net = TinyRecurrent()
    train(_sequence_config(out, batch), model=net, train_set=clips)
    return net.state_dict()


@retry_gloo_abort
def test_truncated_bptt_averages_gradients_across_ranks(tmp_path):
    """mode: sequence with tbptt: the TBPTT loop called ``step`` on the bare model, past DDP's forward, so no
    gradient was averaged and each rank trained its own weights (the ranks' weights differed after one epoch)."""
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', __file__, str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    if proc.returncode != 0 and GLOO_ABORT in proc.stdout + proc.stderr:
        raise GlooAbort(log)
    assert proc.returncode == 0, log
    single = _train_sequence(tmp_path / 'one', BATCH * 2)
    _assert_same_weights(_load(out, 0), single)
    _assert_same_weights(_load(out, 1), single)


if __name__ == '__main__':
    _out = Path(sys.argv[1])
    torch.save(_train_sequence(_out, BATCH), _out / f'weights_rank{os.environ["RANK"]}.pt')
