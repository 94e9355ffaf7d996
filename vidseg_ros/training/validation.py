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
    # Recurrent models are validated as deployed: frames in temporal order, the state carried along and reset
    # where the node resets it (a share under DDP starts at such a point, so every world size scores alike).
    stream = cfg.mode == 'sequence' and hasattr(unwrap(model), 'step')
    starts = stream_starts(val_set) if stream else None
    positions = share(len(val_set), rank, world, starts)
    loader = DataLoader(val_set if world == 1 else Subset(val_set, positions), batch_size=1 if stream else 4,
                        shuffle=False, num_workers=cfg.num_workers)
    state = None
    for pos, raw in zip(positions, loader):
        x = normalize(raw['image'].to(device))
        if stream:
            logits, state = unwrap(model).step(x, None if pos in starts else state)
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


def stream_starts(val_set) -> set[int]:
    """Positions of ``val_set`` where the node starts its state afresh: the first frame, a new sequence, and where
    the node's key-frame policy resets on the stamps (one going backwards or more than ``max_gap_s`` after the frame
    before), asked of that policy itself so the rule has one home; {0} for a set without records."""
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.policy import KeyframePolicy
    items, policy, starts = getattr(val_set, 'items', None) or [], KeyframePolicy(EngineConfig()), {0}
    for i, item in enumerate(items):
        if i and item.sequence != items[i - 1].sequence:
            policy.reset('new sequence')
        if policy.decide(item.stamp_ns, (1, 1)).reset_reason:     # one size: the node's resize rule is not the set's
            starts.add(i)
    return starts


def share(n: int, rank: int, world: int, starts: set[int] | None = None) -> range:
    """The contiguous positions of ``rank``'s share of ``n`` (contiguous so streamed clips stay in order); with
    ``starts`` each share begins at one of them, so no stream is cut in two."""
    def cut(r: int) -> int:
        b = n * r // world
        return b if starts is None or r in (0, world) else min((s for s in starts if s >= b), default=n)
    return range(cut(rank), cut(rank + 1))


def is_better(score: float, best: float | None) -> bool:
    return best is None or score > best


def undefined_score(record: dict) -> bool:
    score = record.get('select_mIoU', record.get('mIoU'))
    return score is not None and math.isnan(score)
