"""`vidseg`: the offline loop's switchboard. Each command parses options and calls one function.

Heavy imports (torch, OpenCV, rosbags) happen inside the commands so `vidseg --help` stays fast.

The contract: values are checked while parsing (ranges, choices, existing paths:
``tools/cli_options.py``); a user error ends as one line on stderr and exit code 2, a bug as one line
and exit code 1, ``vidseg --debug ...`` shows the traceback (``tools/cli_errors.py``, the one handler).
``python -m vidseg_ros.cli`` is the same CLI (e.g. ``torchrun -m vidseg_ros.cli train CONFIG``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from vidseg_ros.tools.cli_defaults import DEFAULTS
from vidseg_ros.tools.cli_errors import ContractGroup
from vidseg_ros.tools.cli_options import (Address, Executor, Existing, Model, Set, Workers, check_hw, check_ints,
                                          parse_set, positive, positive_finite, to_hw)

EXTRACT, TO_BAG, PROPAGATE, LABELS = (DEFAULTS[c] for c in ('extract', 'bag-from-frames', 'propagate', 'label-import'))
VARIANT, SIGMA, ENGINE, EVAL = (DEFAULTS[c] for c in ('make-variant', 'noise-sigma', 'bench', 'eval'))

app = typer.Typer(cls=ContractGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help='vidseg_ros offline tools: bags -> all-frame datasets -> labels -> train/eval/export.')


@app.callback()
def _root(debug: Annotated[bool, typer.Option('--debug', help='show the traceback of an error')] = False):
    """Declared for --help only: ContractGroup.main takes --debug out of the arguments (anywhere before '--')."""


def _print(result) -> None:
    """A command's result as strict JSON on stdout: an undefined score (NaN) is null, never a bare NaN."""
    from vidseg_ros.training.metrics import json_ready
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    typer.echo(json.dumps(json_ready(result), indent=2, default=str, allow_nan=False))


# ---- data loop --------------------------------------------------------------------------------
@app.command()
def extract(bags: Annotated[list[Path], typer.Argument(help='rosbag2 folders/files (MCAP, sqlite3) or ROS 1 bags',
                                                       **Existing)],
            out: Annotated[Path, typer.Option(help='dataset folder (re-running resumes)')],
            topic: Annotated[Optional[list[str]], typer.Option(help='image topic(s); default all but segment_node outputs (mask, overlay, ...)')] = None,
            every: Annotated[int, typer.Option(min=1, help='keep every N-th frame')] = EXTRACT['every'],
            start_s: Annotated[float, typer.Option(min=0.0, help='skip the first seconds')] = EXTRACT['start_s'],
            stop_s: Annotated[float, typer.Option(min=0.0, help='stop after this many seconds; 0 = to the end')]
            = EXTRACT['stop_s'],
            max_gap_s: Annotated[float, typer.Option(callback=positive, help='a larger stamp gap starts a new '
                                                                              'sequence')] = EXTRACT['max_gap_s'],
            workers: Workers = EXTRACT['workers'],
            image_format: Annotated[Literal['png', 'jpg', 'keep'], typer.Option()] = EXTRACT['image_format'],
            stamp: Annotated[Literal['header', 'log'], typer.Option()] = EXTRACT['stamp'],
            executor: Executor = 'local', address: Address = ''):
    """Every frame of the image topics into an indexed all-frame dataset."""
    if stop_s and stop_s <= start_s:
        raise typer.BadParameter(f'{stop_s} is not after --start-s {start_s}', param_hint='--stop-s')
    from vidseg_ros.tools.commands_data import extract as run
    _print(run(bags, out, executor=executor, address=address, topics=list(topic or []), image_format=image_format,
               every=every, start_s=start_s, stop_s=stop_s, max_gap_s=max_gap_s, workers=workers, stamp=stamp,
               progress=sys.stderr.isatty()))


