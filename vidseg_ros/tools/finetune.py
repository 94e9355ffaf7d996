"""``vidseg finetune``: one-shot adaptation to one annotated frame, then label the whole sequence.

As in one-shot video object segmentation: a trained model is fine-tuned on a single labelled frame
with random scale/crop/flip/colour augmentation (the same draw for image and mask), with
class-balanced cross-entropy because the object is usually small. A binary object mask (0/255, e.g.
DAVIS) on a model of more classes replaces the classifier by a fresh two-class one; any other mask
holds class ids of the model's classes (a 0/1 mask too: ids 0 and 1, not an object mask, unless the
model has two classes, where both readings agree). The adapted model then segments every frame of
the sequence through the streaming engine. ``finetune.json`` (settings and result) is written last: an output
folder without it holds an unfinished run (interrupted, failed); the same command runs it again.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from vidseg_ros.constants import DAVIS_CLASSES, DAVIS_PALETTE, MAX_INPUT_PIXELS
from vidseg_ros.training import augment
from vidseg_ros.training.augment import AugmentConfig
from vidseg_ros.data.image_headers import file_image_hw
from vidseg_ros.data.images import check_pixels, clip, palette_index_pixels, read_label_pixels, write_image_atomic
from vidseg_ros.data.video import IMAGE_SUFFIXES, image_files, read_frame
from vidseg_ros.data.datasets.labels import id_pixels_8bit
from vidseg_ros.data.datasets.layouts import check_new_output
from vidseg_ros.data.datasets.layouts import DEFAULT_IGNORE
from vidseg_ros.data.datasets.lock import dataset_lock
from vidseg_ros.files import write_file_atomic
from vidseg_ros.training.label_ids import beyond_summary, beyond_text, ids_beyond
from vidseg_ros.training.metrics import json_ready

log = logging.getLogger(__name__)


def _read_mask(path: Path) -> np.ndarray:
    """A one-channel mask (class ids, or 0/255), read as training reads labels: a paletted PNG (a DAVIS 2017
    annotation) by its indices, 16-bit ids 0..255, turned by an EXIF orientation like the frame. Sized from its
    header first: a 20000x20000 --label was decoded whole (gigabytes) before any check."""
    check_pixels(*file_image_hw(path), MAX_INPUT_PIXELS, f'label {clip(path)}')
    mask, palette = read_label_pixels(path)
    if mask is None:
        raise FileNotFoundError(f'cannot read label {path}')
    if mask.ndim == 3 and palette:
        mask = palette_index_pixels(path, mask[:, :, :3], palette, DEFAULT_IGNORE)
    if mask.ndim == 3:
        raise ValueError(f'{path} is a colour image; give a class-id PNG (one channel)')
    return id_pixels_8bit(mask, path)


def _object_mask(mask: np.ndarray, classes: list[str], ignore: int, path: Path) -> bool:
    """Whether ``mask`` is a binary object mask: 0/255, or 0/1 for a two-class model (both readings agree).

    Otherwise its values must be the model's class ids (or ``ignore``).
    """
    values = set(np.unique(mask).tolist())
    if (255 in values and values <= {0, 255}) or (len(classes) == 2 and values <= {0, 1}):
        return True
    bad = sorted(v for v in values if v >= len(classes) and v != ignore)
    if bad:
        raise ValueError(f'label {path} holds {bad[:5]}: neither class ids of the model\'s {len(classes)} '
                         f'classes (0..{len(classes) - 1}) nor its ignore value {ignore}, nor a 0/255 object mask')
    return False


def _check_two_classes(mask: np.ndarray, binary: bool, classes: list[str], ignore: int, path: Path) -> None:
    """Refuse a label of one class: 100 steps on it taught the model to predict that class on every pixel
    (an all-0 object mask: no object anywhere), and it was written and used to label the sequence, exit 0."""
    present = [int(v) for v in np.unique(mask) if v != ignore]
    if len(present) != 1:
        return
    only = (('no object (every labelled pixel is 0)' if present == [0] else 'the object on every labelled pixel')
            if binary else f'only class {present[0]} ({clip(classes[present[0]], 60)!r})')
    raise ValueError(f'label {clip(path)} holds {only}: fine-tuning on it teaches the model to predict that on every '
                     'pixel; label at least two classes (e.g. the object and its background)')


# Training crops of a checkpoint without input_hw (the engine runs each frame at its own size) are at most this
# side: a whole 4000x3000 frame per step took ~5 GB and ~20 s on a CPU.
MAX_NATIVE_CROP = 512


def _augment(input_hw: list[int] | None, frame_hw: tuple[int, int], stride: int) -> AugmentConfig:
    """The one-shot augmentation: the frame resized as the engine resizes it (to cover ``input_hw``; as it is
    without one), random scale / flip / colour, and a crop of whole strides, at least two per side (a crop under
    one stride was torch's AssertionError; one stride left BatchNorm one value per channel at batch 1), padded
    with the ignore value where the frame is smaller."""
    sides = [int(v) for v in input_hw] if input_hw else [min(int(v), MAX_NATIVE_CROP) for v in frame_hw]
    crop = [max(2 * stride, v // stride * stride) for v in sides]
    return AugmentConfig(cover_hw=[int(v) for v in input_hw or []], crop_hw=crop, scale_range=[0.8, 1.25],
                         hflip=True, jitter=0.2)


def _frames(sequence: Path) -> list[Path]:
    """The sequence's frames as the video source lists a folder (hidden files, such as macOS's ``._*``, left out)."""
    frames = image_files(sequence)
    if not frames:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {sequence}')
    return frames


def _check_out_dir(out_dir: Path, sequence: Path, frames: list[Path], frame: Path, label: str | Path,
                   labels_dir: str | Path | None) -> None:
    """Refuse an ``out_dir`` where the masks (``<frame stem>.png``) would overwrite the user's data: the
    sequence's frames, the ground truth (then scored against itself), the annotated frame or its label."""
    check_new_output(out_dir, sequence, frames, what='the --sequence folder', files_what='the --sequence frames')
    if labels_dir is not None:
        check_new_output(out_dir, labels_dir, [Path(labels_dir) / f'{p.stem}.png' for p in frames],
                         what='the --labels-dir ground truth', files_what='the --labels-dir ground truth')
    check_new_output(out_dir, source_files=[frame, Path(label)], files_what='the --frame / --label files')


