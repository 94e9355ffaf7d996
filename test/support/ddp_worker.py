"""Run by test_ddp.py under torchrun (with ``test/`` on PYTHONPATH): trains the tiny model on tiny data and writes what each rank saw.

Usage: python -m torch.distributed.run ... ddp_worker.py OUT_DIR EPOCHS BATCH [resume|freeze|diverge]
"""
import json
import os
import sys
from pathlib import Path

import torch
from support.tiny_models import TinyKeyframe, frames

from vidseg_ros.config import ConfigError
from vidseg_ros.training import loop
from vidseg_ros.training.config import TrainConfig

HW = (32, 32)


FROZEN = ['low']      # the 'freeze' scenario fixes the tiny model's first layer


def config(out: Path, epochs: int, batch: int, freeze: list[str] | None = None) -> TrainConfig:
    return TrainConfig(name='ddp', dataset='folder', num_classes=3, ignore_index=255, input_hw=list(HW),
                       batch_size=batch, lr=1e-2, epochs=epochs, val_split='', hflip=False,
                       scale_range=[1.0, 1.0], runs_dir=str(out / 'runs'), device='cpu', num_threads=1,
                       amp=False, lr_policy='constant',   # constant: 1 epoch + resume == 2 epochs
                       freeze=freeze or [])


def data():
    return frames(16, HW, seed=3), frames(6, HW, seed=4)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyKeyframe()


def nan_from_third_step(net: torch.nn.Module) -> None:
    """This rank's training logits become NaN from its third training step on (the other rank's stay finite)."""
    forward, calls = net.forward, []

    def patched(*a, **k):
        out = forward(*a, **k)
        calls.append(net.training)
        return out * float('nan') if net.training and sum(calls) >= 3 else out
    net.forward = patched


def main() -> None:
    out, epochs, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    resume = len(sys.argv) > 4 and sys.argv[4] == 'resume'
    freeze = FROZEN if len(sys.argv) > 4 and sys.argv[4] == 'freeze' else None
    rank = int(os.environ['RANK'])
    # ours, not the run's: a run that fails before writing anything removes the folders it created (rank 0),
    # and with OUT among them rank 1's rank1.json went too, or could not be written ('diverge')
    out.mkdir(parents=True, exist_ok=True)
    writes = []
    for name in ('save_training_state', 'save_model'):   # record which rank writes files
        original = getattr(loop, name)
        setattr(loop, name, lambda path, *a, _f=original, **k: (writes.append(str(path)), _f(path, *a, **k)))
    train_set, val_set = data()
    net = model()
    if len(sys.argv) > 4 and sys.argv[4] == 'diverge' and rank == 1:
        nan_from_third_step(net)
    try:
        result = loop.train(config(out, epochs, batch, freeze), resume=resume, model=net, train_set=train_set,
                            val_set=val_set)
    except ConfigError as e:      # the scenario 'diverge': what each rank said, at which step
        (out / f'rank{rank}.json').write_text(json.dumps({'error': str(e)}))
        return
    torch.save(net.state_dict(), out / f'weights_rank{rank}.pt')
    (out / f'rank{rank}.json').write_text(json.dumps({'writes': writes, 'history': result['history'],
                                                      'world': int(os.environ['WORLD_SIZE']),
                                                      'group_left': torch.distributed.is_initialized()}))


if __name__ == '__main__':
    main()
