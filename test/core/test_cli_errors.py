"""The CLI contract: every subcommand given bad input ends with one line on stderr and exit code 2.

Each case runs in-process through typer's CliRunner (the same ``main`` as the console script); a few
run the installed ``vidseg`` script in a subprocess to check the real stderr and exit status. Any
traceback, any exit code other than 2 and any multi-line error fails.
"""
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vidseg_ros.cli import app

RUNNER = CliRunner()
HAS_TORCH_MODELS = True


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    """A folder of wrong things: fake files, empty folders, a tiny dataset, a training state."""
    import torch

    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    d = tmp_path_factory.mktemp('bad')
    (d / 'empty').mkdir()
    (d / 'fake.mp4').write_text('not a video')
    (d / 'junk.pt').write_bytes(b'\x00junk' * 10)
    (d / 'broken.yaml').write_text('a: [\n')
    (d / 'unknown.yaml').write_text('no_such_setting: 1\n')
    (d / 'list.yaml').write_text('- 1\n- 2\n')
    (d / 'dup.yaml').write_text('epochs: 1\nepochs: 3\n')
    torch.save({'model': {}, 'optimizer': {}, 'epoch': 1, 'step': 10, 'best': 0.1, 'history': [],
                'config': {}}, d / 'last.pt')
    frames = d / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(frames / f'{i:05d}.png'), rng.integers(0, 255, (24, 32, 3), np.uint8))
    cv2.imwrite(str(d / 'colour_label.png'), rng.integers(0, 255, (24, 32, 3), np.uint8))
    cv2.imwrite(str(d / 'label.png'), np.zeros((24, 32), np.uint8))   # a valid class-id label
    # CamVid layout with only a test split
    for sub in ('test', 'testannot'):
        (d / 'camvid_test_only' / sub).mkdir(parents=True)
    # an extracted dataset without any label, and one labelled with CamVid's ignore 11
    ds = d / 'unlabelled'
    (ds / 'images' / 's').mkdir(parents=True)
    recs = []
    for i in range(3):
        img = ds / 'images' / 's' / f'{i}.png'
        shutil.copy(frames / f'{i:05d}.png', img)
        recs.append(FrameRecord('s', i, img, None, i, 'none'))
    write_index(ds, recs)
    write_meta(ds, {'classes': ['background', 'object'], 'ignore_index': 255})
    return d


