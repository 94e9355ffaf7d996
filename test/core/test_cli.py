"""`vidseg` wires the library: help lists every command; a bag round trip runs through the CLI."""
import json

import cv2
import numpy as np
from typer.testing import CliRunner

from vidseg_ros.cli import app

RUNNER = CliRunner()


def test_help_lists_the_commands():
    result = RUNNER.invoke(app, ['--help'])
    assert result.exit_code == 0
    for cmd in ('extract', 'bag-from-frames', 'bag-recover', 'label-import', 'propagate', 'make-variant',
                'train', 'eval', 'experiment', 'finetune', 'export', 'info'):
        assert cmd in result.output


def test_frames_to_bag_to_dataset_round_trip(tmp_path):
    frames = tmp_path / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (24, 32, 3), np.uint8) for _ in range(5)]
    for i, img in enumerate(imgs):
        cv2.imwrite(str(frames / f'{i:03d}.png'), img)
    bag = tmp_path / 'bag'
    r = RUNNER.invoke(app, ['bag-from-frames', str(frames), '--out', str(bag), '--rate-hz', '10'])
    assert r.exit_code == 0, r.output
    out = tmp_path / 'dataset'
    r = RUNNER.invoke(app, ['extract', str(bag), '--out', str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary['written'] == 5
    written = sorted((out / 'images').rglob('*.png'))
    assert [cv2.imread(str(p)).tobytes() for p in written] == [img.tobytes() for img in imgs]


def test_bad_option_is_a_clear_error(tmp_path):
    r = RUNNER.invoke(app, ['train', str(tmp_path / 'missing.yaml')])
    assert r.exit_code == 2
    line, = r.stderr.strip().splitlines()     # one line, no traceback
    assert line.startswith('vidseg train: error: ') and "missing.yaml' does not exist" in line, line


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    """Bars redraw with carriage returns: piped into a log (CI, launch, `2> file`) they are noise, so the
    data commands show them only when stderr is a terminal, as train does."""
    from vidseg_ros.tools import commands_data
    seen = {}

    def fake(name):
        def run(*args, **kwargs):
            seen[name] = kwargs.get('progress', True)
            return {}
        return run
    for name in ('extract', 'bag_from_frames', 'propagate'):
        monkeypatch.setattr(commands_data, name, fake(name))
    (tmp_path / 'frames').mkdir()
    for argv in (['extract', str(tmp_path), '--out', str(tmp_path / 'ds')],
                 ['bag-from-frames', str(tmp_path / 'frames'), '--out', str(tmp_path / 'bag')],
                 ['propagate', str(tmp_path)]):
        r = RUNNER.invoke(app, argv)
        assert r.exit_code == 0, r.output
    assert seen == {'extract': False, 'bag_from_frames': False, 'propagate': False}


def test_results_are_strict_json(capsys):
    """json.dumps writes a bare NaN for an undefined score, which JSON readers (jq, browsers) refuse."""
    from vidseg_ros.cli import _print
    _print({'mIoU': float('nan'), 'per_class': [1.0, float('inf')], 'ok': 0.5})
    assert json.loads(capsys.readouterr().out) == {'mIoU': None, 'per_class': [1.0, None], 'ok': 0.5}


def test_a_log_message_quoting_100_kb_is_one_line_of_a_few_kb():
    """The CLI's log lines escaped control characters but kept any length: a bag field of 100 kB quoted with %s
    (unclipped somewhere) was a 100 kB line on stderr. Its middle is cut now; start and end stay."""
    import subprocess
    import sys
    code = ('from vidseg_ros.cli import setup_logging; setup_logging(); import logging; '
            'logging.getLogger("vidseg_ros.data.bags.reader").warning("%s: read failed (%s); salvaging", "/bags/b", '
            + repr('\x1b[2J\r\n[ERROR] forged ' + 'A' * 100_000) + ')')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    line, = p.stderr.splitlines()
    assert len(line) < 2100 and '\x1b' not in line and '\r' not in line, (len(line), line[:200])
    assert line.startswith('WARNING vidseg_ros.data.bags.reader: /bags/b: read failed (\\x1b[2J\\r\\n[ERROR] forged')
    assert line.endswith('AAAA); salvaging')