@app.command('bag-from-frames')
def bag_from_frames(source: Annotated[Path, typer.Argument(help='image folder or video file', **Existing)],
                    out: Annotated[Path, typer.Option(help='bag folder to create')],
                    rate_hz: Annotated[float, typer.Option(callback=positive_finite)] = TO_BAG['rate_hz'],
                    topic: str = TO_BAG['topic'],
                    encoding: Annotated[str, typer.Option(help='rgb8, bgr8, mono8, ... or jpeg / png '
                                                               '(CompressedImage)')] = TO_BAG['encoding'],
                    storage: Annotated[Literal['mcap', 'sqlite3'], typer.Option()] = TO_BAG['storage'],
                    frame_id: str = TO_BAG['frame_id'], compress: bool = TO_BAG['compress']):
    """The inverse of extract: frames -> a rosbag2 bag with Image (or CompressedImage) + CameraInfo."""
    from vidseg_ros.tools.commands_data import bag_from_frames as run
    _print(run(source, out, rate_hz=rate_hz, topic=topic, encoding=encoding, storage=storage,
               frame_id=frame_id, compress=compress, progress=sys.stderr.isatty()))


@app.command('bag-recover')
def bag_recover(bag: Annotated[Path, typer.Argument(help='MCAP bag folder or .mcap file (left untouched)')],
                out: Annotated[Optional[Path], typer.Option(help='folder for the recovered bag (default '
                                                                 '<bag>_recovered); use another disk if full')] = None,
                force: Annotated[bool, typer.Option(help='recover even if a file changed in the last '
                                                         '5 s (a live recording)')] = False):
    """Write a readable copy of a killed or damaged recorder bag (summary, metadata.yaml); exit 2 if not a bag."""
    from vidseg_ros.data.bags.recover import run
    raise typer.Exit(run(bag, out, force))


@app.command('label-import')
def label_import(dataset: Path, labels: Annotated[Optional[Path], typer.Argument()] = None,
                 layout: Annotated[Optional[str], typer.Option(help='camvid | davis | cityscapes: index SRC=dataset '
                                                                   'into --out')] = None,
                 out: Optional[Path] = None, split: str = 'train',
                 classes: Annotated[Optional[Path], typer.Option(
                     help='class table CSV (name, r, g, b[, id]): names and colours; needed for colour PNGs '
                          '(paletted PNGs without it: their indices are the ids)')] = None,
                 class_names: Annotated[Optional[str], typer.Option(help='names of class ids 0..N-1 of id PNGs, '
                                                                         'e.g. background,object')] = None,
                 match: Annotated[str, typer.Option(help='stem: <stamp_ns>.png names the frame | order: '
                                                         'files in number order (label_2 before label_10) pair with frames in index order')]
                 = LABELS['match'],
                 licence: Annotated[Optional[str], typer.Option(
                     help='licence of these images and labels, kept in dataset.yaml and trained models')] = None,
                 map_: Annotated[Optional[list[str]], typer.Option('--map', help='remap a label value: FROM:TO '
                                                                             '(repeatable, e.g. --map 255:1)')] = None,
                 ignore_index: int = LABELS['ignore_index'], source: str = LABELS['source'],
                 color_tolerance: Annotated[int, typer.Option(
                     min=0, max=64, help='colour labels: a colour within this of one class colour (in every channel) '
                                         'is that class; also takes .jpg masks (JPEG shifts colours; e.g. 8)')]
                 = LABELS['color_tolerance']):
    """Import per-frame label PNGs (class ids or colours) into a dataset, or index a public layout."""
    from vidseg_ros.tools import commands_data
    if layout:
        if out is None:
            raise typer.BadParameter('--layout needs --out')
        _print(commands_data.import_layout(dataset, out, layout, split))
        return
    if labels is None:
        raise typer.BadParameter('give LABELS (a folder of PNGs) or --layout')
    try:
        mapping = {int(a): int(b) for a, b in (m.split(':') for m in map_ or [])}
    except ValueError:
        raise typer.BadParameter(f'--map takes FROM:TO integers, got {map_}') from None
    names = [n.strip() for n in class_names.split(',')] if class_names is not None else None
    _print(commands_data.label_import(dataset, labels, classes=classes, class_names=names, mapping=mapping or None,
                                      ignore_index=ignore_index, match=match, source=source, licence=licence,
                                      color_tolerance=color_tolerance))