# (name, argv with {d} for the fixture folder, what the error line must say); every one must exit 2 with
# that one line.
CASES = [
    # extract
    ('extract-missing-bag', 'extract {d}/nope --out {d}/o', "nope' does not exist"),
    ('extract-fake-mp4', 'extract {d}/fake.mp4 --out {d}/o_fake', 'fake.mp4 is not a bag'),
    ('extract-empty-folder', 'extract {d}/empty --out {d}/o_empty', 'no .mcap or .db3 files'),
    ('extract-every-0', 'extract {d}/empty --out {d}/o --every 0',
     "'--every': Input should be greater than or equal to 1"),
    ('extract-every-neg', 'extract {d}/empty --out {d}/o --every -1',
     "'--every': Input should be greater than or equal to 1"),
    ('extract-every-text', 'extract {d}/empty --out {d}/o --every abc', "'--every': Input should be a valid integer"),
    ('extract-gap-neg', 'extract {d}/empty --out {d}/o --max-gap-s -1', "'--max-gap-s': -1.0 must be > 0"),
    ('extract-gap-0', 'extract {d}/empty --out {d}/o --max-gap-s 0', "'--max-gap-s': 0.0 must be > 0"),
    ('extract-stop-before-start', 'extract {d}/empty --out {d}/o --start-s 100 --stop-s 1',
     '1.0 is not after --start-s 100.0'),
    ('extract-start-neg', 'extract {d}/empty --out {d}/o --start-s -1',
     "'--start-s': Input should be greater than or equal to 0"),
    ('extract-workers-0', 'extract {d}/empty --out {d}/o --workers 0',
     "'--workers': Input should be greater than or equal to 1"),
    ('extract-format', 'extract {d}/empty --out {d}/o --image-format gif', "'gif' is not one of"),
    ('extract-stamp', 'extract {d}/empty --out {d}/o --stamp wall', "'wall' is not one of"),
    ('extract-no-out', 'extract {d}/empty', "Missing option '--out'"),
    ('extract-no-args', 'extract', "Missing argument 'bags'"),
    ('extract-unknown-option', 'extract {d}/empty --out {d}/o --bogus', 'No such option: --bogus'),
    # bag-from-frames
    ('b2f-missing', 'bag-from-frames {d}/nope --out {d}/b', "nope' does not exist"),
    ('b2f-empty-folder', 'bag-from-frames {d}/empty --out {d}/b_empty', 'empty: no images'),
    ('b2f-fake-video', 'bag-from-frames {d}/fake.mp4 --out {d}/b_fake', 'cannot open video'),
    ('b2f-rate-0', 'bag-from-frames {d}/frames --out {d}/b --rate-hz 0', "'--rate-hz': 0.0 must be > 0"),
    ('b2f-rate-neg', 'bag-from-frames {d}/frames --out {d}/b --rate-hz -5', "'--rate-hz': -5.0 must be > 0"),
    ('b2f-rate-inf', 'bag-from-frames {d}/frames --out {d}/b --rate-hz inf', "'--rate-hz': inf must be > 0 and finite"),
    ('b2f-storage', 'bag-from-frames {d}/frames --out {d}/b --storage zip', "'zip' is not one of"),
    ('b2f-encoding', 'bag-from-frames {d}/frames --out {d}/b_enc --encoding rgb99', "cannot write encoding 'rgb99'"),
    ('b2f-out-exists', 'bag-from-frames {d}/frames --out {d}/frames', 'frames exists'),
    # bag-recover
    ('recover-missing', 'bag-recover {d}/nope', 'no bag at'),
    # (bag-recover on a non-MCAP file or an empty folder is the recorder's: not covered here)
    # label-import
    ('import-missing-dataset', 'label-import {d}/nope {d}/frames', 'no index.csv in'),
    ('import-missing-labels', 'label-import {d}/unlabelled {d}/nope', 'nope: not a folder with label PNGs'),
    ('import-no-labels-arg', 'label-import {d}/unlabelled', 'give LABELS'),
    ('import-bad-map', 'label-import {d}/unlabelled {d}/frames --map a:b', "--map takes FROM:TO integers, got ['a:b']"),
    ('import-layout-no-out', 'label-import {d}/empty --layout camvid', '--layout needs --out'),
    ('import-layout-unknown', 'label-import {d}/empty --layout kitti --out {d}/l', "unknown layout 'kitti'"),
    ('import-layout-empty', 'label-import {d}/empty --layout camvid --out {d}/l', 'no CamVid split folder'),
    ('import-nothing-matches', 'label-import {d}/unlabelled {d}/frames', 'is named like a frame'),
    # propagate
    ('propagate-missing', 'propagate {d}/nope', "nope' does not exist"),
    ('propagate-no-index', 'propagate {d}/empty', 'no index.csv in'),
    ('propagate-no-human-labels', 'propagate {d}/unlabelled', 'no human-labelled frame'),
    ('propagate-method', 'propagate {d}/unlabelled --method magic', "'magic' is not one of"),
    ('propagate-confidence', 'propagate {d}/unlabelled --min-confidence 2',
     "'--min-confidence': Input should be less than or equal to 1"),
    ('propagate-distance', 'propagate {d}/unlabelled --max-distance 0',
     "'--max-distance': Input should be greater than or equal to 1"),
    ('propagate-flow-scale', 'propagate {d}/unlabelled --flow-scale 0',
     "'--flow-scale': Input should be greater than or equal to 0.05"),
    ('propagate-dis-preset', 'propagate {d}/unlabelled --dis-preset turbo', "'turbo' is not one of"),
    ('propagate-workers', 'propagate {d}/unlabelled --workers 0',
     "'--workers': Input should be greater than or equal to 1"),
    ('propagate-teacher-no-model', 'propagate {d}/unlabelled --method teacher', 'method teacher needs a model'),
    ('propagate-teacher-bad-model', 'propagate {d}/unlabelled --method teacher --model {d}/nope.pt',
     'model file not found'),
    # make-variant, noise-sigma
    ('variant-missing', 'make-variant {d}/nope {d}/v --kind noise', "nope' does not exist"),
    ('variant-kind', 'make-variant {d}/unlabelled {d}/v --kind magic', "'magic' is not one of"),
    ('variant-no-kind', 'make-variant {d}/unlabelled {d}/v', "Missing option '--kind'"),
    ('variant-n-neg', 'make-variant {d}/unlabelled {d}/v --kind per_sequence --n -1',
     "'--n': Input should be greater than or equal to 0"),
    ('variant-count-0', 'make-variant {d}/unlabelled {d}/v --kind strided --count 0',
     "'--count': Input should be greater than or equal to 1"),
    ('variant-not-dataset', 'make-variant {d}/empty {d}/v --kind per_sequence', 'empty: not an extracted dataset'),
    ('variant-no-labels', 'make-variant {d}/unlabelled {d}/v_nolab --kind per_sequence',
     'no labelled frames to build a variant'),
    ('sigma-missing', 'noise-sigma {d}/nope', "nope' does not exist"),
    ('sigma-not-dataset', 'noise-sigma {d}/empty', 'empty: not an extracted dataset'),
    ('sigma-pairs-0', 'noise-sigma {d}/unlabelled --max-pairs 0',
     "'--max-pairs': Input should be greater than or equal to 1"),
    # train, experiment
    ('train-missing', 'train {d}/nope.yaml', "nope.yaml' does not exist"),
    ('train-folder', 'train {d}/empty', "empty' is a directory"),
    ('train-broken-yaml', 'train {d}/broken.yaml', 'broken.yaml is not valid YAML'),
    ('train-unknown-key', 'train {d}/unknown.yaml', 'unknown setting(s) no_such_setting'),
    ('train-not-mapping', 'train {d}/list.yaml', 'expected a mapping at the top level, got list'),
    ('train-set-no-equals', 'train {d}/unknown.yaml --set epochs', "'epochs': expected key=value"),
    ('train-set-bad-type', 'train config/train/camvid_fpn.yaml --set epochs=many',
     "epochs: expected int, got str 'many'"),
    ('train-set-unknown', 'train config/train/camvid_fpn.yaml --set colour=blue', 'unknown setting(s) colour'),
    ('train-set-null', 'train config/train/camvid_fpn.yaml --set output=null', 'output: null is not a value'),
    ('train-dup-key', 'train {d}/dup.yaml', "line 2: key 'epochs' is given twice (first on line 1)"),
    ('train-arch-typo', 'train config/train/camvid_fpn.yaml --set arch_config={{"cached_level":1}}',
     'cached_level (did you mean cached_levels?)'),
    ('train-arch-type', 'train config/train/camvid_fpn.yaml --set arch_config={{"fpn_ch":"64"}}',
     "fpn_ch: expected int, got str '64'"),
    ('train-arch-classes', 'train config/train/camvid_fpn.yaml --set arch_config={{"num_classes":3}}',
     'arch_config.num_classes: 3 is not set here'),
    ('experiment-name', 'experiment magic config/train/davis_fpn.yaml', "'magic' is not one of"),
    ('experiment-missing-config', 'experiment frames-per-video {d}/nope.yaml', "nope.yaml' does not exist"),
    ('experiment-steps-0', 'experiment frames-per-video config/train/davis_fpn.yaml --total-steps 0',
     "'--total-steps': Input should be greater than or equal to 1"),
    ('experiment-set', 'experiment frames-per-video config/train/davis_fpn.yaml --set =1', "'=1': expected key=value"),
    # eval
    ('eval-missing-data', 'eval untrained:keyframe_fpn {d}/nope', "nope' does not exist"),
    ('eval-card-not-md', 'eval {d}/junk.pt {d}/empty --card {d}/junk.pt', '--card is where the model card'),
    ('eval-intervals-text', 'eval untrained:keyframe_fpn {d}/empty --key-intervals a,b',
     "'a,b': expected positive integers"),
    ('eval-intervals-0', 'eval untrained:keyframe_fpn {d}/empty --key-intervals 0,5',
     "'0,5': expected positive integers"),
    ('eval-max-frames', 'eval untrained:keyframe_fpn {d}/empty --max-frames -1',
     "'--max-frames': Input should be greater than or equal to 0"),
    ('eval-clip-len', 'eval untrained:keyframe_fpn {d}/empty --clip-len -2',
     "'--clip-len': Input should be greater than or equal to 0"),
    ('eval-dataset', 'eval untrained:keyframe_fpn {d}/empty --dataset kitti', "'kitti' is not one of"),
    ('eval-unknown-model', 'eval no_such_model {d}/camvid_test_only --split test', "model 'no_such_model' not found"),
    ('eval-junk-model', 'eval {d}/junk.pt {d}/camvid_test_only --split test',
     'junk.pt is not a loadable torch checkpoint'),
    ('eval-training-state', 'eval {d}/last.pt {d}/camvid_test_only --split test', 'last.pt is a training state'),
    ('eval-missing-split', 'eval untrained:keyframe_fpn {d}/camvid_test_only', "no CamVid split 'val'"),
    ('eval-empty-split', 'eval untrained:keyframe_fpn {d}/camvid_test_only --split test',
     'no labelled frames to evaluate on'),
    ('eval-not-a-dataset', 'eval untrained:keyframe_fpn {d}/empty', 'not an extracted dataset (index.csv), DAVIS'),
    ('eval-bad-device', 'eval untrained:keyframe_fpn {d}/camvid_test_only --split test --device bogus',
     "device 'bogus' is not a device"),
    # finetune
    ('finetune-missing-frame', 'finetune untrained:keyframe_fpn --frame {d}/nope.png --label {d}/colour_label.png '
                               '--sequence {d}/frames', "nope.png' does not exist"),
    ('finetune-steps-0', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                         '{d}/colour_label.png --sequence {d}/frames --steps 0',
                         "'--steps': Input should be greater than or equal to 1"),
    ('finetune-lr-0', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                      '{d}/colour_label.png --sequence {d}/frames --lr 0', "'--lr': 0.0 must be > 0"),
    ('finetune-lr-inf', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                        '{d}/colour_label.png --sequence {d}/frames --lr inf', "'--lr': inf must be > 0 and finite"),
    ('finetune-colour-label', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                              '{d}/colour_label.png --sequence {d}/frames --out-dir {d}/ft',
                              'colour_label.png is a colour image'),
    ('finetune-empty-sequence', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                                '{d}/colour_label.png --sequence {d}/empty',
     'no images (.png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff, .pgm, '),
    ('finetune-junk-model', 'finetune {d}/junk.pt --frame {d}/frames/00000.png --label '
                            '{d}/label.png --sequence {d}/frames', 'junk.pt is not a loadable torch checkpoint'),
    # export
    ('export-unknown-model', 'export no_such_model {d}/m.onnx', "model 'no_such_model' not found"),
    ('export-format', 'export {d}/junk.pt {d}/m.onnx --format tflite', "'tflite' is not one of"),
    ('export-junk', 'export {d}/junk.pt {d}/m.onnx', 'junk.pt is not a loadable torch checkpoint'),
    ('export-training-state', 'export {d}/last.pt {d}/m.onnx', 'last.pt is a training state'),
    ('export-untrained', 'export untrained:keyframe_fpn {d}/m.onnx', 'export needs a .pt checkpoint'),
    ('train-threads-neg', 'train config/train/camvid_fpn.yaml --set num_threads=-1', 'num_threads: -1 must be >= 0'),
    ('train-lr-ratio', 'train config/train/camvid_fpn.yaml --set lr_policy=exp --set lr_final_ratio=-2',
     'must be in (0, 1] for lr_policy: exp'),
    ('export-suffix', 'export {d}/junk.pt {d}/m.onnx --format ts', 'torchscript exports are .ts files'),
    ('export-under-a-file', 'export camvid_fpn {d}/fake.mp4/m.onnx', 'fake.mp4 is a file, not a folder'),
    ('eval-out-dir-a-file', 'eval untrained:keyframe_fpn {d}/camvid_test_only --split test --out-dir {d}/fake.mp4',
     'fake.mp4 is a file, not a folder'),
    # bench
    ('bench-frames-neg', 'bench untrained:keyframe_fpn --frames -1',
     "'--frames': Input should be greater than or equal to 1"),
    ('bench-input-hw', 'bench untrained:keyframe_fpn --input-hw abc', "'abc': expected HxW"),
    ('bench-image-hw-0', 'bench untrained:keyframe_fpn --image-hw 0x5', "'0x5': expected HxW"),
    ('bench-input-hw-huge', 'bench untrained:keyframe_fpn --input-hw 5000x5000',
     '25000000 pixels exceeds max_input_pixels 16777216'),
    ('bench-image-hw-huge', 'bench untrained:keyframe_fpn --image-hw 4097x4097',
     'exceeds max_input_pixels'),
    ('bench-interval-0', 'bench untrained:keyframe_fpn --keyframe-interval 0',
     "'--keyframe-interval': Input should be greater than or equal to 1"),
    ('bench-precision', 'bench untrained:keyframe_fpn --precision fp8', "'fp8' is not one of"),
    ('bench-unknown-model', 'bench no_such_model --frames 1', "model 'no_such_model' not found"),
    ('bench-unknown-arch', 'bench untrained:no_such_arch --frames 1', "unknown model 'no_such_arch'"),
    # info
    ('info-unknown', 'info no_such_model', "model 'no_such_model' not found"),
    ('info-junk', 'info {d}/junk.pt', 'junk.pt is not a loadable torch checkpoint'),
    ('info-training-state', 'info {d}/last.pt', 'last.pt is a training state'),
    ('info-untrained', 'info untrained:keyframe_fpn', 'info needs a model file'),
    ('info-folder', 'info {d}/empty', 'is a folder'),
    ('info-fake-onnx', 'info {d}/fake.mp4', 'model files end in .pt (a checkpoint), .ts or .onnx (exports)'),
    ('name-classes-junk', 'name-classes {d}/junk.pt void', 'junk.pt is not a loadable torch checkpoint'),
    ('name-classes-no-names', 'name-classes {d}/junk.pt', "Missing argument 'names'"),
    # the group itself
    ('unknown-command', 'frobnicate', "No such command 'frobnicate'"),
    ('docs-unknown-option', 'docs --fix', 'No such option: --fix'),
]


