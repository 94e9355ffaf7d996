"""The CLI contract: every subcommand given bad input ends with one line on stderr and exit code 2.

Each case runs in-process through typer's CliRunner (the same ``main`` as the console script); a few
run the installed ``vidseg`` script in a subprocess to check the real stderr and exit status. Any
traceback, any exit code other than 2 and any multi-line error fails.
"""
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
    torch.save({'model': {}, 'optimizer': {}, 'epoch': 1, 'step': 10, 'best': 0.1, 'history': [],
                'config': {}}, d / 'last.pt')
    frames = d / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(frames / f'{i:05d}.png'), rng.integers(0, 255, (24, 32, 3), np.uint8))
    cv2.imwrite(str(d / 'colour_label.png'), rng.integers(0, 255, (24, 32, 3), np.uint8))
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


# (name, argv with {d} for the fixture folder); every one must exit 2 with one error line.
CASES = [
    # extract
    ('extract-missing-bag', 'extract {d}/nope --out {d}/o'),
    ('extract-fake-mp4', 'extract {d}/fake.mp4 --out {d}/o_fake'),
    ('extract-empty-folder', 'extract {d}/empty --out {d}/o_empty'),
    ('extract-every-0', 'extract {d}/empty --out {d}/o --every 0'),
    ('extract-every-neg', 'extract {d}/empty --out {d}/o --every -1'),
    ('extract-every-text', 'extract {d}/empty --out {d}/o --every abc'),
    ('extract-gap-neg', 'extract {d}/empty --out {d}/o --max-gap-s -1'),
    ('extract-gap-0', 'extract {d}/empty --out {d}/o --max-gap-s 0'),
    ('extract-stop-before-start', 'extract {d}/empty --out {d}/o --start-s 100 --stop-s 1'),
    ('extract-start-neg', 'extract {d}/empty --out {d}/o --start-s -1'),
    ('extract-workers-0', 'extract {d}/empty --out {d}/o --workers 0'),
    ('extract-format', 'extract {d}/empty --out {d}/o --image-format gif'),
    ('extract-stamp', 'extract {d}/empty --out {d}/o --stamp wall'),
    ('extract-no-out', 'extract {d}/empty'),
    ('extract-no-args', 'extract'),
    ('extract-unknown-option', 'extract {d}/empty --out {d}/o --bogus'),
    # bag-from-frames
    ('b2f-missing', 'bag-from-frames {d}/nope --out {d}/b'),
    ('b2f-empty-folder', 'bag-from-frames {d}/empty --out {d}/b_empty'),
    ('b2f-fake-video', 'bag-from-frames {d}/fake.mp4 --out {d}/b_fake'),
    ('b2f-rate-0', 'bag-from-frames {d}/frames --out {d}/b --rate-hz 0'),
    ('b2f-rate-neg', 'bag-from-frames {d}/frames --out {d}/b --rate-hz -5'),
    ('b2f-storage', 'bag-from-frames {d}/frames --out {d}/b --storage zip'),
    ('b2f-encoding', 'bag-from-frames {d}/frames --out {d}/b_enc --encoding rgb99'),
    ('b2f-out-exists', 'bag-from-frames {d}/frames --out {d}/frames'),
    # bag-recover
    ('recover-missing', 'bag-recover {d}/nope'),
    # (bag-recover on a non-MCAP file or an empty folder is the recorder's: not covered here)
    # label-import
    ('import-missing-dataset', 'label-import {d}/nope {d}/frames'),
    ('import-missing-labels', 'label-import {d}/unlabelled {d}/nope'),
    ('import-no-labels-arg', 'label-import {d}/unlabelled'),
    ('import-bad-map', 'label-import {d}/unlabelled {d}/frames --map a:b'),
    ('import-layout-no-out', 'label-import {d}/empty --layout camvid'),
    ('import-layout-unknown', 'label-import {d}/empty --layout kitti --out {d}/l'),
    ('import-layout-empty', 'label-import {d}/empty --layout camvid --out {d}/l'),
    ('import-nothing-matches', 'label-import {d}/unlabelled {d}/frames'),
    # propagate
    ('propagate-missing', 'propagate {d}/nope'),
    ('propagate-no-index', 'propagate {d}/empty'),
    ('propagate-no-human-labels', 'propagate {d}/unlabelled'),
    ('propagate-method', 'propagate {d}/unlabelled --method magic'),
    ('propagate-confidence', 'propagate {d}/unlabelled --min-confidence 2'),
    ('propagate-distance', 'propagate {d}/unlabelled --max-distance 0'),
    ('propagate-flow-scale', 'propagate {d}/unlabelled --flow-scale 0'),
    ('propagate-dis-preset', 'propagate {d}/unlabelled --dis-preset turbo'),
    ('propagate-workers', 'propagate {d}/unlabelled --workers 0'),
    ('propagate-teacher-no-model', 'propagate {d}/unlabelled --method teacher'),
    ('propagate-teacher-bad-model', 'propagate {d}/unlabelled --method teacher --model {d}/nope.pt'),
    # make-variant, noise-sigma
    ('variant-missing', 'make-variant {d}/nope {d}/v --kind noise'),
    ('variant-kind', 'make-variant {d}/unlabelled {d}/v --kind magic'),
    ('variant-no-kind', 'make-variant {d}/unlabelled {d}/v'),
    ('variant-n-neg', 'make-variant {d}/unlabelled {d}/v --kind per_sequence --n -1'),
    ('variant-count-0', 'make-variant {d}/unlabelled {d}/v --kind strided --count 0'),
    ('variant-not-dataset', 'make-variant {d}/empty {d}/v --kind per_sequence'),
    ('variant-no-labels', 'make-variant {d}/unlabelled {d}/v_nolab --kind per_sequence'),
    ('sigma-missing', 'noise-sigma {d}/nope'),
    ('sigma-not-dataset', 'noise-sigma {d}/empty'),
    ('sigma-pairs-0', 'noise-sigma {d}/unlabelled --max-pairs 0'),
    # train, experiment
    ('train-missing', 'train {d}/nope.yaml'),
    ('train-folder', 'train {d}/empty'),
    ('train-broken-yaml', 'train {d}/broken.yaml'),
    ('train-unknown-key', 'train {d}/unknown.yaml'),
    ('train-not-mapping', 'train {d}/list.yaml'),
    ('train-set-no-equals', 'train {d}/unknown.yaml --set epochs'),
    ('train-set-bad-type', 'train config/train/camvid_fpn.yaml --set epochs=many'),
    ('train-set-unknown', 'train config/train/camvid_fpn.yaml --set colour=blue'),
    ('experiment-name', 'experiment magic config/train/davis_fpn.yaml'),
    ('experiment-missing-config', 'experiment frames-per-video {d}/nope.yaml'),
    ('experiment-steps-0', 'experiment frames-per-video config/train/davis_fpn.yaml --total-steps 0'),
    ('experiment-set', 'experiment frames-per-video config/train/davis_fpn.yaml --set =1'),
    # eval
    ('eval-missing-data', 'eval untrained:keyframe_fpn {d}/nope'),
    ('eval-intervals-text', 'eval untrained:keyframe_fpn {d}/empty --key-intervals a,b'),
    ('eval-intervals-0', 'eval untrained:keyframe_fpn {d}/empty --key-intervals 0,5'),
    ('eval-max-frames', 'eval untrained:keyframe_fpn {d}/empty --max-frames -1'),
    ('eval-clip-len', 'eval untrained:keyframe_fpn {d}/empty --clip-len -2'),
    ('eval-dataset', 'eval untrained:keyframe_fpn {d}/empty --dataset kitti'),
    ('eval-unknown-model', 'eval no_such_model {d}/camvid_test_only --split test'),
    ('eval-junk-model', 'eval {d}/junk.pt {d}/camvid_test_only --split test'),
    ('eval-training-state', 'eval {d}/last.pt {d}/camvid_test_only --split test'),
    ('eval-missing-split', 'eval untrained:keyframe_fpn {d}/camvid_test_only'),
    ('eval-empty-split', 'eval untrained:keyframe_fpn {d}/camvid_test_only --split test'),
    ('eval-not-a-dataset', 'eval untrained:keyframe_fpn {d}/empty'),
    # finetune
    ('finetune-missing-frame', 'finetune untrained:keyframe_fpn --frame {d}/nope.png --label {d}/colour_label.png '
                               '--sequence {d}/frames'),
    ('finetune-steps-0', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                         '{d}/colour_label.png --sequence {d}/frames --steps 0'),
    ('finetune-lr-0', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                      '{d}/colour_label.png --sequence {d}/frames --lr 0'),
    ('finetune-colour-label', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                              '{d}/colour_label.png --sequence {d}/frames --out-dir {d}/ft'),
    ('finetune-empty-sequence', 'finetune untrained:keyframe_fpn --frame {d}/frames/00000.png --label '
                                '{d}/colour_label.png --sequence {d}/empty'),
    ('finetune-junk-model', 'finetune {d}/junk.pt --frame {d}/frames/00000.png --label '
                            '{d}/colour_label.png --sequence {d}/frames'),
    # export
    ('export-unknown-model', 'export no_such_model {d}/m.onnx'),
    ('export-format', 'export {d}/junk.pt {d}/m.onnx --format tflite'),
    ('export-junk', 'export {d}/junk.pt {d}/m.onnx'),
    ('export-training-state', 'export {d}/last.pt {d}/m.onnx'),
    ('export-untrained', 'export untrained:keyframe_fpn {d}/m.onnx'),
    # bench
    ('bench-frames-neg', 'bench untrained:keyframe_fpn --frames -1'),
    ('bench-input-hw', 'bench untrained:keyframe_fpn --input-hw abc'),
    ('bench-image-hw-0', 'bench untrained:keyframe_fpn --image-hw 0x5'),
    ('bench-interval-0', 'bench untrained:keyframe_fpn --keyframe-interval 0'),
    ('bench-precision', 'bench untrained:keyframe_fpn --precision fp8'),
    ('bench-unknown-model', 'bench no_such_model --frames 1'),
    ('bench-unknown-arch', 'bench untrained:no_such_arch --frames 1'),
    # info
    ('info-unknown', 'info no_such_model'),
    ('info-junk', 'info {d}/junk.pt'),
    ('info-training-state', 'info {d}/last.pt'),
    ('info-untrained', 'info untrained:keyframe_fpn'),
    ('info-folder', 'info {d}/empty'),
    ('info-fake-onnx', 'info {d}/fake.mp4'),
    # the group itself
    ('unknown-command', 'frobnicate'),
    ('docs-unknown-option', 'docs --fix'),
]


