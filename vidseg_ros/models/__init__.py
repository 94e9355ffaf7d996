"""Segmentation models: one registry string per architecture, used everywhere.

``create_model(name, **kw)`` looks ``name`` up in ``MODELS``; the same key appears in YAML configs,
the CLI, the ``model`` ROS parameter and a checkpoint's ``meta['arch']``.
"""
from __future__ import annotations

import inspect

from torch import nn

from vidseg_ros.models.blocks import BLOCKS
from vidseg_ros.models.keyframe_fpn import KeyframeFPN, TruncatedFPN
from vidseg_ros.models.recurrent_unet import RecurrentUNet

MODELS: dict[str, type[nn.Module]] = {
    'keyframe_fpn': KeyframeFPN,
    'truncated_fpn': TruncatedFPN,
    'recurrent_unet': RecurrentUNet,
}


def resolve_arch_config(name: str, **kw) -> dict:
    """All constructor arguments of ``MODELS[name]`` with defaults filled in (stored in checkpoints)."""
    cls = _lookup(name)
    try:
        bound = inspect.signature(cls.__init__).bind(None, **kw)
    except TypeError as e:
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != 'self']
        raise TypeError(f'{name}: {e}; valid arguments: {", ".join(valid)}') from None
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != 'self'}


def create_model(name: str, **kw) -> nn.Module:
    """Build a model by registry key; ``model.arch`` and ``model.arch_config`` record how.

    Raises:
        ValueError: ``name`` is not a key of ``MODELS`` (the message lists the valid keys).
    """
    config = resolve_arch_config(name, **kw)
    model = _lookup(name)(**config)
    model.arch, model.arch_config = name, config
    return model


def _lookup(name: str) -> type[nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f'unknown model {name!r}; valid models: {", ".join(sorted(MODELS))}') from None


__all__ = ['MODELS', 'BLOCKS', 'create_model', 'resolve_arch_config', 'KeyframeFPN', 'TruncatedFPN',
           'RecurrentUNet']