# Known defects: a progress bar started (and, for extract, bag-reader warnings logged) before the input is
# checked, so stderr has lines before the error line.
def _argv(template: str, d: Path) -> list[str]:
    return template.format(d=d).split()


class _LiveStderr(logging.StreamHandler):
    """The console script's logging (``main``: INFO and up to stderr) inside CliRunner, whose stderr is
    swapped in per call; without it pytest's log capture hid every log line a command wrote before its
    error line, so 'the error line alone' held in-process while the real script printed more."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


@pytest.fixture
def logs_to_stderr():
    root, handler = logging.getLogger(), _LiveStderr()
    handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize('name,template,says', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(bad, name, template, says, monkeypatch, logs_to_stderr):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])     # config/train/*.yaml paths
    argv = _argv(template, bad)
    r = RUNNER.invoke(app, argv)
    assert 'Traceback' not in r.output + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, f'exit {r.exit_code}\nstdout: {r.stdout[-800:]}\nstderr: {r.stderr[-800:]}'
    *before, line = r.stderr.strip().splitlines()
    assert line.startswith(f'vidseg {argv[0]}: error: ' if name != 'unknown-command' else 'vidseg: error: ')
    assert says in line and len(line) < 520, line
    assert not any(': error: ' in b for b in before), r.stderr
    assert not before, f'stderr must be the error line alone:\n{r.stderr}'


def test_there_are_enough_cases_and_every_command_is_covered():
    import typer.main
    commands = set(typer.main.get_command(app).commands)
    covered = {c[1].split()[0] for c in CASES}
    assert len(CASES) >= 60
    assert commands - covered == set(), f'no bad-input case for {commands - covered}'


@pytest.mark.parametrize('argv', [['--debug', 'info', '{junk}'], ['info', '{junk}', '--debug']])
def test_debug_shows_the_traceback(bad, argv):
    r = RUNNER.invoke(app, [a.format(junk=bad / 'junk.pt') for a in argv])
    assert r.exit_code != 0
    assert r.exception is not None and not isinstance(r.exception, SystemExit)   # raised, not swallowed


@pytest.mark.parametrize('bug', [TypeError('a bug'), RuntimeError('a bug'), KeyError('a bug')])
def test_a_bug_is_exit_1_not_2(monkeypatch, bug):
    """Only a RuntimeError that is Path.resolve()'s 'Symlink loop from ...' is the user's (exit 2)."""
    from vidseg_ros.tools import commands_models

    def broken(checkpoint):
        raise bug
    monkeypatch.setattr(commands_models, 'info', broken)
    r = RUNNER.invoke(app, ['info', 'x'])
    assert r.exit_code == 1
    assert 'internal error' in r.stderr and 'Traceback' not in r.stderr


def test_a_link_loop_path_resolve_raised_is_the_users_error(monkeypatch):
    from vidseg_ros.tools import commands_models

    def resolved(checkpoint):
        raise RuntimeError('Symlink loop from /data/a')
    monkeypatch.setattr(commands_models, 'info', resolved)
    r = RUNNER.invoke(app, ['info', 'x'])
    assert (r.exit_code, r.stderr) == (2, 'vidseg info: error: Symlink loop from /data/a\n')


@pytest.mark.parametrize('debug', [False, True])
def test_an_eof_error_is_the_error_line_alone(monkeypatch, debug):
    """A command's EOFError (a library reading a cut stream: pickle, gzip, zstd's file reader) is one line, exit 2;
    typer printed an empty line to stderr before it (closing a prompt's ^D echo), and then the line."""
    from vidseg_ros.tools import commands_models

    def cut(checkpoint):
        raise EOFError('Ran out of input')
    monkeypatch.setattr(commands_models, 'info', cut)
    r = RUNNER.invoke(app, ['info', 'x.pt', *(['--debug'] if debug else [])])
    if debug:
        assert isinstance(r.exception, EOFError) and r.stderr == ''    # raised as it came, for its traceback
    else:
        assert (r.exit_code, r.stderr) == (2, 'vidseg info: error: EOFError: Ran out of input\n')


def test_a_command_that_aborts_says_aborted(monkeypatch):
    import typer

    from vidseg_ros.tools import commands_models

    def abort(checkpoint):
        raise typer.Abort()
    monkeypatch.setattr(commands_models, 'info', abort)
    r = RUNNER.invoke(app, ['info', 'x.pt'])
    assert (r.exit_code, r.stderr) == (130, 'vidseg info: error: aborted\n')


def test_long_messages_are_truncated(bad):
    r = RUNNER.invoke(app, ['info', str(bad / ('x' * 2000) / 'm.pt')])
    assert r.exit_code == 2
    line, = r.stderr.strip().splitlines()
    assert len(line) < 520 and line.startswith(f'vidseg info: error: {bad}/xxx') and ' ... ' in line
    assert line.endswith('xxx/m.pt: File name too long'), line     # the end says what is wrong


def test_long_messages_keep_their_advice(monkeypatch):
    """The middle of an over-long message goes, not its end: a truncated .ts's 're-export' advice was cut."""
    from vidseg_ros.tools import commands_models

    def long_error(checkpoint):
        raise ValueError('m.ts is truncated: ' + 'PK\x03\x04 ' * 200 + '; re-export it with `vidseg export`')
    monkeypatch.setattr(commands_models, 'info', long_error)
    r = RUNNER.invoke(app, ['info', 'm.ts'])
    line, = r.stderr.strip().splitlines()
    assert line.startswith('vidseg info: error: m.ts is truncated: ') and ' ... ' in line, line
    assert line.endswith('; re-export it with `vidseg export`') and len(line) < 520, line


def test_a_file_where_a_folder_must_be(bad, tmp_path):
    """mkdir over a file said 'afile: File exists'; a path through a file said 'Not a directory'."""
    bag = tmp_path / 'bag'
    assert RUNNER.invoke(app, ['bag-from-frames', str(bad / 'frames'), '--out', str(bag)]).exit_code == 0
    afile = tmp_path / 'afile'
    afile.write_text('a file')
    for out in (afile, afile / 'sub'):
        r = RUNNER.invoke(app, ['extract', str(bag), '--out', str(out)])
        assert r.exit_code == 2 and r.stderr.strip() == f'vidseg extract: error: {afile} is a file, not a folder', \
            r.stderr
    assert afile.read_text() == 'a file'


def test_an_existing_file_made_exclusively_is_not_called_a_folder(tmp_path, monkeypatch):
    """O_EXCL on an existing file (a bag file) is FileExistsError too: that one keeps its own words."""
    from vidseg_ros.tools import commands_models
    taken = tmp_path / 'bag_0.mcap'
    taken.write_text('')

    def exclusive(checkpoint):
        os.open(taken, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    monkeypatch.setattr(commands_models, 'info', exclusive)
    r = RUNNER.invoke(app, ['info', 'x'])
    assert r.stderr.strip() == f'vidseg info: error: {taken}: File exists'


VIDSEG = Path(sys.executable).with_name('vidseg')


@pytest.mark.skipif(not VIDSEG.is_file(), reason='vidseg console script not installed (make install)')
@pytest.mark.parametrize('argv,says', [
    (['extract', '{d}/fake.mp4', '--out', '{d}/o_sub'], 'fake.mp4 is not a bag'),
    (['info', '{d}/last.pt'], 'last.pt is a training state'),
    (['eval', 'untrained:keyframe_fpn', '{d}/empty', '--key-intervals', 'a,b'], "'a,b': expected positive integers"),
    (['bench', '--frames', '-1'], "'--frames': Input should be greater than or equal to 1")])
def test_real_process_prints_one_line_and_exits_2(bad, argv, says):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    p = subprocess.run([str(VIDSEG)] + [a.format(d=bad) for a in argv], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 2, p.stderr
    *before, line = p.stderr.strip().splitlines()
    assert line.startswith(f'vidseg {argv[0]}: error: ') and says in line, line
    assert 'Traceback' not in p.stderr and not any(': error: ' in b for b in before), p.stderr


def test_opencv_warnings_stay_off_stderr(tmp_path):
    """A label file missing under the index: OpenCV logged '[ WARN:0@...] findDecoder imread_(...)' (C level,
    past Python's stderr) before the error line that says the same."""
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    ds = tmp_path / 'ds'
    (ds / 'images' / 's').mkdir(parents=True)
    recs = []
    for i in range(3):
        img = ds / 'images' / 's' / f'{i}.png'
        cv2.imwrite(str(img), np.full((24, 32, 3), 40 * i, np.uint8))
        recs.append(FrameRecord('s', i, img, ds / 'labels' / 's' / f'{i}.png' if i == 0 else None, i,
                                'human' if i == 0 else 'none'))
    write_index(ds, recs)
    write_meta(ds, {'classes': ['background', 'object'], 'ignore_index': 255})
    p = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'propagate', str(ds)], capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != 'OPENCV_LOG_LEVEL'})
    assert p.returncode == 2, p.stderr
    line, = p.stderr.strip().splitlines()
    assert line.startswith('vidseg propagate: error: cannot read label file'), p.stderr