def _argv(template: str, d: Path) -> list[str]:
    return template.format(d=d).split()


@pytest.mark.parametrize('name,template', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(bad, name, template, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])     # config/train/*.yaml paths
    r = RUNNER.invoke(app, _argv(template, bad))
    assert 'Traceback' not in r.output + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [line for line in r.stderr.splitlines() if ': error: ' in line]
    assert r.exit_code == 2, f'exit {r.exit_code}\nstdout: {r.stdout[-800:]}\nstderr: {r.stderr[-800:]}'
    assert len(errors) == 1, r.stderr
    assert len(errors[0]) < 520


def test_there_are_enough_cases_and_every_command_is_covered():
    import typer.main
    commands = set(typer.main.get_command(app).commands)
    covered = {c[1].split()[0] for c in CASES}
    assert len(CASES) >= 60
    assert commands - covered == set(), f'no bad-input case for {commands - covered}'


def test_messages_say_what_is_wrong(bad):
    cases = {('info', str(bad / 'last.pt')): 'training state',
             ('extract', str(bad / 'fake.mp4'), '--out', str(bad / 'o2')): 'not a bag',
             ('eval', 'untrained:keyframe_fpn', str(bad / 'camvid_test_only')): 'splits here: test',
             ('propagate', str(bad / 'unlabelled')): 'no human-labelled frame'}
    for argv, text in cases.items():
        r = RUNNER.invoke(app, list(argv))
        assert text in r.stderr, (argv, r.stderr)


