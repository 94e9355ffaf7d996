"""Scoring a run's weights on the val or selection split (every rank its share under DDP), and whether an epoch's
score is a new best."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from .config import TrainConfig
from .metrics import ConfusionMatrix
from .model_setup import unwrap
from .steps import frame_logits, normalize


@torch.no_grad()
def validate_frames(model, val_set, cfg: TrainConfig, device, rank: int = 0, world: int = 1) -> dict:
    """Per-frame mIoU / mAcc / pixel accuracy on the validation set at training resolution.

    Under DDP each rank scores its contiguous share and the confusion matrices are summed, so every
    rank returns the scores of the whole set.
    """
    model.eval()
    cm = ConfusionMatrix(cfg.num_classes, cfg.ignore_index)
    names = getattr(val_set, 'class_names', None)
    val_set = shard(val_set, rank, world)
    # Recurrent models are validated as deployed: frames in temporal order, state carried along.
    stream = cfg.mode == 'sequence' and hasattr(unwrap(model), 'step')
    loader = DataLoader(val_set, batch_size=1 if stream else 4, shuffle=False,
                        num_workers=cfg.num_workers)
    state = None
    for raw in loader:
        x = normalize(raw['image'].to(device))
        if stream:
            logits, state = unwrap(model).step(x, state)
        else:
            logits = frame_logits(model, x)
        logits = torch.nn.functional.interpolate(logits.float(), size=raw['label'].shape[-2:],
                                                 mode='bilinear', align_corners=False)
        cm.update(logits.argmax(1).cpu().numpy(), raw['label'].numpy())
    if world > 1:   # on the model's device: NCCL (GPU runs) reduces device tensors only
        total = torch.from_numpy(cm.mat).to(device)
        dist.all_reduce(total)
        cm.mat = total.cpu().numpy()
    s = cm.scores(names)
    model.train()
    return {'mIoU': s['mIoU'], 'mAcc': s['mAcc'], 'pixel_acc': s['pixel_acc'],
            'per_class_iou': s['per_class_iou']}


def shard(ds, rank: int, world: int):
    """Contiguous share of a dataset for ``rank`` (contiguous so streamed clips stay in order)."""
    if world == 1:
        return ds
    n = len(ds)
    return Subset(ds, range(n * rank // world, n * (rank + 1) // world))


def is_better(score: float, best: float | None) -> bool:
    return best is None or score > best


def undefined_score(record: dict) -> bool:
    score = record.get('select_mIoU', record.get('mIoU'))
    return score is not None and math.isnan(score)