@app.command()
def propagate(dataset: Annotated[Path, typer.Argument(help='dataset folder with index.csv (vidseg extract)',
                                                      exists=True, file_okay=False)],
              method: Annotated[Literal['flow', 'tracker', 'teacher'], typer.Option()] = PROPAGATE['method'],
              flow: Annotated[Literal['dis', 'farneback'], typer.Option()] = PROPAGATE['flow'],
              dis_preset: Annotated[Literal['ultrafast', 'fast', 'medium', 'fine'], typer.Option(
                  help='DIS speed/quality; fine = medium refined to full resolution')] = PROPAGATE['dis_preset'],
              flow_scale: Annotated[float, typer.Option(min=0.05, max=1.0, help='flow at this fraction of the '
                                                                                'frame size (faster)')]
              = PROPAGATE['flow_scale'],
              max_distance: Annotated[int, typer.Option(min=1, help='flow: frames labelled before the first / after '
                                                        'the last label of a sequence; tracker: from the nearest label')]
              = PROPAGATE['max_distance'],
              min_confidence: Annotated[float, typer.Option(
                  min=0.0, max=1.0, help='pixels less certain than this become ignore (holes the training loss '
                                         'skips); 0 = filled labels, every pixel assigned. See docs/data.md')]
              = PROPAGATE['min_confidence'],
              tracker: Annotated[Literal['medianflow', 'mil'], typer.Option()] = PROPAGATE['tracker'],
              teacher_threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = PROPAGATE['teacher_threshold'],
              model: Annotated[Optional[str], typer.Option(help='teacher checkpoint (method teacher)')] = None,
              out: Annotated[Optional[Path], typer.Option(
                  help='a new dataset folder for the result (DATASET\'s frames and labels referenced, not copied; '
                       'DATASET unchanged); default: the labels go into DATASET')] = None,
              overwrite: Annotated[bool, typer.Option(help='redo frames that already carry a propagated or '
                                                           'teacher label (human labels are never replaced)')]
              = False, workers: Workers = 1, executor: Executor = 'local', address: Address = ''):
    """Labels for every frame from sparse human labels: flow | tracker | teacher."""
    if method == 'teacher' and not model:
        raise typer.BadParameter('method teacher needs a model', param_hint='--model')
    from vidseg_ros.tools.commands_data import propagate as run
    _print(run(dataset, method=method, flow=flow, dis_preset=dis_preset, flow_scale=flow_scale,
               max_distance=max_distance, min_confidence=min_confidence, tracker=tracker,
               teacher_threshold=teacher_threshold, model=model, overwrite=overwrite, workers=workers,
               executor=executor, address=address, out=out, progress=sys.stderr.isatty()))


@app.command('make-variant')
def make_variant(source: Annotated[Path, typer.Argument(**Existing)], out: Path,
                 kind: Annotated[Literal['per_sequence', 'strided', 'successive', 'noise'], typer.Option(
                     help='per_sequence (--n frames each) | strided | successive | noise')],
                 n: Annotated[int, typer.Option(min=0, help='frames per sequence; 0 = all')] = VARIANT['n'],
                 count: Annotated[int, typer.Option(min=1)] = VARIANT['count'],
                 stride: Annotated[int, typer.Option(min=1)] = VARIANT['stride'],
                 copies: Annotated[int, typer.Option(min=1)] = VARIANT['copies'], split: str = 'train',
                 seed: int = VARIANT['seed'],
                 sigma: Annotated[Optional[float], typer.Option(
                     min=0.0, help='noise std (0..255) for --kind noise; default: measured between successive '
                                   'frames (`vidseg noise-sigma`)')] = None,
                 workers: Workers = 1, executor: Executor = 'local', address: Address = ''):
    """A dataset variant of the all-frames protocol (1/20/all frames, 1-by-20 vs successive, noise copies)."""
    from vidseg_ros.tools.commands_data import make_variant as run
    _print(run(source, out, kind, n=n, count=count, stride=stride, copies=copies, split=split, seed=seed,
               sigma=sigma, workers=workers, executor=executor, address=address))


@app.command('noise-sigma')
def noise_sigma(source: Annotated[Path, typer.Argument(**Existing)], split: str = 'train',
                max_pairs: Annotated[int, typer.Option(min=1)] = SIGMA['max_pairs']):
    """Frame-to-frame pixel noise (0..255) of a dataset, as the noise-copies variant uses it."""
    from vidseg_ros.tools.commands_data import noise_sigma as run
    _print(run(source, split=split, max_pairs=max_pairs))