def one_shot(model: str | Path, frame: str | Path, label: str | Path | None, sequence: str | Path,
             out_dir: str | Path, steps: int = 100, lr: float = 1e-3, labels_dir: str | Path | None = None,
             seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune on one frame and label ``sequence``; returns paths and, with ``labels_dir``, J&F.

    Args:
        model: checkpoint path or shipped model name.
        frame: the annotated frame's image (or its mask, when ``label`` is None and the image with
            the same stem is in ``sequence``).
        label: its mask: class ids of the model's classes, or a 0/255 object mask (see module doc).
        sequence: folder with the sequence's frames (numbered names in number order = temporal order).
        out_dir: gets ``finetuned.pt`` and one mask PNG per frame, named as the frame; so it must not be,
            hold or be inside ``sequence`` or ``labels_dir``, nor hold ``frame`` / ``label`` (ValueError
            before anything is trained or written).
        steps: optimiser steps on the single frame (100 at lr 1e-3 gave J&F 63.7 on a held-out
            DAVIS sequence where 200 at 1e-4 gave 57.3).
        lr: Adam learning rate.
        labels_dir: optional ground truth for every frame (same stems) to score J&F / mIoU.
        seed: augmentation and initialisation seed.
        progress: tqdm bars for the training steps and the labelled frames.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sequence, out_dir = Path(sequence), Path(out_dir)
    frames, frame = _frames(sequence), Path(frame)
    if label is None:
        match = [p for p in frames if p.stem == frame.stem]
        if not match:
            raise FileNotFoundError(f'no image named {frame.stem}.* in {sequence} for the label {frame}')
        label, frame = frame, match[0]
    _check_out_dir(out_dir, sequence, frames, frame, label, labels_dir)
    if labels_dir is not None:
        _check_label_sizes(frames, Path(labels_dir))
    # two finetunes into one folder would mix their masks and checkpoints; one left empty by a failed run is removed
    with dataset_lock(out_dir, create=True, what='output folder'):
        _check_no_other_masks(out_dir, frames)
        (out_dir / RESULT_NAME).unlink(missing_ok=True)     # written last: a folder without it holds an unfinished run
        result = _finetune(model, frame=frame, label=Path(label), frames=frames, out_dir=out_dir,
                           steps=steps, lr=lr, labels_dir=labels_dir, rng=rng, progress=progress)
        run = {'model': str(model), 'frame': str(frame), 'label': str(label), 'sequence': str(sequence),
               'labels_dir': None if labels_dir is None else str(labels_dir), 'steps': steps, 'lr': lr, 'seed': seed}
        write_file_atomic(out_dir / RESULT_NAME, json.dumps(json_ready({**run, **result}), indent=1).encode())
        return result


