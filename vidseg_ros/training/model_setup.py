"""The model a run trains: built from its config (optionally warm-started from a checkpoint), partly frozen; and
the keyframe teacher, checked against the run's classes."""
from __future__ import annotations

import logging

import torch

from vidseg_ros.config import ConfigError

from .config import TrainConfig

log = logging.getLogger(__package__ + '.loop')     # messages of the training loop, under its name


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, dict | None]:
    """``create_model(cfg.arch, num_classes=..., **cfg.arch_config)``, optionally warm-started.

    With ``init_from`` every tensor whose name and shape match is transferred, the rest (the
    classifier when the class count differs) keeps its fresh initialisation; the transfer report
    (counts, the source's classes and licence) is returned for the checkpoint's provenance.
    """
    from vidseg_ros.models import create_model
    model = create_model(cfg.arch, num_classes=cfg.num_classes, **cfg.arch_config)
    if not cfg.init_from:
        return model, None
    from vidseg_ros.engine.stream import resolve_model
    from vidseg_ros.models.checkpoint import init_from_checkpoint
    init = init_from_checkpoint(model, resolve_model(cfg.init_from))   # a path or a shipped model's name
    log.info('initialised from %s: %d tensors kept, %d re-initialised%s, %d unused', init['from'],
             init['kept'], init['reinitialised'],
             f' ({", ".join(init["reinitialised_names"][:4])})' if init['reinitialised'] else '', init['unused'])
    return model, init


def freeze(model: torch.nn.Module, prefixes: list[str]) -> list[torch.nn.Module]:
    """Fix every parameter under the dotted name ``prefixes``; returns the modules to keep in eval mode.

    Raises:
        ConfigError: a prefix names nothing in the model (the message lists its top-level parts), or
            nothing would be left to train.
    """
    if not prefixes:
        return []
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for prefix in prefixes:
        if prefix not in modules and prefix not in params:
            parts = ', '.join(name for name, _ in model.named_children())
            raise ConfigError(f'freeze: {prefix!r} names no part of {getattr(model, "arch", "the model")}; '
                              f'its parts: {parts}')
    for name, p in params.items():
        if is_frozen(name, prefixes):
            p.requires_grad_(False)
    if not any(p.requires_grad for p in params.values()):
        raise ConfigError(f'freeze: {prefixes} fixes every parameter; nothing would be trained')
    return [m for name, m in modules.items() if name and is_frozen(name, prefixes)]


def is_frozen(name: str, prefixes: list[str]) -> bool:
    """Whether the parameter or module ``name`` lies under one of the dotted ``prefixes`` of ``freeze``."""
    return any(name == f or name.startswith(f + '.') for f in prefixes)


def load_teacher(cfg: TrainConfig, info: dict, device) -> torch.nn.Module:
    """The keyframe teacher in eval mode; ConfigError when it predicts another class set than the run
    trains (its masks would be labels of other classes). Names compare as ``same_class_names`` says
    (the rule ``vidseg propagate --method teacher`` uses)."""
    from vidseg_ros.data.datasets.labels import same_class_names
    from vidseg_ros.models.checkpoint import CheckpointError, load_checkpoint

    from .checkpoint_meta import class_info
    try:
        teacher, meta = load_checkpoint(cfg.teacher)
    except CheckpointError as e:
        raise ConfigError(f'teacher: {e}') from None
    theirs, ours = list(meta['classes']), class_info(cfg, info)[0]
    named = bool(info['names'])     # without names in the data only the count can be compared
    if len(theirs) != len(ours) or (named and not same_class_names(theirs, ours)):
        raise ConfigError(f'teacher: {cfg.teacher} predicts {len(theirs)} classes ({", ".join(theirs)[:200]}), this '
                          f'run trains {len(ours)} ({", ".join(ours)[:200]}); use a teacher trained on this class '
                          'set, or none')
    return teacher.to(device).eval()


def unwrap(model):
    return model.module if hasattr(model, 'module') else model