def _absent(root: Path, name: str) -> Path:
    """A folder that, first on the path, makes ``import name`` fail as an uninstalled (or broken) package."""
    (root / name).mkdir(parents=True)
    (root / name / '__init__.py').write_text(f"raise ImportError('simulated absence of {name}')\n")
    return root


@pytest.mark.parametrize('missing,says,code', [
    ('cv2', 'info needs the opencv-python-headless package: pip install opencv-python-headless (in a source checkout: '
     'make install)', 2),
    ('distributed', 'info needs the dask[distributed] package: pip install "dask[distributed]" (or pip install '
     '"vidseg_ros[dask]"; in a source checkout: make install)', 2),
    ('a broken onnxscript', 'info needs the onnxscript package: pip install onnxscript (or pip install '
     '"vidseg_ros[onnx]"; in a source checkout: make install)', 2),
    ('vidseg_ros.no_such_module', 'internal error, please report it: ModuleNotFoundError', 1)])
def test_a_missing_package_says_what_to_install(monkeypatch, tmp_path, missing, says, code):
    """A command without one of its packages (onnx for export, cv2, lz4, ...) was 'internal error, please
    report it' (exit 1); a missing module of this package itself still is a bug."""
    from vidseg_ros.tools import commands_models

    def needs(checkpoint):
        if missing.startswith('a broken '):     # a package that fails while importing itself: no e.name
            monkeypatch.syspath_prepend(str(_absent(tmp_path, missing.split()[-1])))
            monkeypatch.delitem(sys.modules, missing.split()[-1], raising=False)
            __import__(missing.split()[-1])
        raise ModuleNotFoundError(f'No module named {missing!r}', name=missing)
    monkeypatch.setattr(commands_models, 'info', needs)
    r = RUNNER.invoke(app, ['info', 'x'])
    assert r.exit_code == code, r.stderr
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f'vidseg info: error: {says}'), line


