"""The public datasets' folder layouts (CamVid, DAVIS, Cityscapes) and ``open_source``, the one opener.

``open_source`` tells a folder's layout (``guess_layout``: one of these, or an extracted dataset, which
``layouts.extracted_source`` reads) and picks the frames of one split: a split folder, sequences, or the
temporal head / tail of every sequence (``temporal_part``). Everything here is plain files: no torch, no ROS.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from vidseg_ros.config import ConfigError
from vidseg_ros.constants import (CAMVID_CLASSES, CAMVID_FPS, CAMVID_VOID, CITYSCAPES_CLASSES, CITYSCAPES_FPS,
                                  DAVIS_CLASSES, DAVIS_FPS)
from vidseg_ros.data.datasets.layouts import (DEFAULT_IGNORE, FrameRecord, FrameSource, extracted_source, has_index,
                                              identity_lut)

log = logging.getLogger(__name__)


_CAMVID_NAME = re.compile(r'^(?P<seq>.+)_f?(?P<num>\d+)$')


def camvid_source(root: str | Path, split: str = 'train') -> FrameSource:
    """CamVid (SegNet layout): ``<split>/<SEQ>_<FRAME>.png|webp`` with ``<split>annot/`` labels.

    Labels keep CamVid's values: classes 0..10 and void = 11, which is the ignore index.
    """
    root = Path(root)
    img_dir, lab_dir = root / split, root / f'{split}annot'
    if not img_dir.is_dir():
        raise FileNotFoundError(f'no CamVid split folder {img_dir}')
    records = []
    # hidden files left out: a macOS ._0001TP_006690.png became a sequence '._0001TP' of an unreadable frame
    for img in sorted(p for p in img_dir.iterdir()
                      if p.suffix.lower() in ('.png', '.webp', '.jpg') and not p.name.startswith('.')):
        m = _CAMVID_NAME.match(img.stem)
        if not m:
            log.warning('skipping %s: name is not <SEQ>_<FRAME>', img)
            continue
        num = int(m['num'])
        lab = lab_dir / (img.stem + '.png')
        records.append(FrameRecord(m['seq'], num, img, lab if lab.is_file() else None,
                                   stamp_ns=int(round(num * 1e9 / CAMVID_FPS)),
                                   label_source='human' if lab.is_file() else 'none'))
    return FrameSource(records, list(CAMVID_CLASSES), CAMVID_VOID,
                       identity_lut(CAMVID_VOID, CAMVID_VOID + 1), name=f'camvid-{split}',
                       fps=CAMVID_FPS)


def davis_source(root: str | Path, sequences: list[str] | None = None,
                 resolution: str = '480p') -> FrameSource:
    """DAVIS layout: ``JPEGImages/480p/<seq>/00000.jpg`` and ``Annotations/480p/<seq>/00000.png``.

    Binary (DAVIS 2016): mask 0 -> background 0, anything else -> object 1. Multi-object DAVIS 2017
    masks would need ``--classes``; here every nonzero id becomes the foreground class.
    """
    root = Path(root)
    img_root, lab_root = root / 'JPEGImages' / resolution, root / 'Annotations' / resolution
    if not img_root.is_dir():
        raise FileNotFoundError(f'no DAVIS image folder {img_root}')
    names = sequences or sorted(p.name for p in img_root.iterdir() if p.is_dir() and not p.name.startswith('.'))
    records = []
    for seq in names:
        # pathlib's * matches hidden names too: a macOS ._00000.jpg stopped the opener with int('._00000')
        for img in sorted(p for p in (img_root / seq).glob('*.jpg') if not p.name.startswith('.')):
            idx = int(img.stem)
            lab = lab_root / seq / (img.stem + '.png')
            records.append(FrameRecord(seq, idx, img, lab if lab.is_file() else None,
                                       stamp_ns=int(round(idx * 1e9 / DAVIS_FPS)),
                                       label_source='human' if lab.is_file() else 'none'))
    lut = np.ones(256, np.uint8)
    lut[0] = 0
    return FrameSource(records, list(DAVIS_CLASSES), DEFAULT_IGNORE, lut, name='davis',
                       fps=DAVIS_FPS)


def cityscapes_source(root: str | Path, split: str = 'train') -> FrameSource:
    """Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/..._labelTrainIds.png``.

    Uses the *labelTrainIds* files (19 classes, 255 ignore) that cityscapesScripts generates.
    """
    root = Path(root)
    img_root = root / 'leftImg8bit' / split
    if not img_root.is_dir():
        raise FileNotFoundError(f'no Cityscapes folder {img_root}')
    records = []
    for img in sorted(img_root.glob('*/*_leftImg8bit.png')):
        city, seq, frame = img.stem.split('_')[:3]
        lab = (root / 'gtFine' / split / img.parent.name /
               img.name.replace('_leftImg8bit.png', '_gtFine_labelTrainIds.png'))
        records.append(FrameRecord(f'{city}_{seq}', int(frame), img, lab if lab.is_file() else None,
                                   stamp_ns=int(round(int(frame) * 1e9 / CITYSCAPES_FPS)),
                                   label_source='human' if lab.is_file() else 'none'))
    return FrameSource(records, list(CITYSCAPES_CLASSES), DEFAULT_IGNORE, identity_lut(DEFAULT_IGNORE, 19),
                       name=f'cityscapes-{split}', fps=CITYSCAPES_FPS)



LAYOUTS = ('camvid', 'davis', 'folder', 'cityscapes')
# DAVIS and extracted video have no train split here: each sequence is cut in time, the head trains
# and the tail validates (a gap keeps near-duplicate neighbouring frames out of validation).
HEAD_FRACTION = 0.7
HEAD_TAIL_GAP = 5


def guess_layout(root: str | Path, split: str = 'train') -> str:
    """The layout of a dataset folder: folder (index.csv), davis (JPEGImages/), cityscapes, camvid."""
    root = Path(root)
    if has_index(root):
        return 'folder'
    if (root / 'JPEGImages').is_dir():
        return 'davis'
    if (root / 'leftImg8bit').is_dir():
        return 'cityscapes'
    if (root / split).is_dir() or any(p.name.endswith('annot') for p in root.iterdir() if p.is_dir()):
        return 'camvid'
    raise FileNotFoundError(f'{root}: not an extracted dataset (index.csv), DAVIS (JPEGImages/), '
                            f'Cityscapes (leftImg8bit/) or CamVid ({split}/, {split}annot/) folder')


def does_not_exist(path: str | Path) -> str:
    """'<path> does not exist', and for a relative path where it was looked for: the shipped configs'
    ``../shared/data/camvid`` is relative to the current folder, not to the config or the package."""
    where = '' if Path(path).is_absolute() else (f' (relative paths are read from the current folder '
                                                 f'{os.getcwd()}: that is {os.path.abspath(path)})')
    return f'{path} does not exist{where}; give an absolute path, or run from the folder it is relative to'


def open_source(spec: str | Path, split: str = 'train', layout: str = 'auto') -> FrameSource:
    """The one dataset opener (training, evaluation, variants, experiments): the frames of one split.

    Args:
        spec: the dataset folder.
        split: CamVid: the split folder's name, optionally ``:SEQ1,SEQ2`` (whole drives); Cityscapes:
            the split folder's name. DAVIS and folder (a ``vidseg extract`` /
            ``label-import`` dataset, which have no split folders): ``all`` (``train`` and ``val`` mean
            the same), ``head`` (first 70% of every sequence), ``tail`` (after a 5-frame gap), or
            sequence names ``seq1,seq2`` optionally followed by ``:head`` / ``:tail``.
        layout: ``auto`` (guessed from the folder), ``camvid``, ``davis``, ``folder`` (also called
            ``extracted``) or ``cityscapes``.
    """
    root = Path(spec)
    if not root.exists():
        raise FileNotFoundError(does_not_exist(root))
    layout = 'folder' if layout == 'extracted' else guess_layout(root, split) if layout == 'auto' else layout
    if layout == 'camvid':
        folder, _, seqs = split.partition(':')
        if not (root / folder).is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and (root / f'{p.name}annot').is_dir())
            raise FileNotFoundError(f'{root}: no CamVid split {folder!r} ({folder}/ and {folder}annot/); '
                                    f'splits here: {", ".join(found) or "none"} (pass --split)')
        return _sequences(camvid_source(root, folder), seqs)
    if layout == 'cityscapes':
        return cityscapes_source(root, split)
    if layout not in LAYOUTS:
        raise ValueError(f'unknown dataset layout {layout!r}; valid: auto, {", ".join(LAYOUTS)}')
    seqs, _, part = split.partition(':')
    if seqs in ('train', 'val', 'all', 'head', 'tail'):
        seqs, part = '', part or seqs
    src = _sequences(extracted_source(root) if layout == 'folder' else davis_source(root), seqs)
    return src.subset(temporal_part(src, 'all' if part in ('', 'train', 'val') else part))


def _sequences(src: FrameSource, names: str) -> FrameSource:
    """The records of the comma-separated sequences ``names`` (all when empty); unknown ones named."""
    wanted = {s for s in names.split(',') if s}
    missing = sorted(wanted - set(src.sequences()))
    if missing:
        has = ", ".join(sorted(src.sequences()))[:200]    # an index of a header only: "it has" and nothing
        raise ConfigError(f'{src.name}: no sequence {", ".join(missing)[:200]}; '
                          f'{f"it has {has}" if has else "it has no frames (its index lists none)"}')
    return src.subset([r for r in src.records if r.sequence in wanted]) if wanted else src


def temporal_part(src: FrameSource, part: str) -> list[FrameRecord]:
    """Records of the temporal ``head`` (first 70%) or ``tail`` (after a 5-frame gap) of every
    sequence, or ``all``."""
    if part == 'all':
        return list(src.records)
    if part not in ('head', 'tail'):
        raise ValueError(f'unknown split part {part!r}; use head, tail or all')
    out = []
    for recs in src.sequences().values():
        cut = int(len(recs) * HEAD_FRACTION)
        out += recs[:cut] if part == 'head' else recs[cut + HEAD_TAIL_GAP:]
    return out