# ---- training, evaluation, export --------------------------------------------------------------
@app.command()
def train(config: Annotated[Path, typer.Argument(help='config/train/*.yaml', exists=True, dir_okay=False)],
          resume: bool = False, set_: Set = None,
          overwrite: Annotated[bool, typer.Option(help='replace an earlier run of this name and an existing '
                                                       'output file (refused otherwise)')] = False):
    """Train a model from one YAML config (stored in the checkpoint)."""
    from vidseg_ros.tools.commands_train import train as run
    _print(run(config, resume=resume, overrides=parse_set(set_), progress=sys.stderr.isatty(),
               overwrite=overwrite))


@app.command('eval')
def evaluate(model: Model,
             data: Annotated[Path, typer.Argument(help='CamVid / DAVIS folder or an extracted dataset', **Existing)],
             dataset: Annotated[Literal['auto', 'camvid', 'davis', 'extracted'], typer.Option()] = EVAL['dataset'],
             split: str = EVAL['split'],
             out_dir: Annotated[Path, typer.Option(help='each run gets a new folder <model>-<split>-<n> in '
                                                        'here')] = Path(EVAL['out_dir']),
             key_intervals: Annotated[str, typer.Option(callback=check_ints)] = '1,2,5,10',
             max_frames: Annotated[int, typer.Option(min=0, help='per sequence; 0 = all')] = EVAL['max_frames'],
             card: Annotated[Optional[Path], typer.Option(help='also write the model card here, e.g. '
                                                               'models/<name>.md (replaces that file)',
                                                          dir_okay=False)] = None,
             clip_len: Annotated[int, typer.Option(min=0, help='reset temporal state every N frames '
                                                               '(0 = never)')] = EVAL['clip_len'],
             max_gap_s: Annotated[Optional[float], typer.Option(min=0, help='a larger stamp gap resets '
                                                                        'the state, as in the node; '
                                                                        'default: the node\'s')] = None,
             device: str = EVAL['device']):
    """mIoU / per-class IoU / mAcc / J&F / temporal consistency, plots and a model card."""
    from vidseg_ros.tools.commands_train import evaluate as run
    intervals = tuple(int(k) for k in key_intervals.split(','))
    _print(run(model, data, split, out_dir, dataset=dataset, key_intervals=intervals, max_frames=max_frames,
               card=card, clip_len=clip_len, max_gap_s=max_gap_s, device=device))


@app.command()
def experiment(name: Annotated[Literal['frames-per-video'], typer.Argument(help='frames-per-video')],
               config: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
               out_dir: Path = Path(DEFAULTS['experiment']['out_dir']),
               total_steps: Annotated[int, typer.Option(min=1, help='training steps per variant '
                                                                    '(same budget each)')]
               = DEFAULTS['experiment']['total_steps'],
               set_: Set = None):
    """Named experiments, e.g. the all-frames protocol (1 / 20 / all frames per video, noise copies)."""
    from vidseg_ros.tools.commands_train import experiment as run
    _print(run(name, config, out_dir=out_dir, overrides=parse_set(set_), total_steps=total_steps))


@app.command()
def finetune(model: Model, frame: Annotated[Path, typer.Option(help='the annotated frame (image)', exists=True,
                                                             dir_okay=False)],
             label: Annotated[Path, typer.Option(help='its label PNG', exists=True, dir_okay=False)],
             sequence: Annotated[Path, typer.Option(help='folder of the sequence\'s frames', exists=True,
                                                    file_okay=False)],
             out_dir: Annotated[Path, typer.Option(help='predicted masks go here: a folder of their own, not the '
                                                       '--sequence or --labels-dir one')] = Path('runs/finetune'),
             steps: Annotated[int, typer.Option(min=1, help='optimiser steps on the one frame')]
             = DEFAULTS['finetune']['steps'],
             lr: Annotated[float, typer.Option(callback=positive_finite, help='Adam learning rate')]
             = DEFAULTS['finetune']['lr'],
             labels_dir: Annotated[Optional[Path], typer.Option(help='ground truth of the sequence: '
                                                                       'report J&F', exists=True,
                                                                file_okay=False)] = None):
    """One-shot fine-tuning on one annotated frame, then label the whole sequence."""
    from vidseg_ros.tools.commands_train import finetune as run
    _print(run(model, frame, label, sequence, out_dir, steps=steps, lr=lr, labels_dir=labels_dir,
               progress=sys.stderr.isatty()))