RESULT_NAME = 'finetune.json'    # the run's settings and result, written when every mask is


def _check_label_sizes(frames: list[Path], labels_dir: Path) -> None:
    """Refuse, before training, a --labels-dir label whose size is not its frame's (from the file headers): scoring
    stopped after training and half the masks with 'prediction and ground truth sizes differ: (6144,) vs (3072,)',
    naming no file."""
    for img in frames:
        gt = labels_dir / f'{img.stem}.png'
        if gt.is_file() and file_image_hw(gt) != file_image_hw(img):
            (h, w), (fh, fw) = file_image_hw(gt), file_image_hw(img)
            raise ValueError(f'label {clip(gt)} is {w}x{h} but its frame {clip(img)} is {fw}x{fh} (as displayed); '
                             '--labels-dir labels must have their frame\'s size')


def _check_no_other_masks(out_dir: Path, frames: list[Path]) -> None:
    """Refuse an ``out_dir`` holding PNG files this run would not replace: a rerun on a shorter or another sequence
    left the earlier run's masks beside its own (5 masks after a 3-frame rerun, 2 of another model), exit 0."""
    stems = {p.stem for p in frames}
    others = sorted(p.name for p in out_dir.glob('*.png') if p.stem not in stems)
    if others:
        raise ValueError(f'--out-dir {clip(out_dir)} holds {len(others)} PNG file(s) that are not masks of this '
                         f'sequence ({clip(", ".join(others[:3]), 200)}{", ..." if len(others) > 3 else ""}): an '
                         "earlier run's masks would be left among this one's; give a new --out-dir, or empty it")


