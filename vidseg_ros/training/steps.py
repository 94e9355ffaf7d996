"""One optimiser step per training mode: single frames, key-frame triplets, recurrent clips."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from vidseg_ros.config import ConfigError
from vidseg_ros.constants import IMAGENET_MEAN, IMAGENET_STD
from vidseg_ros.models.contract import KeyframeSplit, Stepper

from .config import TrainConfig
from .losses import keyframe_triplet_loss, segmentation_loss, sequence_loss, triplet_outputs
from .temporal import temporal_consistency_loss

# Datasets deliver 0..1 RGB; the trainer (like the engine) normalises with these, stored in meta.
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) in 0..1 -> ImageNet-normalised."""
    shape = (3, 1, 1)
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(shape)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(shape)
    return (x - mean) / std


# What each training mode calls on the model beyond ``forward`` (models.contract).
MODE_NEEDS = {'keyframe': (KeyframeSplit, 'the key-frame split encode_low / encode_high / decode '
                                          '(KeyframeModel)'),
              'sequence': (Stepper, 'step(frame, state) (RecurrentModel)')}


def check_mode(model: nn.Module, mode: str) -> None:
    """Raise a ConfigError naming the contract when ``model`` cannot be trained in ``mode``."""
    need = MODE_NEEDS.get(mode)
    if need is not None and not isinstance(model, need[0]):
        name = getattr(model, 'arch', type(model).__name__)
        raise ConfigError(f'mode: {mode} needs a model with {need[1]}; {name} has none: use mode: perframe '
                          'or another arch')


def frame_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits for single frames (recurrent models start from a zero state)."""
    return model(x)


def clip_logits(model: Stepper, clip: torch.Tensor, tbptt: int = 0) -> torch.Tensor:
    """(B, T, K, H, W) logits of a recurrent model; ``tbptt`` > 0 detaches the state every k steps."""
    if not tbptt:
        return model(clip)
    state, outs = None, []
    for t in range(clip.shape[1]):
        if t and t % tbptt == 0 and state:
            state = tuple(s.detach() for s in state)
        logits, state = model.step(clip[:, t], state)
        outs.append(logits)
    return torch.stack(outs, 1)


@dataclass
class Batch:
    """A collated sample dict moved to the device."""

    data: dict

    @classmethod
    def from_dict(cls, raw: dict, device) -> Batch:
        return cls({k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in raw.items()})

    def __getitem__(self, key):
        return self.data[key]


class _TripletForward(nn.Module):
    """Wraps the key-frame passes in one ``forward`` so DistributedDataParallel can sync them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, key, current):
        return triplet_outputs(self.model, key, current)


class _ClipForward(nn.Module):
    """Wraps the clip pass (the truncated-BPTT loop over ``step`` included) in one ``forward``: DDP averages
    gradients only for passes through its own forward; ``step`` called on the bare model left every rank with
    its own gradients and its own weights."""

    def __init__(self, model: nn.Module, tbptt: int):
        super().__init__()
        self.model, self.tbptt = model, tbptt

    def forward(self, clip):
        return clip_logits(self.model, clip, self.tbptt)


class StepRunner:
    """Runs forward, loss, backward and the optimiser update for ``cfg.mode``.

    Args:
        cfg: run settings (mode, loss options, AMP).
        model: the model being trained (already on ``device``).
        device: where the batch lives.
        world: DDP world size; the model is wrapped in DistributedDataParallel when > 1.
        teacher: optional frozen model that labels key frames without labels.
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device, world: int = 1,
                 teacher: nn.Module | None = None):
        check_mode(model, cfg.mode)
        self.cfg, self.device, self.teacher = cfg, device, teacher
        self.use_amp = cfg.amp and device.type == 'cuda'
        self.scaler = torch.amp.GradScaler('cuda') if self.use_amp else None
        # every pass goes through one forward, so DDP sees it and averages the gradients
        net = {'keyframe': lambda: _TripletForward(model), 'sequence': lambda: _ClipForward(model, cfg.tbptt),
               'perframe': lambda: model}[cfg.mode]()
        if world > 1:
            ids = [device.index] if device.type == 'cuda' else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.net = net

    def _autocast(self):
        if self.use_amp:
            return torch.autocast('cuda', dtype=torch.float16)
        return contextlib.nullcontext()

    def loss(self, batch: Batch, clips: Batch | None = None) -> tuple[torch.Tensor, dict]:
        """Loss tensor and its logged parts for one batch (+ the temporal term on real ``clips``)."""
        loss, parts = self._labelled_loss(batch)
        if clips is None or not self.cfg.temporal_weight:
            return loss, parts
        with self._autocast():
            logits = self.net(normalize(clips['frames']))
        temporal = temporal_consistency_loss(logits, clips['frames'])
        return loss + self.cfg.temporal_weight * temporal, {**parts, 'loss_labelled': float(loss.detach()),
                                                            'loss_temporal': float(temporal.detach())}

    def _labelled_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        with self._autocast():
            if cfg.mode == 'perframe':
                logits = frame_logits(self.net, normalize(batch['image']))
                loss = segmentation_loss(logits, batch['label'], cfg.ignore_index, cfg.class_balanced,
                                         cfg.ohem_fraction)
                return loss, {}
            if cfg.mode == 'keyframe':
                key_target = self._key_targets(batch)
                out = self.net(normalize(batch['key']), normalize(batch['current']))
                parts = keyframe_triplet_loss(out, batch['label'], key_target, batch['distance'],
                                              cfg.ignore_index, cfg.feature_weight, cfg.class_balanced)
                return parts.total, {'loss_current': float(parts.current), 'loss_key': float(parts.key),
                                     'loss_self': float(parts.self_key),
                                     'loss_feature': float(parts.feature)}
            logits = self.net(normalize(batch['frames']))
            pos = batch['label_pos']
            idx = torch.arange(pos.shape[0], device=pos.device)
            target = batch['labels'][idx, pos]
            return sequence_loss(logits, target, pos, cfg.ignore_index, cfg.class_balanced, cfg.ohem_fraction), {}

    @torch.no_grad()
    def _key_targets(self, batch: Batch) -> torch.Tensor:
        """Key-frame labels; samples whose key label is all-ignore get the teacher's prediction."""
        key_target = batch['key_label'].clone()
        if self.teacher is None:
            return key_target
        empty = (key_target == self.cfg.ignore_index).flatten(1).all(1)
        if empty.any():
            logits = frame_logits(self.teacher, normalize(batch['key'][empty]))
            logits = nn.functional.interpolate(logits.float(), size=key_target.shape[-2:],
                                               mode='bilinear', align_corners=False)
            key_target[empty] = logits.argmax(1)
        return key_target

    def step(self, batch: Batch, optimizer: torch.optim.Optimizer, clips: Batch | None = None) -> dict:
        """One optimiser update; returns ``{'loss': float, ...parts}``."""
        optimizer.zero_grad(set_to_none=True)
        loss, parts = self.loss(batch, clips)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return {'loss': float(loss.detach()), **parts}