@pytest.mark.parametrize('argv', [['--debug', 'info', '{junk}'], ['info', '{junk}', '--debug']])
def test_debug_shows_the_traceback(bad, argv):
    r = RUNNER.invoke(app, [a.format(junk=bad / 'junk.pt') for a in argv])
    assert r.exit_code != 0
    assert r.exception is not None and not isinstance(r.exception, SystemExit)   # raised, not swallowed


def test_a_bug_is_exit_1_not_2(monkeypatch):
    from vidseg_ros.tools import commands_models

    def broken(checkpoint):
        raise TypeError('a bug')
    monkeypatch.setattr(commands_models, 'info', broken)
    r = RUNNER.invoke(app, ['info', 'x'])
    assert r.exit_code == 1
    assert 'internal error' in r.stderr and 'Traceback' not in r.stderr


def test_long_messages_are_truncated(bad):
    r = RUNNER.invoke(app, ['info', str(bad / ('x' * 2000) / 'm.pt')])
    assert r.exit_code == 2
    line, = r.stderr.strip().splitlines()
    assert len(line) < 520 and line.endswith('...')


VIDSEG = Path(sys.executable).with_name('vidseg')


@pytest.mark.skipif(not VIDSEG.is_file(), reason='vidseg console script not installed (make install)')
@pytest.mark.parametrize('argv', [['extract', '{d}/fake.mp4', '--out', '{d}/o_sub'], ['info', '{d}/last.pt'],
                                  ['eval', 'untrained:keyframe_fpn', '{d}/empty', '--key-intervals', 'a,b'],
                                  ['bench', '--frames', '-1']])
def test_real_process_prints_one_line_and_exits_2(bad, argv):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    p = subprocess.run([str(VIDSEG)] + [a.format(d=bad) for a in argv], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 2, p.stderr
    assert 'Traceback' not in p.stderr
    errors = [line for line in p.stderr.splitlines() if ': error: ' in line]
    assert len(errors) == 1, p.stderr
