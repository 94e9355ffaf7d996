"""Paths that are there but are no regular file (a FIFO, /dev/zero, a link loop) where the CLI reads or writes a
file: one line and exit 2, never a wait without end (``open()`` of a FIFO waits for a writer), memory without
bound (/dev/zero never ends) or a device replaced by a file (run as root, a card written to a link to /dev/full
replaced /dev/full itself). The commands run in a child with a timeout and a memory cap: the old code hung or
took gigabytes there."""
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from support.bags import mono8_bag
from support.eval_data import folder_dataset, tiny_fpn

from vidseg_ros.files import NotAFileError, open_regular, write_file_atomic

ROOT = Path(__file__).resolve().parents[2]
FIFO = 'is not a regular file (a FIFO, a device...)'


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))     # /dev/zero read whole: a MemoryError, not 23 GB


def vidseg(*argv, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, argv)], capture_output=True, text=True,
                          timeout=90, cwd=cwd or ROOT, preexec_fn=_capped,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2 and 'Traceback' not in p.stderr, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def to_dev_zero(path: Path) -> Path:
    path.symlink_to('/dev/zero')
    return path


SPECIAL = {'fifo': fifo, 'dev-zero': to_dev_zero}


def test_open_regular_refuses_what_is_no_file_without_blocking(tmp_path):
    for path in (fifo(tmp_path / 'f'), Path('/dev/zero'), tmp_path):
        with pytest.raises(NotAFileError) as e:
            open_regular(path)
        assert e.value.filename == str(path)
    (tmp_path / 'a').write_text('x')
    with open_regular(tmp_path / 'a', 'r') as f:
        assert f.read() == 'x'


@pytest.mark.parametrize('through_link', [False, True])
def test_a_fifo_is_not_replaced_by_a_written_file(tmp_path, through_link):
    target = fifo(tmp_path / 'card.md')
    path = tmp_path / 'link.md' if through_link else target
    if through_link:
        path.symlink_to(target)
    with pytest.raises(NotAFileError, match='not replaced'):
        write_file_atomic(path, b'text')
    assert target.is_fifo() and [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')] == []


def test_a_device_is_not_replaced_by_a_written_file(tmp_path):
    dev = tmp_path / 'null'
    try:
        os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))     # a /dev/null of this test's own
    except PermissionError:
        pytest.skip('making a device node needs root (where the bug replaced /dev/full)')
    with pytest.raises(NotAFileError):
        write_file_atomic(dev, b'text')
    assert dev.is_char_device()


@pytest.mark.parametrize('kind', list(SPECIAL))
def test_extract_salvages_a_bag_whose_metadata_yaml_is_no_file(tmp_path, kind):
    bag = mono8_bag(tmp_path / 'bag', ['/cam/image'])
    (bag / 'metadata.yaml').unlink()
    SPECIAL[kind](bag / 'metadata.yaml')
    p = vidseg('extract', bag, '--out', tmp_path / 'ds')
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'metadata.yaml is not a regular file' in p.stderr
    assert len((tmp_path / 'ds' / 'index.csv').read_text().splitlines()) == 4     # header + 3 frames


def test_a_fifo_as_the_bag_says_what_it_is(tmp_path):
    line = one_line_error(vidseg('extract', fifo(tmp_path / 'x.mcap'), '--out', tmp_path / 'ds'))
    assert line.endswith(f'bag {tmp_path / "x.mcap"} {FIFO}'), line


def test_bag_recover_refuses_a_fifo_among_the_bag_files(tmp_path):
    bag = mono8_bag(tmp_path / 'bag', ['/cam/image'])
    fifo(bag / 'bag_1.mcap')
    line = one_line_error(vidseg('bag-recover', bag, '--out', tmp_path / 'out'))
    assert f'{bag / "bag_1.mcap"} {FIFO}' in line and not (tmp_path / 'out').exists(), line


def test_bag_recover_refuses_an_out_that_is_a_link_loop(tmp_path):
    bag = mono8_bag(tmp_path / 'bag', ['/cam/image'])
    (bag / 'metadata.yaml').unlink()        # something to recover
    (tmp_path / 'a').symlink_to(tmp_path / 'b')
    (tmp_path / 'b').symlink_to(tmp_path / 'a')
    line = one_line_error(vidseg('bag-recover', bag, '--out', tmp_path / 'a'))
    assert 'exists and is not an empty folder' in line, line


@pytest.mark.parametrize('kind', list(SPECIAL))
def test_a_class_table_that_is_no_file_is_refused(tmp_path, kind):
    root = folder_dataset(tmp_path / 'ds', [__import__('numpy').zeros((8, 8, 3), 'uint8')], [None])
    labels = tmp_path / 'labels'
    labels.mkdir()
    table = SPECIAL[kind](tmp_path / 'classes.csv')
    line = one_line_error(vidseg('label-import', root, labels, '--match', 'order', '--classes', table))
    assert line.endswith(f'{table}: {FIFO}'), line


@pytest.mark.parametrize('kind', list(SPECIAL))
def test_a_train_config_that_is_no_file_is_refused(tmp_path, kind):
    config = SPECIAL[kind](tmp_path / 'run.yaml')
    line = one_line_error(vidseg('train', config))
    assert line == f'vidseg train: error: cannot read config {config}: {FIFO}', line


@pytest.fixture(scope='module')
def eval_inputs(tmp_path_factory):
    import numpy as np
    root = tmp_path_factory.mktemp('eval')
    model = tiny_fpn(root / 'm.pt')
    labels = [np.zeros((32, 32), np.uint8) for _ in range(2)]
    data = folder_dataset(root / 'ds', [np.full((32, 32, 3), 60 * i, np.uint8) for i in range(2)], labels)
    return model, data


def test_eval_refuses_a_card_on_a_fifo_before_the_run(tmp_path, eval_inputs):
    model, data = eval_inputs
    card = fifo(tmp_path / 'card.md')
    line = one_line_error(vidseg('eval', model, data, '--split', '', '--key-intervals', '1', '--card', card,
                                 '--out-dir', tmp_path / 'out'))
    assert f'{card}: {FIFO}: not replaced' in line and card.is_fifo(), line
    assert not list((tmp_path / 'out').rglob('*.json'))      # refused before the run, not after it


def test_eval_writes_a_card_at_a_link_loop(tmp_path, eval_inputs):
    """A link loop as --card was an internal error (RuntimeError from Path.resolve) after the whole run."""
    model, data = eval_inputs
    (tmp_path / 'a.md').symlink_to(tmp_path / 'b.md')
    (tmp_path / 'b.md').symlink_to(tmp_path / 'a.md')
    p = vidseg('eval', model, data, '--split', '', '--key-intervals', '1', '--card', tmp_path / 'a.md',
               '--out-dir', tmp_path / 'out')
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / 'a.md').read_text().startswith('#')


def test_a_new_output_folder_that_is_a_link_loop_is_no_internal_error(tmp_path):
    """finetune --out-dir (and label-import --out) at a link loop: RuntimeError('Symlink loop') from
    Path.resolve, an internal error (exit 1); now the folder's making says what is wrong."""
    from vidseg_ros.data.datasets.labels import check_new_output
    (tmp_path / 'a').symlink_to(tmp_path / 'b')
    (tmp_path / 'b').symlink_to(tmp_path / 'a')
    check_new_output(tmp_path / 'a', tmp_path / 'src')
