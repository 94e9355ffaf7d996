"""`vidseg`: the offline loop's switchboard. Each command parses options and calls one function.

Heavy imports (torch, OpenCV, rosbags) happen inside the commands so `vidseg --help` stays fast.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help='vidseg_ros offline tools: bags -> all-frame datasets -> labels -> train/eval/export.')


def _print(result) -> None:
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    typer.echo(json.dumps(result, indent=2, default=str))


def _set(values: list[str] | None) -> dict:
    """`--set key=value` overrides (value parsed as JSON when it can be: numbers, lists, true)."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition('=')
        if not sep:
            raise typer.BadParameter(f'{item!r}: expected key=value')
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


Set = Annotated[Optional[list[str]], typer.Option('--set', help='override a setting: key=value (JSON value)')]


# ---- data loop --------------------------------------------------------------------------------
@app.command()
def extract(bags: Annotated[list[Path], typer.Argument(help='rosbag2 folders/files (MCAP, sqlite3) or ROS 1 bags')],
            out: Annotated[Path, typer.Option(help='dataset folder (re-running resumes)')],
            topic: Annotated[Optional[list[str]], typer.Option(help='image topic(s); default all')] = None,
            every: int = 1, start_s: float = 0.0, stop_s: float = 0.0, max_gap_s: float = 0.5,
            workers: int = 1, image_format: str = 'png', stamp: str = 'header'):
    """Every frame of the image topics into an indexed all-frame dataset."""
    from vidseg_ros.tools.commands_data import extract as run
    _print(run(bags, out, topic, image_format=image_format, every=every, start_s=start_s, stop_s=stop_s,
               max_gap_s=max_gap_s, workers=workers, stamp=stamp))


@app.command('bag-from-frames')
def bag_from_frames(source: Annotated[Path, typer.Argument(help='image folder or video file')],
                    out: Annotated[Path, typer.Option(help='bag folder to create')],
                    rate_hz: float = 15.0, topic: str = '/camera/image_raw', encoding: str = 'rgb8',
                    storage: str = 'mcap', frame_id: str = 'camera', compress: bool = False):
    """The inverse of extract: frames -> a rosbag2 bag with Image (or CompressedImage) + CameraInfo."""
    from vidseg_ros.tools.commands_data import bag_from_frames as run
    _print(run(source, out, rate_hz=rate_hz, topic=topic, encoding=encoding, storage=storage,
               frame_id=frame_id, compress=compress))


@app.command('bag-recover')
def bag_recover(bag: Annotated[Path, typer.Argument(help='bag folder or .mcap left by a killed recorder')],
                keep_original: bool = True,
                force: Annotated[bool, typer.Option(help='recover even if a file changed in the last '
                                                         '5 s (a live recording)')] = False):
    """Rewrite a truncated MCAP (SIGKILL, power loss) into a valid bag with metadata.yaml."""
    from vidseg_ros.data.bag_recover import recover_bag
    _print(recover_bag(bag, keep_original=keep_original, force=force))


@app.command('label-import')
def label_import(dataset: Path, labels: Annotated[Optional[Path], typer.Argument()] = None,
                 layout: Annotated[Optional[str], typer.Option(help='camvid | davis | cityscapes: index SRC=dataset '
                                                                   'into --out')] = None,
                 out: Optional[Path] = None, split: str = 'train',
                 classes: Annotated[Optional[Path], typer.Option(
                     help='class table CSV (name, r, g, b[, id]): names and colours; needed for colour PNGs')] = None,
                 class_names: Annotated[Optional[str], typer.Option(help='names of class ids 0..N-1 of id PNGs, '
                                                                         'e.g. background,object')] = None,
                 match: Annotated[str, typer.Option(help='stem: <stamp_ns>.png names the frame | order: '
                                                         'sorted files pair with frames in index order')] = 'stem',
                 licence: Annotated[Optional[str], typer.Option(
                     help='licence of these images and labels, kept in dataset.yaml and trained models')] = None,
                 map_: Annotated[Optional[list[str]], typer.Option('--map', help='remap a label value: FROM:TO '
                                                                             '(repeatable, e.g. --map 255:1)')] = None,
                 ignore_index: int = 255, source: str = 'human'):
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
                                      ignore_index=ignore_index, match=match, source=source, licence=licence))


@app.command()
def propagate(dataset: Path, method: str = 'flow', flow: str = 'dis', max_distance: int = 30,
              min_confidence: float = 0.5, tracker: str = 'medianflow', teacher_threshold: float = 0.7,
              model: Optional[str] = None, overwrite: bool = False):
    """Labels for every frame from sparse human labels: flow | tracker | teacher."""
    from vidseg_ros.tools.commands_data import propagate as run
    _print(run(dataset, method=method, flow=flow, max_distance=max_distance, min_confidence=min_confidence,
               tracker=tracker, teacher_threshold=teacher_threshold, model=model, overwrite=overwrite))


