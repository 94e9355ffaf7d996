"""A training that diverges (loss or weights NaN / inf) stops with one line and never saves such weights: it
wrote NaN weights as best.pt and output, exit 0, and every reader served them."""
import pytest
import torch

from support.tiny_models import TinyKeyframe, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.models.checkpoint import read_checkpoint
from vidseg_ros.training.config import TrainConfig
from vidseg_ros.training.loop import train

HW = (64, 64)


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(name='t', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW), batch_size=2,
                epochs=1, val_split='', hflip=False, runs_dir=str(tmp_path / 'runs'), output=str(tmp_path / 'out.pt'))
    base.update(kw)
    return TrainConfig(**base)


def test_a_loss_that_becomes_nan_stops_the_run_before_anything_is_written(tmp_path):
    """lr 1e30: 'loss nan', then 'wrote ... (best.pt of ...)', exit 0."""
    with pytest.raises(ConfigError, match=r'^the loss became nan at epoch 1 step \d+: training diverged; lower lr '
                                          r'\(this run: 1e\+30\) and train again \(--set lr=...\); nothing was written'):
        train(_cfg(tmp_path, lr=1e30), model=TinyKeyframe(), train_set=frames(8, HW))
    assert sorted(p.name for p in tmp_path.iterdir()) == []     # no output, no run folder


def test_a_diverged_resume_keeps_the_good_best_pt_last_pt_and_output(tmp_path):
    """A run that diverges after good epochs leaves best.pt and last.pt as the last good epoch left them."""
    train(_cfg(tmp_path, output=''), model=TinyKeyframe(), train_set=frames(8, HW))
    run_dir = tmp_path / 'runs' / 't'
    before = {name: (run_dir / name).read_bytes() for name in ('best.pt', 'last.pt')}
    with pytest.raises(ConfigError, match=r'the loss became nan at epoch 2 step \d+: training diverged; .*best.pt and '
                                          r'last.pt of .*runs/t are as epoch 1 left them; output is not written'):
        train(_cfg(tmp_path, epochs=2, lr=1e30), resume=True, model=TinyKeyframe(), train_set=frames(8, HW))
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert not (tmp_path / 'out.pt').exists()
    read_checkpoint(run_dir / 'best.pt')        # still finite and readable


class _Poisoned(TinyKeyframe):
    """A buffer that goes inf while the loss stays finite (as BatchNorm's running_var did at lr 1e6)."""

    def __init__(self):
        super().__init__()
        self.register_buffer('running_var', torch.ones(4))

    def forward(self, x):
        if self.training:
            self.running_var.fill_(float('inf'))
        return super().forward(x)


def test_weights_that_go_inf_while_the_loss_stays_finite_stop_the_run_at_the_epoch_end(tmp_path):
    """lr 1e6: the loss stayed finite, BatchNorm's running_var did not: best.pt / output held inf, exit 0."""
    with pytest.raises(ConfigError, match=r'^after epoch 1 \(step \d+\) 1 weight tensor\(s\) hold NaN or inf \(first: '
                                          r'running_var\): training diverged; lower lr'):
        train(_cfg(tmp_path), model=_Poisoned(), train_set=frames(8, HW))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_labels_with_no_labelled_pixel_stop_the_run_before_anything_is_written(tmp_path):
    """Eight all-ignore masks: 'loss 0.0' for every step, then a model written as trained, exit 0."""
    unlabelled = [{**item, 'label': torch.full_like(item['label'], 255)} for item in frames(8, HW)]
    with pytest.raises(ConfigError, match=r'^epoch 1: not one pixel of the training labels is labelled \(every pixel '
                                          r'is ignore_index 255\): there is nothing to learn from.*; nothing was '
                                          r'written$'):
        train(_cfg(tmp_path), model=TinyKeyframe(), train_set=unlabelled)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    one = frames(8, HW)[:1] + unlabelled[1:]      # one labelled frame in eight is enough to go on
    assert train(_cfg(tmp_path, batch_size=1), model=TinyKeyframe(), train_set=one)['epochs'] == 1
