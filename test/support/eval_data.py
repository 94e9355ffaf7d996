"""A tiny checkpoint and a one-sequence folder dataset for `vidseg eval` tests (the eval test files shared
copies of both)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint


def tiny_fpn(path: Path, classes=('bg', 'obj'), cached_levels: int = 0, input_hw=(64, 64)) -> Path:
    """An untrained key-frame FPN (16 channels) saved with ``classes`` (ignore 255), seeded."""
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=len(classes), cached_levels=cached_levels, fpn_ch=16)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=list(classes),
                        palette=[[9 * i % 256] * 3 for i in range(len(classes))], ignore_index=255,
                        input_hw=list(input_hw))
    return save_checkpoint(path, model, meta)


def folder_dataset(root: Path, images, labels, stamps_ns=None, classes=('bg', 'obj')) -> Path:
    """Sequence 's' of ``images`` (BGR) with ``labels`` (None: that frame has no label) at ``stamps_ns``
    (default a frame every 0.1 s); dataset.yaml names ``classes`` (None: none) with ignore 255."""
    (root / 'images' / 's').mkdir(parents=True)
    (root / 'labels' / 's').mkdir(parents=True)
    records = []
    for i, (image, label) in enumerate(zip(images, labels)):
        image_path, label_path = root / 'images' / 's' / f'{i}.png', root / 'labels' / 's' / f'{i}.png'
        cv2.imwrite(os.fsencode(image_path), image)
        if label is not None:
            cv2.imwrite(os.fsencode(label_path), label)
        stamp = i * 100_000_000 if stamps_ns is None else stamps_ns[i]
        records.append(FrameRecord('s', i, image_path, label_path if label is not None else None, stamp,
                                   'human' if label is not None else ''))
    write_index(root, records)
    write_meta(root, {**({'classes': list(classes)} if classes else {}), 'ignore_index': 255})
    return root


def noise_images(labels, hw=None, seed: int = 0) -> list[np.ndarray]:
    """Random BGR frames of each label's size (or ``hw``)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*(hw or label.shape), 3), np.uint8) for label in labels]


def tiny_train_config(tmp_path: Path, epochs: int) -> Path:
    """A `vidseg train` config of a 16-channel key-frame FPN on six 64x64 noise frames (left half class 0,
    right half 1) under ``tmp_path``: an epoch takes a fraction of a second, its run folder is runs/t."""
    n = 6
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    labels = [np.where(np.arange(64)[None, :] < 32, 0, 1).repeat(64, 0).astype(np.uint8) for _ in range(n)]
    folder_dataset(tmp_path / 'drive', images, labels)
    config = tmp_path / 'c.yaml'
    config.write_text(yaml.safe_dump({
        'name': 't', 'arch': 'keyframe_fpn', 'arch_config': {'fpn_ch': 16}, 'dataset': 'folder',
        'data_root': str(tmp_path / 'drive'), 'train_split': 'all', 'val_split': '', 'input_hw': [64, 64],
        'batch_size': 2, 'epochs': epochs, 'num_threads': 1, 'device': 'cpu', 'hflip': False,
        'runs_dir': str(tmp_path / 'runs'), 'output': str(tmp_path / 'model.pt')}))
    return config