def _finetune(model: str | Path, frame: Path, label: Path, frames: list[Path], out_dir: Path, steps: int, lr: float,
              labels_dir, rng: np.random.Generator, progress: bool) -> dict:
    """``one_shot`` once its paths are checked and ``out_dir`` is locked."""
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter, resolve_model
    from vidseg_ros.models.checkpoint import load_checkpoint, save_checkpoint
    from vidseg_ros.models.contract import stream_info
    from vidseg_ros.training.losses import segmentation_loss
    from vidseg_ros.training.metrics import ConfusionMatrix, JandF
    from vidseg_ros.tools.commands_data import tqdm_or_none
    bar = tqdm_or_none() if progress else None

    def tqdm(items, **kw):          # without tqdm (or progress off): the items as they are
        return bar(items, **kw) if bar is not None else items
    mask = _read_mask(Path(label))
    path = resolve_model(str(model))
    if not path.endswith('.pt'):
        raise ValueError(f'{model}: fine-tuning needs a .pt checkpoint (a trained model), not {path}')
    net, meta = load_checkpoint(path)
    ignore = int(meta.get('ignore_index') if meta.get('ignore_index') is not None else 255)
    if not (mask != ignore).any():   # a 0/255 object mask otherwise: an all-255 mask was 'object everywhere'
        raise ValueError(f'label {clip(label)} has no labelled pixel (every pixel is the ignore value {ignore}): '
                         'there is nothing to fine-tune on')
    binary = _object_mask(mask, meta['classes'], ignore, Path(label))
    mask = (mask > 0).astype(np.uint8) if binary else mask
    _check_two_classes(mask, binary, meta['classes'], ignore, Path(label))
    if binary and len(meta['classes']) != 2:
        net.replace_classifier(2)   # models.contract: a fresh background / object head
        meta = dict(meta, classes=list(DAVIS_CLASSES), palette=[list(c) for c in DAVIS_PALETTE],
                    ignore_index=DEFAULT_IGNORE, arch_config=dict(meta['arch_config'], num_classes=2))
        ignore = DEFAULT_IGNORE
    rgb = read_frame(frame)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f'label {label} is {mask.shape[1]}x{mask.shape[0]}, its frame {frame} is '
                         f'{rgb.shape[1]}x{rgb.shape[0]}')
    aug = _augment(meta.get('input_hw'), rgb.shape[:2], stream_info(net).stride)
    mean = torch.tensor(meta['mean']).view(3, 1, 1)
    std = torch.tensor(meta['std']).view(3, 1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []
    for _ in tqdm(range(steps), desc='finetune', unit='step', disable=not progress, mininterval=1.0):
        p = augment.draw(aug, rgb.shape[:2], rng, train=True)
        x = torch.from_numpy(augment.apply_image(rgb, p)).permute(2, 0, 1).float().div(255)
        y = torch.from_numpy(augment.apply_label(mask, p, ignore)).long()
        logits = net(((x - mean) / std)[None])
        loss = segmentation_loss(logits, y[None], ignore, class_balanced=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    meta['provenance'] = dict(meta.get('provenance', {}), finetuned_on=str(frame), finetune_steps=steps)
    ckpt = save_checkpoint(out_dir / 'finetuned.pt', net, meta)
    seg = StreamSegmenter(net, meta, EngineConfig(device='cpu', keyframe_interval=1))
    # streamed: a sequence's every prediction and label were held in memory until the end
    cm, jf, scored_files = ConfusionMatrix(len(meta['classes']), ignore), JandF(0.008, ignore, 2), 0
    beyond = np.zeros(256, np.int64)     # --labels-dir pixels of ids the model has no class for (not scored)
    beyond_files = []                    # the --labels-dir labels holding any (of scored_files read)
    for img in tqdm(frames, desc='label sequence', unit='frame', disable=not progress, mininterval=1.0):
        pred = _step(seg, img).class_ids
        # atomic, and a full disk is an OSError (cv2.imwrite returned True over truncated masks: exit 0)
        write_image_atomic(out_dir / f'{img.stem}.png', pred * 255 if binary else pred)
        gt_path = Path(labels_dir) / f'{img.stem}.png' if labels_dir else None
        if gt_path is not None and gt_path.is_file():
            gt = _read_mask(gt_path)
            # a 0/255 object mask; otherwise ids, whose void (255) is left out as in eval: `gt > 0` scored a
            # void pixel of a 0/1 mask as object in J&F and mIoU
            if binary and set(np.unique(gt).tolist()) <= {0, 255}:
                gt = (gt > 0).astype(np.uint8)
            else:
                counts = ids_beyond(gt, len(meta['classes']), ignore)
                if counts.any():
                    beyond += counts
                    beyond_files.append(str(gt_path))
            if binary:
                jf.add(gt, pred)
            scored_files += 1
            cm.update(pred, gt)
    result = {'checkpoint': str(ckpt), 'masks': str(out_dir), 'frames': len(frames),
              'loss_first': losses[0] if losses else None, 'loss_last': losses[-1] if losses else None}
    if scored_files:
        scores = cm.scores(meta['classes'])
        result.update(jf.result() if binary else {})
        result['mIoU'] = scores['mIoU']
        if beyond.any():     # said as vidseg eval says it (label_ids.beyond_text)
            summary = result['label_ids_beyond_classes'] = beyond_summary(beyond, beyond_files, scored_files,
                                                                          scores['pixels'])
            log.warning('%s', beyond_text(summary, beyond, len(meta['classes']), (ignore,),
                                          'were left out of mIoU',
                                          "are the --labels-dir labels numbered as the model's classes?"))
    return result


def _step(seg, img: Path):
    """``seg.step`` on the frame file ``img``; a frame the model gives NaN or inf on stops the run with an error
    naming its file (the engine's NonFiniteOutput knows no file: the user had to guess which frame)."""
    from vidseg_ros.engine.base import NonFiniteOutput
    try:
        return seg.step(read_frame(img))
    except NonFiniteOutput as e:
        raise NonFiniteOutput(f'frame {clip(img)}: {e}') from e