@app.command('make-variant')
def make_variant(source: Path, out: Path,
                 kind: Annotated[str, typer.Option(help='per_sequence (--n frames each) | strided | successive | noise')],
                 n: int = 1, count: int = 400, stride: int = 20, copies: int = 20, split: str = 'train',
                 seed: int = 0):
    """A dataset variant of the all-frames protocol (1/20/all frames, 1-by-20 vs successive, noise copies)."""
    from vidseg_ros.tools.commands_data import make_variant as run
    _print(run(source, out, kind, n=n, count=count, stride=stride, copies=copies, split=split, seed=seed))


@app.command('noise-sigma')
def noise_sigma(source: Path, split: str = 'train', max_pairs: int = 50):
    """Frame-to-frame pixel noise (0..255) of a dataset, as the noise-copies variant uses it."""
    from vidseg_ros.tools.commands_data import noise_sigma as run
    _print(run(source, split=split, max_pairs=max_pairs))


# ---- training, evaluation, export --------------------------------------------------------------
@app.command()
def train(config: Annotated[Path, typer.Argument(help='config/train/*.yaml')], resume: bool = False,
          set_: Set = None):
    """Train a model from one YAML config (stored in the checkpoint)."""
    from vidseg_ros.tools.commands_train import train as run
    _print(run(config, resume=resume, overrides=_set(set_)))


@app.command('eval')
def evaluate(model: Annotated[str, typer.Argument(help='checkpoint path or shipped model name')],
             data: Annotated[Path, typer.Argument(help='CamVid / DAVIS folder or an extracted dataset')],
             dataset: str = 'auto', split: str = 'val', out_dir: Path = Path('runs/eval'),
             key_intervals: str = '1,2,5,10', max_frames: int = 0, card: bool = True,
             clip_len: Annotated[int, typer.Option(help='reset temporal state every N frames (0 = never)')] = 0,
             device: str = 'cpu'):
    """mIoU / per-class IoU / mAcc / J&F / temporal consistency, plots and a model card."""
    from vidseg_ros.tools.commands_train import evaluate as run
    intervals = tuple(int(k) for k in key_intervals.split(','))
    _print(run(model, data, dataset=dataset, split=split, out_dir=out_dir, key_intervals=intervals,
               max_frames=max_frames, card=card, clip_len=clip_len, device=device))


@app.command()
def experiment(name: Annotated[str, typer.Argument(help='frames-per-video')], config: Path,
               out_dir: Path = Path('runs/experiment'),
               total_steps: Annotated[int, typer.Option(help='training steps per variant (same budget each)')] = 200,
               set_: Set = None):
    """Named experiments, e.g. the all-frames protocol (1 / 20 / all frames per video, noise copies)."""
    from vidseg_ros.tools.commands_train import experiment as run
    _print(run(name, config, out_dir=out_dir, overrides=_set(set_), total_steps=total_steps))


@app.command()
def finetune(model: str, frame: Annotated[Path, typer.Option(help='the annotated frame (image)')],
             label: Annotated[Path, typer.Option(help='its label PNG')],
             sequence: Annotated[Path, typer.Option(help='folder of the sequence\'s frames')],
             out_dir: Path = Path('runs/finetune'), steps: int = 200, lr: float = 1e-4,
             labels_dir: Annotated[Optional[Path], typer.Option(help='ground truth of the sequence: '
                                                                       'report J&F')] = None):
    """One-shot fine-tuning on one annotated frame, then label the whole sequence."""
    from vidseg_ros.tools.commands_train import finetune as run
    _print(run(model, frame, label, sequence, out_dir, steps=steps, lr=lr, labels_dir=labels_dir))


@app.command()
def export(checkpoint: str, out: Path, format: Annotated[str, typer.Option(help='onnx | torchscript')] = 'onnx'):
    """Export to ONNX or TorchScript with a parity check against PyTorch; the node loads either."""
    from vidseg_ros.tools.commands_models import export as run
    _print(run(checkpoint, out, format))


@app.command()
def bench(model: Annotated[str, typer.Argument(help="checkpoint name/path, '' = default")] = '',
          frames: int = 30, input_hw: Annotated[Optional[str], typer.Option(help='network input HxW')] = None,
          image_hw: Annotated[Optional[str], typer.Option(help='camera image HxW')] = None,
          device: str = 'auto', precision: str = 'fp32', channels_last: bool = False, keyframe_interval: int = 5):
    """End-to-end engine latency per stage, key vs current frames (bench/ has the full benchmarks)."""
    from vidseg_ros.tools.commands_models import bench as run

    def hw(text):
        return [int(v) for v in text.lower().split('x')] if text else None
    _print(run(model, frames, hw(input_hw), device, precision, channels_last, keyframe_interval, hw(image_hw)))


@app.command()
def info(checkpoint: str):
    """Architecture, classes, training provenance and metrics of a checkpoint."""
    from vidseg_ros.tools.commands_models import info as run
    _print(run(checkpoint))


@app.command()
def docs(check: bool = False):
    """Regenerate (or --check) the README parameter tables from the settings dataclasses."""
    from vidseg_ros.tools.docs import main as run
    raise typer.Exit(run(['--check'] if check else []))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    app()


if __name__ == '__main__':
    main()
