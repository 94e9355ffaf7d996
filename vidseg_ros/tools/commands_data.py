"""Plain typed functions behind the data commands (cli.py wires them to ``vidseg ...``).

``extract``, ``bag_from_frames``, ``label_import``, ``import_layout``, ``propagate``,
``make_variant`` and ``noise_sigma``: each builds its settings, shows a tqdm progress bar and calls
one library function, returning a JSON-able dict. Nothing here parses arguments or prints.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def _bar(total: int | None, unit: str, desc: str, enabled: bool = True):
    """A tqdm bar as a ``progress(n)`` callback (no-op when disabled). The bar is made at the first progress
    and shows after half a second: input refused before any work stays one error line on stderr, however
    slow the machine (a bar made up front printed an empty line before such errors); log lines print above it.
    Without tqdm the command runs without a bar (it is only a display)."""
    tqdm = tqdm_or_none() if enabled else None
    if tqdm is None:
        yield lambda n=1: None
        return
    bar = None

    def update(n: int = 1) -> None:
        nonlocal bar
        if bar is None:
            if not n:
                return
            bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, mininterval=1.0, delay=0.5)
        bar.update(n)
    from tqdm.contrib.logging import logging_redirect_tqdm
    try:
        # log lines print above the bar: written plainly, a warning landed after the bar's text, on its line
        with logging_redirect_tqdm(tqdm_class=tqdm):
            yield update
    finally:
        if bar is not None:
            bar.close()


def tqdm_or_none():
    """tqdm's bar class, or None (logged once per command) when the package is missing."""
    try:
        from tqdm import tqdm
    except ImportError:
        log.info('no progress bar: tqdm is not installed (pip install tqdm)')
        return None
    return tqdm


def _count_frames(bags: list[str | Path], topics: list[str]) -> int | None:
    """The bar's total from the bags' indexes; None (a bar without total) when one is damaged: counting
    would mean salvaging the bag once more before extract reads it (and warning twice). None too when a bag
    folder holds a split its metadata.yaml does not list yet (still being recorded, or its recorder killed):
    extract reads it, the index does not count it (a total of 10 for 25 frames), and its count needs a full read."""
    from vidseg_ros.data.bags.reader import IMAGE_TYPES, list_topics, unlisted_files
    from vidseg_ros.data.datasets.extract import is_segmenter_output
    total = 0
    try:
        for bag in bags:
            found = list_topics(bag, salvage=False)
            if found is None or unlisted_files(Path(bag)):
                return None
            for topic, (msgtype, count) in found.items():
                if msgtype in IMAGE_TYPES and (topic in topics if topics else not is_segmenter_output(topic)):
                    total += count
    except (OSError, ValueError):
        return None
    return total or None


def extract(bags: list[str | Path], out: str | Path, progress: bool = True, executor: str = 'local',
            address: str = '', **settings) -> dict:
    """``vidseg extract BAG... --out DIR``: every image frame into an indexed dataset.

    ``settings``: ``ExtractConfig`` fields (``topics``, ``every``, ``max_gap_s``, ...); the rest keep
    their defaults there.
    """
    from vidseg_ros.config import from_dict
    from vidseg_ros.data.datasets.extract import ExtractConfig, check_bag, extract as run
    cfg = from_dict(ExtractConfig, settings)
    for bag in bags:    # a video or an empty folder is refused before counting frames reads (and warns)
        check_bag(bag)
    total = _count_frames(bags, cfg.topics) if progress else None
    with _bar(total, 'frame', 'extract', progress) as update:
        res = run(bags, out, cfg, update, executor, address)
    mb = res.bytes_written / 1e6
    return {'out': str(out), 'written': res.written, 'skipped_existing': res.skipped_existing,
            'failed': res.failed, 'duplicates': res.duplicates, 'sequences': res.sequences,
            'exif_orientation_reset': res.exif_reset + res.exif_reencoded,
            'warnings': res.warnings, 'left_out': res.skipped_topics,
            'seconds': round(res.seconds, 2), 'MB_written': round(mb, 1),
            'frames_per_s': round(res.written / res.seconds, 1) if res.seconds else None}


def bag_from_frames(source: str | Path | list[Path], out: str | Path, progress: bool = True,
                    **settings) -> dict:
    """``vidseg bag-from-frames DIR|VIDEO --out BAG``: frames -> Image/CompressedImage + CameraInfo.

    ``settings``: ``BagFromFramesConfig`` fields; the rest keep their defaults there.
    """
    from vidseg_ros.config import from_dict
    from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, frames_to_bag
    cfg = from_dict(BagFromFramesConfig, settings)
    with _bar(None, 'frame', 'bag-from-frames', progress) as update:
        summary = frames_to_bag(source, out, cfg, update)
    summary.pop('stamps', None)
    return summary


