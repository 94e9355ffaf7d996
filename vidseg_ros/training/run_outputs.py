"""What a run may write: its own folder (locked while it trains) and an ``output`` it wrote itself, checked before
training; the output, a copy of the run's best.pt, published when the run completes."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import torch

from vidseg_ros.config import ConfigError
from vidseg_ros.data.datasets.lock import LockHeld, first_missing, lock_file
from vidseg_ros.files import read_regular_text

from .checkpoints import GRANT_KEY, read_training_state
from .config import TrainConfig

log = logging.getLogger(__package__ + '.loop')     # messages of the training loop, under its name

LOCK_NAME = 'train.lock'
RUN_FILES = ('last.pt', 'best.pt')


@contextlib.contextmanager
def held_run_dir(run_dir: Path, rank: int = 0):
    """``run_dir``, created when missing and locked (rank 0) for as long as the run trains; a second training
    into it is refused. A run that fails before writing anything removes the folders it created."""
    created = first_missing(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(run_dir) if rank == 0 else None
    try:
        yield run_dir
    except BaseException:
        if created is not None and rank == 0 and {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
            shutil.rmtree(created, ignore_errors=True)     # a refused run leaves no empty folder behind
        raise
    finally:
        if lock is not None:
            lock.close()                 # closing releases the lock


def _lock_run_dir(run_dir: Path):
    """An exclusive lock on ``run_dir/train.lock`` holding this process's id; ConfigError naming the holder
    when another training has it (their saves would replace each other's files mid-write)."""
    try:
        return lock_file(run_dir / LOCK_NAME)
    except LockHeld as e:
        raise ConfigError(f'{run_dir}: run folder in use by another training (PID {e.pid}); wait for it to end, or '
                          'train under another name (--set name=...)') from None


def check_output_path(cfg: TrainConfig) -> None:
    """Refuse, before training, an ``output`` that cannot be written: a folder, under a file, or a name longer
    than its file system takes."""
    from vidseg_ros.models.checkpoint import check_name_length
    if not cfg.output:
        return
    out = Path(cfg.output)
    check_name_length(out, 'output')    # first: stat() of a name too long raises
    if out.is_dir():
        raise ConfigError(f'output: {out} is a folder; name the model file, e.g. {out / (cfg.name + ".pt")}')
    parent = next(p for p in out.parents if p.exists())
    if not parent.is_dir():
        raise ConfigError(f'output: {out} lies under {parent}, which is a file, not a folder')


# The output a run started with --overwrite may replace (its resolved path, or None): kept in its last.pt (under
# GRANT_KEY) from the first saved epoch, since a run writes output only when it completes, so that a --resume of
# it (the CLI's or a library call's) replaces that output without --overwrite again. Versions before 2 Dec 2026
# kept it in the run folder's GRANT_NAME (JSON {"output": path}), which is still read for a last.pt they wrote.
GRANT_NAME = 'overwrite_output.json'


def output_grant(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """The resolved ``cfg.output`` when this run may replace it (``overwrite``, or a ``resume`` of a run started
    with it for that output), else None; saved in every last.pt of the run."""
    if not cfg.output:
        return None
    target = str(Path(cfg.output).resolve())
    if overwrite:
        return target
    if resume and (run_dir / 'last.pt').is_file() and saved_grant(run_dir) == target:
        log.info('resuming %s, started with --overwrite: it replaces %s when it completes', run_dir, cfg.output)
        return target
    return None


def saved_grant(run_dir: Path) -> str | None:
    """The output the run in ``run_dir`` was granted (``GRANT_KEY``), from its last.pt (mapped, not read whole)
    or, for a last.pt of an older version, its ``GRANT_NAME`` file; a damaged last.pt is a ConfigError naming it."""
    path = run_dir / 'last.pt'
    try:
        blob = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - torch raises many types for a damaged file: read_training_state names it
        read_training_state(path)
        return None
    if isinstance(blob, dict) and GRANT_KEY in blob:
        return blob[GRANT_KEY] if isinstance(blob[GRANT_KEY], str) else None
    try:    # RecursionError: '[[[...' 10**5 deep (an internal error); open_regular: a FIFO there blocked
        grant = json.loads(read_regular_text(run_dir / GRANT_NAME))
    except (OSError, ValueError, RecursionError):
        return None
    return grant.get('output') if isinstance(grant, dict) and isinstance(grant.get('output'), str) else None


def check_nothing_replaced(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool,
                           granted: bool = False) -> None:
    """Refuse, before training, to replace an earlier run of this name or an ``output`` this run did not
    write, unless ``overwrite`` (a resumed run replaces its own files) or, for the output, ``granted``
    (``output_grant``), and a ``resume`` of a run without its training state (it would start again from
    scratch)."""
    if overwrite:
        return
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume and held == ['best.pt']:   # killed while its first last.pt was written (best.pt is saved first)
        raise ConfigError(f'{run_dir} has best.pt but no last.pt: cannot resume; --overwrite to start again')
    if held and not resume:
        raise ConfigError(f'{run_dir} already holds a training run ({", ".join(held)}); --resume to continue it, or '
                          'another name (--set name=...), or --overwrite to replace it')
    out = Path(cfg.output) if cfg.output else None
    if not out or not out.exists() or granted:
        return
    mine = written_by_run(out, run_dir) if resume else False
    if mine:
        return
    fix = ('--overwrite to replace it (e.g. retraining a shipped model with config/train/camvid_*.yaml), or write '
           'another file (--set output=...)')
    # a run keeps its --overwrite in last.pt from the first saved epoch (GRANT_KEY); one stopped before it has none
    again = ('; a run writes output only when it completes, so one started with --overwrite and stopped before '
             'its first saved epoch resumes with --overwrite')
    if mine is None:
        raise ConfigError(f'output: {out} exists and cannot tell whether this run ({run_dir}) wrote it (a checkpoint '
                          f'from an older version has no run_dir, and its weights differ from the run\'s best.pt); '
                          f'{fix}{again}')
    raise ConfigError(f'output: {out} exists and was not written by this run ({run_dir}); {fix}'
                      f'{again if resume else ""}')


def written_by_run(path: Path, run_dir: Path) -> bool | None:
    """Whether the checkpoint at ``path`` was written by the run in ``run_dir``: its provenance says so; None when
    it cannot tell.

    Checkpoints made before 1 Dec 2026 have no ``provenance.run_dir``: such an output counts as this run's when its
    weights equal the run's ``best.pt`` (the output is a copy of it), or ``--resume`` of a run of an older version
    was refused, saying the run had not written what it had; None (cannot tell) when they differ but its
    ``train_config`` is a run of this name.
    """
    from vidseg_ros.models.checkpoint import CheckpointError, read_checkpoint

    from .checkpoint_meta import run_folder
    try:
        data = read_checkpoint(path)
    except CheckpointError:
        return False
    meta = data['meta']
    recorded = meta['provenance'].get('run_dir')
    if recorded is not None:
        return recorded == run_folder(run_dir)
    try:
        if _same_weights(data['state_dict'], read_checkpoint(run_dir / 'best.pt')['state_dict']):
            return True         # a copy of this run's best.pt: replacing it loses nothing
    except CheckpointError:
        pass
    # A training of this name by an older version may have written it; any other model (a user's, a shipped one
    # of another name) was not.
    return None if meta['train_config'].get('name') == run_dir.name else False


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def publish_output(cfg: TrainConfig, run_dir: Path) -> None:
    """``cfg.output`` = a copy of the finished run's ``best.pt``, written whole or not at all. Only a completed run
    writes it: an output saved at each new best epoch made a run interrupted at epoch 1 of 20 replace a shipped
    model (``--overwrite``) with a 1-epoch one whose meta said 20 epochs; the run folder keeps what resumes."""
    from vidseg_ros.models.checkpoint import write_file_atomic
    best = run_dir / 'best.pt'
    if not best.is_file():      # e.g. deleted from the run folder before a --resume of a finished run
        log.warning('output: %s not written: %s holds no best.pt', cfg.output, run_dir)
        return
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out, best.read_bytes())
    log.info('wrote %s (best.pt of %s)', out, run_dir)
