"""Which classes the training labels hold, counted from the batches the loop reads (no extra pass over the data).

A run whose labels hold one class (a two-class dataset whose masks are all background) trained a model that
predicts that class on every pixel, scored val mIoU 1.0 on such data and was written as trained, in silence; classes
the dataset names but never labels cannot be learnt and were not mentioned either. Both are warned about now.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.distributed as dist

from vidseg_ros.text import clip

log = logging.getLogger(__name__)
LABEL_KEYS = ('label', 'labels')      # the human labels of a batch (as the loop's labelled-pixel count reads them)


def class_pixels(raw: dict, ignore_index: int, num_classes: int) -> np.ndarray:
    """(num_classes,) pixels of each class in a batch's human labels."""
    counts = np.zeros(num_classes, np.int64)
    for key in LABEL_KEYS:
        if key in raw:
            lab = torch.as_tensor(raw[key]).flatten()
            lab = lab[(lab != ignore_index) & (lab >= 0) & (lab < num_classes)]
            counts += torch.bincount(lab, minlength=num_classes)[:num_classes].numpy()
    return counts


def summed_over_ranks(counts: np.ndarray, device, world: int) -> np.ndarray:
    """``counts`` summed over the ranks (every rank takes part, so every rank decides the same)."""
    if world == 1:
        return counts
    total = torch.tensor(counts, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.cpu().numpy().astype(np.int64)


def check_classes_present(counts: np.ndarray, train_set, names: list[str] | None, ignore_index: int) -> None:
    """After a run's first epoch: a warning when its labels hold one class only, or naming the classes that did
    not occur. ``counts``: pixels per class of the epoch's batches (cropped and augmented, so a class in a corner
    may be missed; the one-class case is confirmed on the label files of ``train_set`` where it has them).

    One class is a warning, not an error: such a run still completes (a BatchNorm-statistics run at lr 0, a smoke
    test on placeholder labels)."""
    names = list(names or []) + [str(i) for i in range(len(names or []), len(counts))]
    present = np.flatnonzero(counts)
    if len(present) == 1:
        in_files = classes_in_label_files(train_set, len(counts), ignore_index)
        if in_files is None or len(in_files) <= 1:
            only = int(present[0])
            log.warning('the training labels hold one class only (%d %r of %d): the model learns to predict it on '
                        'every pixel (loss towards 0, mIoU 1 on data like it), which segments nothing; label the '
                        'other classes in some frames too', only, clip(names[only], 60), len(counts))
            return
        present = in_files
    # the ignore id, when it is a class too, is said by data_setup.resolve_classes
    missing = [names[i] for i in range(len(counts)) if i not in set(present.tolist()) and i != ignore_index]
    if len(present) and missing:
        more = f' and {len(missing) - 20} more' if len(missing) > 20 else ''
        log.warning('%d of %d classes never occurred in the training labels of the first epoch (as cropped and '
                    'augmented): %s%s; the model cannot learn them: label frames where they occur, or leave them out '
                    'of the classes', len(missing), len(counts), clip(', '.join(map(repr, missing[:20])), 600), more)


def classes_in_label_files(train_set, num_classes: int, ignore_index: int) -> np.ndarray | None:
    """The classes in the label files of ``train_set`` (a training dataset with ``items`` and ``source``), read
    whole, ``ignore_index`` left out; None for a set without them."""
    items, source = getattr(train_set, 'items', None), getattr(train_set, 'source', None)
    if items is None or source is None:
        return None
    counts = np.zeros(num_classes, np.int64)
    for rec in items:
        lab = source.read_label(rec)
        if lab is not None:
            counts += np.bincount(lab.ravel(), minlength=256)[:num_classes]
    if 0 <= ignore_index < num_classes:
        counts[ignore_index] = 0
    return np.flatnonzero(counts)