@app.command()
def export(model: Model, out: Path,
           format: Annotated[Literal['onnx', 'torchscript', 'ts'], typer.Option(help='onnx | torchscript')] = 'onnx',
           input_hw: Annotated[Optional[str], typer.Option(
               callback=check_hw, help='network input HxW to trace and parity-check at (padded up to a multiple '
                                       'of the model stride); default the checkpoint\'s input_hw')] = None):
    """Export to ONNX or TorchScript with a parity check against PyTorch; the node loads either."""
    from vidseg_ros.tools.commands_models import export as run
    _print(run(model, out, format, to_hw(input_hw)))


@app.command()
def bench(model: Annotated[str, typer.Argument(help="checkpoint name/path, '' = default")] = '',
          frames: Annotated[int, typer.Option(min=1, help='frames to time (after 3 warm-up frames)')]
          = ENGINE['frames'],
          input_hw: Annotated[Optional[str], typer.Option(callback=check_hw, help='network input HxW')] = None,
          image_hw: Annotated[Optional[str], typer.Option(callback=check_hw, help='camera image HxW')] = None,
          device: str = ENGINE['device'],
          precision: Annotated[Literal['fp32', 'fp16', 'bf16'], typer.Option()] = ENGINE['precision'],
          channels_last: bool = ENGINE['channels_last'],
          keyframe_interval: Annotated[int, typer.Option(min=1)] = ENGINE['keyframe_interval'],
          num_threads: Annotated[int, typer.Option(min=0, max=256, help="CPU threads of torch, OpenCV and "
                                                   "onnxruntime (the node's num_threads); 0 = their defaults")]
          = ENGINE['num_threads']):
    """End-to-end engine latency per stage, key vs current frames (bench/ has the full benchmarks)."""
    from vidseg_ros.tools.commands_models import bench as run
    _print(run(model, frames, to_hw(input_hw), device, precision, channels_last, keyframe_interval,
               to_hw(image_hw), num_threads))


@app.command()
def info(model: Model):
    """Architecture, classes, provenance and metrics of a checkpoint or exported model (read, not run).

    An exported .ts / .onnx also shows its weight count, stride, the input size it was traced at, its
    key-frame cache or recurrent state tensors, its graphs' inputs and outputs and, for a key-frame ONNX
    export, its partner file (X.current.onnx) and whether it is there."""
    from vidseg_ros.tools.commands_models import info as run
    _print(run(model))


@app.command('name-classes')
def name_classes(model: Annotated[Path, typer.Argument(help='a checkpoint (.pt) with more output channels than '
                                                             'class names')],
                 names: Annotated[list[str], typer.Argument(help='one name per unnamed channel, in channel order')],
                 out: Annotated[Optional[Path], typer.Option(help='default: <model>-named.pt beside it')] = None):
    """Name the output channels an earlier version's checkpoint left unnamed (every reader refuses such a file and
    says this command); writes a named copy, black for the added classes, the weights unchanged."""
    from vidseg_ros.models.checkpoint import add_class_names
    _print({'written': str(add_class_names(model, names, out)), 'added': names})


@app.command()
def docs(check: bool = False,
         readme: Annotated[Path, typer.Option(help='the README of a checkout', exists=True, dir_okay=False)]
         = Path('README.md')):
    """Regenerate (or --check) the README parameter and launch-argument tables (run in the checkout)."""
    from vidseg_ros.tools.docs import update
    raise typer.Exit(update(check, readme))


LOG_MESSAGE_LIMIT = 2000     # characters of a log message shown (its middle cut): a few kB per line at most


class _PrintableFormatter(logging.Formatter):
    """Log lines whose message has its control characters escaped (``text.printable``): a message quotes
    topic names, file names and bag warnings from someone else's bag or folder, whose ESC or line break would
    drive the terminal or forge a log line. A message over ``LOG_MESSAGE_LIMIT`` loses its middle
    (``text.one_line``): one field of 100 kB quoted unclipped was a 100 kB line. A traceback (added after the
    message) keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from vidseg_ros.text import one_line, printable
        record.message = printable(record.message)
        if len(record.message) > LOG_MESSAGE_LIMIT:
            record.message = one_line(record.message, LOG_MESSAGE_LIMIT)
        return super().formatMessage(record)


def setup_logging() -> None:
    """INFO and up on stderr, one line per message."""
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter('%(levelname)s %(name)s: %(message)s'))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main() -> None:
    setup_logging()
    app()


if __name__ == '__main__':
    main()