def label_import(dataset: str | Path, labels: str | Path, match: str, **options) -> dict:
    """``vidseg label-import DATASET LABEL_DIR``: id or colour PNGs into the dataset's labels/.

    ``match`` and ``options``: keyword arguments of ``label_import.import_labels`` (classes, class_names, ...).
    """
    from vidseg_ros.data.datasets.label_import import import_labels
    return import_labels(dataset, labels, match=match, **options)


def import_layout(src: str | Path, out: str | Path, layout: str, split: str = 'train',
                  sequences: list[str] | None = None) -> dict:
    """``vidseg label-import --layout camvid|davis|cityscapes SRC OUT``: index a public dataset."""
    from vidseg_ros.data.datasets.label_import import import_layout as run
    return run(src, out, layout, split, sequences)


def propagate(dataset: str | Path, model: str | None = None, overwrite: bool = False, workers: int = 1,
              progress: bool = True, executor: str = 'local', address: str = '', out: str | Path | None = None,
              **settings) -> dict:
    """``vidseg propagate DATASET [--out DIR]``: labels for every frame from the sparse human labels, into
    DATASET or (``out``) a new dataset folder that references DATASET's frames and labels.

    ``settings``: ``PropagateConfig`` fields (``method``, ``flow``, ``max_distance``, ...); the rest keep
    their defaults there. ``model`` (method=teacher) is a checkpoint the engine loads; its prediction
    becomes the pseudo-label where confident.
    """
    from vidseg_ros.config import from_dict
    from vidseg_ros.data.labelling.propagate import PropagateConfig
    from vidseg_ros.data.labelling.run import propagate_dataset
    cfg = from_dict(PropagateConfig, settings)
    predict = _engine_predict(model) if cfg.method == 'teacher' and model else None
    with _bar(_index_rows(dataset) if progress else None, 'frame', f'propagate ({cfg.method})', progress) as update:
        return propagate_dataset(dataset, cfg, predict, update, overwrite, workers, executor, address, out)


def _index_rows(dataset: str | Path) -> int | None:
    """The bar's total: the data lines of the dataset's index.csv, counted, not parsed (parsed for it, the index was
    read twice: 1M rows, 16 s and 1 GB more, and its warnings given twice); None where it cannot be read (propagate
    says why). Blank lines are no rows (the index reader skips them: a blank line at the end, as an editor leaves
    it, had the bar end at 3/4); read a line or 1 MB at a time, so a file without line ends is not read whole."""
    from vidseg_ros.data.datasets.layouts import INDEX_NAME
    from vidseg_ros.files import open_regular
    lines, filled = 0, False      # filled: the line read so far has more than its line end
    try:
        with open_regular(Path(dataset) / INDEX_NAME) as f:
            while part := f.readline(1 << 20):
                filled = filled or bool(part.strip(b'\r\n'))
                if part.endswith(b'\n'):
                    lines, filled = lines + filled, False
    except OSError:
        return None
    return max(0, lines + filled - 1) or None


def _engine_predict(model: str):
    """The streaming engine as ``predict(rgb) -> (class_ids, confidence)``, frames independent."""
    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    engine = StreamSegmenter.from_checkpoint(EngineConfig(model=str(model), keyframe_interval=1))

    def predict(rgb):
        engine.reset('teacher')     # pseudo-labels per frame: no temporal state across frames
        res = engine.step(rgb, None, want_confidence=True)
        return res.class_ids, res.confidence
    predict.classes = engine.classes      # checked against the dataset's before any frame
    return predict


def make_variant(source: str | Path, out: str | Path, kind: str, split: str = 'train', **options) -> dict:
    """``vidseg make-variant SRC OUT --kind ...``: an all-frames-protocol training set as a dataset.

    ``options``: keyword arguments of ``variants.make_variant`` (n, count, stride, copies, sigma, seed, ...).
    """
    from vidseg_ros.data.datasets.public_layouts import open_source
    from vidseg_ros.data.datasets.lock import dataset_lock
    from vidseg_ros.data.datasets.variants import make_variant as build, write_variant
    src = open_source(source, split)
    with dataset_lock(out, create=True):     # one lock over both steps: noise images, then the index
        var = build(src, kind, out=out, **options)
        index = write_variant(var, out)
    return {'out': str(out), 'index': str(index), 'frames': len(var.records),
            'sequences': len({r.sequence for r in var.records}),
            'noise_sigma': var.extra.get('noise_sigma')}


def noise_sigma(source: str | Path, split: str = 'train', **options) -> dict:
    """``vidseg noise-sigma SRC``: frame-to-frame pixel noise (0..255) the noise variant uses
    (``options``: ``variants.measure_noise_sigma``'s, i.e. ``max_pairs``)."""
    from vidseg_ros.data.datasets.public_layouts import open_source
    from vidseg_ros.data.datasets.variants import measure_noise_sigma
    return {'sigma': round(measure_noise_sigma(open_source(source, split), **options), 3)}