def test_the_missing_package_line_names_the_extra_that_brings_it():
    """The line said "(or make install)", which means nothing to a user of the wheel: every package of an
    extra names that extra, and setup.py declares the same extras (one definition, vidseg_ros/extras.py)."""
    import runpy

    import setuptools

    from vidseg_ros.extras import EXTRAS
    from vidseg_ros.tools.cli_errors import needs_package
    for extra, packages in EXTRAS.items():
        for package in packages if extra != 'all' else ():
            assert f'pip install "vidseg_ros[{extra}]"' in needs_package('x', package), package
    assert 'vidseg_ros[' not in needs_package('x', 'lz4')      # a requirement, not an extra's
    setup_globals = {}
    real_setup, setuptools.setup = setuptools.setup, lambda **kw: setup_globals.update(kw)
    try:
        runpy.run_path(str(Path(__file__).parents[2] / 'setup.py'), run_name='not_main')
    finally:
        setuptools.setup = real_setup
    assert setup_globals['extras_require'] == EXTRAS


def test_a_missing_package_in_a_real_process(bad, tmp_path):
    """The QA case: bag-from-frames --compress without lz4 (PYTHONPATH shadowing it, as an uninstall would)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_absent(tmp_path / 'absent', 'lz4')),
                                                       os.environ['PYTHONPATH']]))
    p = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-from-frames', str(bad / 'frames'), '--out',
                        str(tmp_path / 'bag'), '--compress'], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == ('vidseg bag-from-frames: error: bag-from-frames needs the lz4 package: '
                                'pip install lz4 (in a source checkout: make install)'), p.stderr


def test_without_tqdm_a_command_runs_without_a_progress_bar(monkeypatch, caplog):
    """On a terminal the data commands import tqdm for their bar: without it they failed (exit 1)."""
    from vidseg_ros.tools.commands_data import _bar
    monkeypatch.setitem(sys.modules, 'tqdm', None)
    with caplog.at_level(logging.INFO), _bar(10, 'frame', 'extract', enabled=True) as update:
        for _ in range(10):
            update(1)
    assert [r.getMessage() for r in caplog.records] == ['no progress bar: tqdm is not installed (pip install tqdm)']


def test_without_tqdm_train_and_finetune_progress_run_on(monkeypatch, caplog):
    """train's and finetune's bars imported tqdm themselves: without it both stopped ('needs the tqdm package')
    where the data commands run on without a bar."""
    from vidseg_ros.tools.commands_train import _Progress
    monkeypatch.setitem(sys.modules, 'tqdm', None)
    with caplog.at_level(logging.INFO):
        progress = _Progress(2, enabled=True)
        progress({'kind': 'step', 'epoch': 0, 'loss': 1.0, 'lr': 1e-3, 'samples_per_s': 3.0})
        progress({'kind': 'epoch', 'epoch': 1, 'loss': 1.0, 'seconds': 1.0})
    assert 'no progress bar: tqdm is not installed (pip install tqdm)' in [r.getMessage() for r in caplog.records]
    assert any('epoch 1/2 loss 1.0000' in r.getMessage() for r in caplog.records)
