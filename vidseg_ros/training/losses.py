"""Losses: (class-balanced) cross-entropy with an ignore label, and the key-frame triplet loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidseg_ros.models.contract import KeyframeSplit


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, K, h, w) logits to the label size when they differ."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode='bilinear', align_corners=False)


def class_balance_weights(target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Per-class weights ~ 1 / frequency in this batch, normalised so present classes average 1.

    The one-shot VOS work balances fg/bg per image; generalised here to K classes.
    """
    valid = target[target != ignore_index]
    counts = torch.bincount(valid.flatten(), minlength=num_classes)[:num_classes].float()
    present = counts > 0
    w = torch.zeros(num_classes, device=target.device)
    if present.any():
        w[present] = valid.numel() / (present.sum() * counts[present])
    return w


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
                      class_balanced: bool = False, ohem_fraction: float = 0.0) -> torch.Tensor:
    """Pixel-wise NLL of softmax(logits) against integer labels.

    Args:
        logits: (B, K, h, w); upsampled to the label size if smaller.
        target: (B, H, W) int64 labels; ``ignore_index`` pixels contribute nothing.
        ignore_index: label value to skip.
        class_balanced: weight classes by inverse frequency in the batch.
        ohem_fraction: > 0: mean over only this fraction of labelled pixels, those with the highest
            (weighted) loss: online hard example mining, so easy road and sky stop dominating.
    """
    logits = resize_logits(logits, target.shape[-2:])
    weight = None
    if class_balanced:
        weight = class_balance_weights(target, logits.shape[1], ignore_index).to(logits.dtype)
    if not (target != ignore_index).any():
        return logits.sum() * 0.0  # keeps the graph; an all-void crop teaches nothing
    weight = None if weight is None else weight.float()
    if ohem_fraction > 0:
        nll = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index, reduction='none')
        hard = nll[target != ignore_index]
        return hard.topk(max(1, int(round(hard.numel() * ohem_fraction)))).values.mean()
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)


@dataclass
class TripletLossParts:
    """The terms of the key-frame loss, kept apart for logging."""

    total: torch.Tensor
    current: torch.Tensor   # NLL of the current frame decoded from the key's cached features
    key: torch.Tensor       # NLL of the key frame (full model) against its teacher mask
    self_key: torch.Tensor  # NLL of the current frame used as its own key (full model)
    feature: torch.Tensor   # L1 between high-level features of current and key


def triplet_outputs(model: KeyframeSplit, key: torch.Tensor, current: torch.Tensor) -> dict:
    """Run a key-frame model (``models.contract.KeyframeModel``) on a (key, current) batch the way
    the loss needs it.

    Returns logits of the current frame decoded from the key's cached high-level features
    (``cached``), of the key frame (``key``) and of the current frame used as its own key
    (``self``), plus the high-level features of both (``high_key``, ``high_cur``).
    """
    both = torch.cat([key, current])                      # one pass through the shared trunk
    b = key.shape[0]
    low = model.encode_low(both)
    high = model.encode_high(low)
    low_key, low_cur = _split(low, b)
    high_key, high_cur = _split(high, b)
    return {'cached': model.decode(low_cur, high_key), 'key': model.decode(low_key, high_key),
            'self': model.decode(low_cur, high_cur), 'high_key': high_key, 'high_cur': high_cur}


def keyframe_triplet_loss(outputs: dict, target: torch.Tensor, key_target: torch.Tensor,
                          distance: torch.Tensor, ignore_index: int, feature_weight: float = 0.01,
                          class_balanced: bool = False) -> TripletLossParts:
    """Key-frame loss of the semi-supervised feature-sharing work, per sample weighted by distance.

    ``L = a_d NLL(decode(low(cur), high(key)), y) + (1 - a_d) [NLL(full(key), y_key) + NLL(full(cur), y)]
    + lambda |high(cur) - high(key)|_1`` with ``a_d = 1 / (d + 1)``, averaged over the batch.

    Args:
        outputs: :func:`triplet_outputs` of the model on (key, current).
        target: (B, H, W) labels of the current frames.
        key_target: (B, H, W) teacher masks (or warped labels) for the key frames.
        distance: (B,) key distances d >= 1.
        ignore_index: label value to skip.
        feature_weight: lambda.
        class_balanced: class-balanced CE for every NLL term.
    """
    b = target.shape[0]
    alpha = 1.0 / (distance.float().to(target.device) + 1.0)  # (B,)
    cur = _per_sample_nll(outputs['cached'], target, ignore_index, class_balanced)
    k = _per_sample_nll(outputs['key'], key_target, ignore_index, class_balanced)
    s = _per_sample_nll(outputs['self'], target, ignore_index, class_balanced)
    pairs = list(zip(_as_list(outputs['high_cur']), _as_list(outputs['high_key'])))
    feat = torch.stack([_l1(hc, hk) for hc, hk in pairs]).sum(0) if pairs else \
        torch.zeros(b, device=target.device)
    total = (alpha * cur + (1 - alpha) * (k + s) + feature_weight * feat).mean()
    return TripletLossParts(total, cur.mean().detach(), k.mean().detach(), s.mean().detach(),
                            feat.mean().detach())


def _as_list(x) -> list[torch.Tensor]:
    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        return [x]
    return [t for t in x if t is not None]


def _split(x, b: int):
    """Split batched features (tensor, tuple/list of tensors, or None) into key and current."""
    if x is None:
        return None, None
    if isinstance(x, torch.Tensor):
        return x[:b], x[b:]
    pairs = [_split(t, b) for t in x]
    return type(x)(p[0] for p in pairs), type(x)(p[1] for p in pairs)


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per sample: (B, ...) -> (B,)."""
    return (a.float() - b.float()).abs().flatten(1).mean(1)


def _per_sample_nll(logits, target, ignore_index, class_balanced) -> torch.Tensor:
    """(B,) mean NLL per sample over its non-ignored pixels (0 for an all-void sample)."""
    logits = resize_logits(logits, target.shape[-2:]).float()
    weight = None
    if class_balanced:
        weight = class_balance_weights(target, logits.shape[1], ignore_index)
    nll = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction='none')
    valid = (target != ignore_index).flatten(1)
    if weight is not None:
        denom = (weight[target.clamp(0, logits.shape[1] - 1)] * valid.view_as(target)).flatten(1).sum(1)
    else:
        denom = valid.sum(1).float()
    return nll.flatten(1).sum(1) / denom.clamp_min(1e-6)


def sequence_loss(logits_seq: torch.Tensor, target: torch.Tensor, label_pos: torch.Tensor,
                  ignore_index: int, class_balanced: bool = False, ohem_fraction: float = 0.0) -> torch.Tensor:
    """NLL at the labelled position of each clip (``ohem_fraction``: see :func:`segmentation_loss`).

    Args:
        logits_seq: (B, T, K, h, w) per-step logits of a recurrent model.
        target: (B, H, W) labels of the labelled frame.
        label_pos: (B,) index of the labelled frame in each clip.
    """
    idx = torch.arange(logits_seq.shape[0], device=logits_seq.device)
    logits = logits_seq[idx, label_pos.to(logits_seq.device)]
    return segmentation_loss(logits, target, ignore_index, class_balanced, ohem_fraction)
