"""Segmentation models: one registry string per architecture, used everywhere.

``create_model(name, **kw)`` looks ``name`` up in ``MODELS``; the same key appears in YAML configs,
the CLI, the ``model`` ROS parameter and a checkpoint's ``meta['arch']``. A model class follows the
contract of ``models.contract`` (one base per streaming kind); ``register_model`` adds one, which is
all the engine, export, training and checkpoints need to use it.
"""
from __future__ import annotations

import inspect

from vidseg_ros.models.blocks import BLOCKS
from vidseg_ros.models.contract import (FrameModel, KeyframeModel, RecurrentModel, SegmentationModel, StreamInfo,
                                        stream_info)
from vidseg_ros.models.keyframe_fpn import KeyframeFPN, TruncatedFPN
from vidseg_ros.models.recurrent_fpn import RecurrentFPN
from vidseg_ros.models.recurrent_unet import RecurrentUNet

MODELS: dict[str, type[SegmentationModel]] = {
    'keyframe_fpn': KeyframeFPN,
    'truncated_fpn': TruncatedFPN,
    'recurrent_unet': RecurrentUNet,
    'recurrent_fpn': RecurrentFPN,
}


def register_model(name: str, cls: type[SegmentationModel]) -> type[SegmentationModel]:
    """Add ``cls`` to ``MODELS`` under ``name``; returns ``cls``.

    Raises:
        TypeError: ``cls`` does not derive from a base of ``models.contract``.
        ValueError: ``name`` is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, (FrameModel, KeyframeModel, RecurrentModel))):
        raise TypeError(f'model {name!r}: {cls!r} must derive from FrameModel, KeyframeModel or RecurrentModel '
                        '(vidseg_ros.models.contract)')
    if MODELS.get(name, cls) is not cls:
        raise ValueError(f'model name {name!r} is taken by {MODELS[name].__name__}')
    MODELS[name] = cls
    return cls


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


def create_model(name: str, **kw) -> SegmentationModel:
    """Build a model by registry key; ``model.arch`` and ``model.arch_config`` record how.

    Raises:
        ValueError: ``name`` is not a key of ``MODELS`` (the message lists the valid keys).
    """
    config = resolve_arch_config(name, **kw)
    model = _lookup(name)(**config)
    model.arch, model.arch_config = name, config
    return model


def _lookup(name: str) -> type[SegmentationModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f'unknown model {name!r}; valid models: {", ".join(sorted(MODELS))}') from None


__all__ = ['MODELS', 'BLOCKS', 'create_model', 'register_model', 'resolve_arch_config', 'KeyframeFPN',
           'TruncatedFPN', 'RecurrentUNet', 'RecurrentFPN', 'SegmentationModel', 'FrameModel', 'KeyframeModel',
           'RecurrentModel', 'StreamInfo', 'stream_info']
