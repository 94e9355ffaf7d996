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


def test_an_interruption_after_open_took_the_descriptor_closes_it_once(tmp_path, monkeypatch):
    """A SIGTERM right after open() had taken the descriptor (and closed it, failing) was followed by open_regular
    closing it again: EBADF replaced the interruption (bag-from-frames exited 2, 'Bad file descriptor'), and a
    second close can close a number another file has been given meanwhile."""
    import builtins

    from vidseg_ros import files
    (tmp_path / 'a').write_bytes(b'x')

    def interrupted_open(*args, **kwargs):
        builtins.open(*args, **kwargs).close()   # open() had the descriptor and let it go
        raise KeyboardInterrupt
    monkeypatch.setattr(files, 'open', interrupted_open, raising=False)
    with pytest.raises(KeyboardInterrupt):
        open_regular(tmp_path / 'a')


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


@pytest.mark.parametrize('kind', [*SPECIAL, 'dangling'])
@pytest.mark.parametrize('command', ['propagate', 'make-variant'])
def test_an_index_csv_that_is_no_file_is_named_not_taken_for_none(tmp_path, kind, command):
    """A FIFO, /dev/zero or a dangling link as index.csv read "no index.csv in ...; create it with `vidseg extract`"
    (propagate) or "not an extracted dataset ..., DAVIS ..., CamVid ... folder" (make-variant)."""
    root = folder_dataset(tmp_path / 'ds', [__import__('numpy').zeros((8, 8, 3), 'uint8')], [None])
    index = root / 'index.csv'
    index.unlink()
    if kind == 'dangling':
        index.symlink_to(tmp_path / 'nowhere.csv')
    else:
        SPECIAL[kind](index)
    argv = [root] if command == 'propagate' else [root, tmp_path / 'out', '--kind', 'per_sequence']
    line = one_line_error(vidseg(command, *argv))
    problem = 'is a link to nothing, or one that loops' if kind == 'dangling' else FIFO
    assert line == f'vidseg {command}: error: {index}: {problem}', line


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
    from vidseg_ros.data.datasets.layouts import check_new_output
    (tmp_path / 'a').symlink_to(tmp_path / 'b')
    (tmp_path / 'b').symlink_to(tmp_path / 'a')
    check_new_output(tmp_path / 'a', tmp_path / 'src')


def test_a_fifo_among_the_frames_is_one_line_not_a_hang(tmp_path):
    """A FIFO named like a frame: open() in the image reader waited for a writer for good (bag-from-frames,
    eval, finetune --frame, the video source node, which then ignored SIGTERM)."""
    frames = tmp_path / 'frames'
    frames.mkdir()
    import cv2
    import numpy as np
    cv2.imwrite(str(frames / '0.png'), np.zeros((16, 16, 3), np.uint8))
    fifo(frames / '1.png')
    code = ('from vidseg_ros.data.video import VideoFrames\n'
            'from vidseg_ros.data.images import ImageError\n'
            f'try:\n    list(VideoFrames({str(frames)!r}))\nexcept ImageError as e:\n    print(e)\n')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert p.returncode == 0 and FIFO in p.stdout and '1.png' in p.stdout, (p.stdout, p.stderr[-2000:])


def test_a_video_source_that_is_no_file_says_what_it_is(tmp_path):
    """A FIFO or a device as the video source was 'does not exist'."""
    from vidseg_ros.data.images import ImageError
    from vidseg_ros.data.video import VideoFrames
    for path in (fifo(tmp_path / 'cam.mp4'), to_dev_zero(tmp_path / 'zero.mp4')):
        with pytest.raises(ImageError, match=r'is not a regular file \(a FIFO'):
            VideoFrames(path)
    with pytest.raises(ImageError, match='does not exist'):
        VideoFrames(tmp_path / 'nope.mp4')


@pytest.mark.parametrize('suffix', ['.onnx', '.ts'])
def test_export_does_not_replace_a_fifo_with_its_file(tmp_path, suffix):
    """export renames its staged file over OUT (os.replace, not write_file_atomic): a FIFO there was replaced
    by the export, exit 0; run as root, so was a device at the end of a link (/dev/null)."""
    model = tiny_fpn(tmp_path / 'm.pt')
    out = fifo(tmp_path / f'x{suffix}')
    line = one_line_error(vidseg('export', model, out, '--format', suffix.lstrip('.')))
    assert f'{FIFO}: not replaced' in line and out.is_fifo(), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.pt', f'x{suffix}']


def test_export_does_not_replace_a_fifo_at_the_current_frame_graph(tmp_path):
    model = tiny_fpn(tmp_path / 'm.pt', cached_levels=2)
    partner = fifo(tmp_path / 'x.current.onnx')
    line = one_line_error(vidseg('export', model, tmp_path / 'x.onnx'))
    assert f'x.current.onnx: {FIFO}: not replaced' in line and partner.is_fifo(), line
    assert not (tmp_path / 'x.onnx').exists()


def test_a_link_loop_resolved_by_a_command_is_a_user_error():
    """Path.resolve() raises RuntimeError('Symlink loop from ...') on Python < 3.13: exit 1 as a bug."""
    from vidseg_ros.tools.cli_errors import _user_error
    assert _user_error(RuntimeError("Symlink loop from '/tmp/a'"))
    assert not _user_error(RuntimeError('something else'))


def test_finetune_sizes_a_label_before_decoding_it(tmp_path):
    """finetune's --label (and the --labels-dir masks) was decoded whole before any size check."""
    import struct
    import zlib
    from vidseg_ros.data.images import ImageError
    from vidseg_ros.tools.finetune import _read_mask

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    png = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 20000, 20000, 8, 0, 0, 0, 0))
           + chunk(b'IDAT', zlib.compress(b'\x00' * 20001 * 4)) + chunk(b'IEND', b''))
    (tmp_path / 'big.png').write_bytes(png)
    with pytest.raises(ImageError, match='exceeds max_input_pixels'):
        _read_mask(tmp_path / 'big.png')


@pytest.mark.parametrize('kind', ['fifo', 'dangling', 'file'])
@pytest.mark.parametrize('command', ['propagate', 'make-variant'])
def test_an_output_folder_that_is_no_folder_says_what_it_is(tmp_path, kind, command):
    """A FIFO where the output folder goes was called "a file, not a folder"; a link to nothing "File exists"."""
    root = folder_dataset(tmp_path / 'ds', [__import__('numpy').zeros((8, 8, 3), 'uint8')] * 2,
                          [__import__('numpy').zeros((8, 8), 'uint8'), None])
    out = tmp_path / 'out'
    if kind == 'fifo':
        fifo(out)
    elif kind == 'dangling':
        out.symlink_to(tmp_path / 'nowhere')
    else:
        out.write_text('x')
    argv = [root, '--out', out] if command == 'propagate' else [root, out, '--kind', 'per_sequence', '--split', 'all']
    line = one_line_error(vidseg(command, *argv))
    what = {'fifo': FIFO, 'dangling': 'is a link to nothing, or one that loops', 'file': 'is a file'}[kind]
    assert line == f'vidseg {command}: error: {out} {what}, not a folder', line


@pytest.mark.parametrize('kind', list(SPECIAL))
def test_vidseg_docs_refuses_a_readme_that_is_no_file(tmp_path, kind):
    """typer's exists=True lets a FIFO through: `vidseg docs --check --readme FIFO` waited for a writer forever."""
    path = SPECIAL[kind](tmp_path / 'README.md')
    line = one_line_error(vidseg('docs', '--check', '--readme', path))
    assert line == f'vidseg docs: error: {path}: {FIFO}', line
