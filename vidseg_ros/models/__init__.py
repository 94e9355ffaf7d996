"""Segmentation models: one registry string per architecture, used everywhere.

``create_model(name, **kw)`` looks ``name`` up in ``MODELS``; the same key appears in YAML configs,
the CLI, the ``model`` ROS parameter and a checkpoint's ``meta['arch']``. A model class follows the
contract of ``models.contract`` (one base per streaming kind); ``register_model`` adds one, which is
all the engine, export, training and checkpoints need to use it.
"""
from __future__ import annotations

import inspect
import typing

from vidseg_ros.config import ConfigError, coerce, did_you_mean
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
        TypeError: ``cls`` does not derive from a base of ``models.contract``, or leaves a core method of its
            base unimplemented (it failed only when run: a bare NotImplementedError from training or export).
        ValueError: ``name`` is taken by another class.
    """
    bases = (FrameModel, KeyframeModel, RecurrentModel)
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        raise TypeError(f'model {name!r}: {cls!r} must derive from FrameModel, KeyframeModel or RecurrentModel '
                        '(vidseg_ros.models.contract)')
    for base in (b for b in bases if issubclass(cls, b)):
        if missing := [m for m in base.core_methods if getattr(cls, m) is getattr(base, m)]:
            raise TypeError(f'model {name!r}: {cls.__name__} derives from {base.__name__} but does not implement '
                            f'{", ".join(missing)} (vidseg_ros.models.contract)')
    if MODELS.get(name, cls) is not cls:
        raise ValueError(f'model name {name!r} is taken by {MODELS[name].__name__}')
    MODELS[name] = cls
    return cls


class ArchConfigError(ConfigError, TypeError):
    """Constructor arguments that do not fit a model: an unknown name or a value of the wrong type.

    A ConfigError (a ValueError: the CLI's exit 2, naming the key) and, as before, a TypeError."""


def resolve_arch_config(name: str, **kw) -> dict:
    """All constructor arguments of ``MODELS[name]`` with defaults filled in (stored in checkpoints).

    Raises:
        ArchConfigError: an argument the constructor does not take, or of another type than annotated.
    """
    cls = _lookup(name)
    signature = inspect.signature(cls.__init__)
    valid = [p for p in signature.parameters if p != 'self']
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [] if takes_any else [k for k in kw if k not in valid]
    if unknown:
        given = ', '.join(k + did_you_mean(k, valid) for k in unknown)
        raise ArchConfigError(f'{name}: unknown argument(s) {given}; valid arguments: {", ".join(valid)}')
    bound = signature.bind(None, **kw)
    bound.apply_defaults()
    config = {k: v for k, v in bound.arguments.items() if k != 'self'}
    config.update(_checked_types(cls, name, kw))
    return config


def _checked_types(cls: type, name: str, kw: dict) -> dict:
    """``kw`` checked against the constructor's annotations (int -> float as for settings): a wrong type
    would fail deep inside the model, e.g. fpn_ch: '64' as 'not all arguments converted'."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - a registered model's annotations may not resolve: nothing to check
        hints = {}
    try:
        return {k: coerce(v, hints[k], k) if k in hints else v for k, v in kw.items()}
    except ConfigError as e:
        raise ArchConfigError(f'{name}: {e}') from None


def create_model(name: str, **kw) -> SegmentationModel:
    """Build a model by registry key; ``model.arch`` and ``model.arch_config`` record how.

    Raises:
        ValueError: ``name`` is not a key of ``MODELS`` (the message lists the valid keys).
        ArchConfigError: see ``resolve_arch_config``.
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


__all__ = ['MODELS', 'BLOCKS', 'ArchConfigError', 'create_model', 'register_model', 'resolve_arch_config', 'KeyframeFPN',
           'TruncatedFPN', 'RecurrentUNet', 'RecurrentFPN', 'SegmentationModel', 'FrameModel', 'KeyframeModel',
           'RecurrentModel', 'StreamInfo', 'stream_info']
