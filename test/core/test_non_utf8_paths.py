"""File names that are not UTF-8 (a Latin-1 name from an old disk or share: Python holds its byte as a lone
surrogate): OpenCV's bindings crashed the process on such a name given as text (SIGSEGV, no message) in imread,
imwrite, VideoCapture and VideoWriter; every OpenCV call with a path now gives it as bytes (``files.cv_path``)."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.eval_data import folder_dataset

ROOT = Path(__file__).resolve().parents[2]
LATIN1 = os.fsdecode(b'caf\xe9')        # 'caf\udce9': not encodable as UTF-8


@pytest.fixture
def latin1_dir(tmp_path) -> Path:
    folder = tmp_path / LATIN1
    try:
        folder.mkdir()
    except (OSError, UnicodeEncodeError) as e:      # a file system that takes only UTF-8 names
        pytest.skip(f'this file system refuses a Latin-1 name: {e}')
    return folder


def _in_a_child(code: str) -> subprocess.CompletedProcess:
    """``code`` run in a child: the old code did not raise, it killed the process."""
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'PYTHONPATH': str(ROOT)})


def test_frames_labels_and_videos_under_a_latin1_name_are_read_and_written(latin1_dir):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, 32, 3), np.uint8)
    cv2.imwrite(os.fsencode(latin1_dir / 'f.png'), rgb[:, :, ::-1])
    writer = cv2.VideoWriter(os.fsencode(latin1_dir / 'v.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 5.0, (32, 24))
    for _ in range(3):
        writer.write(rgb)
    writer.release()
    r = _in_a_child(f'''
from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.video import VideoFrames
folder = {str(latin1_dir)!r}
print(read_rgb(folder + '/f.png').shape)
source = VideoFrames(folder + '/v.avi')
print(len(source), [rgb.shape for _, rgb in source])
''')
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.splitlines() == ['(24, 32, 3)', '3 [(24, 32, 3), (24, 32, 3), (24, 32, 3)]'], r.stdout


def test_vidseg_propagate_in_a_latin1_folder(latin1_dir):
    root = folder_dataset(latin1_dir / 'ds', [np.zeros((16, 16, 3), np.uint8)] * 3,
                          [np.zeros((16, 16), np.uint8), None, None])
    r = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'propagate', root], capture_output=True, text=True,
                       timeout=120, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert '"total_propagated": 2' in r.stdout


@pytest.mark.parametrize('suffix', ['.onnx', '.ts'])
def test_an_exported_model_in_a_latin1_folder_is_written_and_loaded(latin1_dir, tmp_path, suffix):
    """onnxruntime and torch.jit.load take only UTF-8 text: the export's own parity check failed ("cannot load
    this exported model (... incompatible function arguments ...)"), and so would the node and eval."""
    from support.eval_data import tiny_fpn
    model = tiny_fpn(tmp_path / 'm.pt')
    out = latin1_dir / f'm{suffix}'

    def vidseg(*argv):
        return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', *map(str, argv)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    r = vidseg('export', model, out, '--format', suffix[1:], '--input-hw', '64x64')
    assert r.returncode == 0, r.stderr[-2000:]
    r = vidseg('info', out)
    assert r.returncode == 0 and 'keyframe' in r.stdout, r.stdout[-1000:] + r.stderr[-2000:]


def test_a_file_whose_own_name_is_not_utf8_is_one_clear_error(latin1_dir):
    from vidseg_ros.files import text_path
    with pytest.raises(OSError, match='not UTF-8 text; rename the file'):
        with text_path(latin1_dir / LATIN1):
            pass
    with text_path(latin1_dir / 'm.onnx') as text:
        assert text.encode() and os.path.samefile(os.path.dirname(text), latin1_dir)


@pytest.mark.parametrize('where', ['folder', 'name'])
def test_a_bag_under_a_latin1_name_is_extracted_indexed_and_resumed(latin1_dir, tmp_path, where):
    """The index stores each frame's bag path; strict UTF-8 refused such an index at the end of the extract
    ("'utf-8' codec can't encode character '\\udce9'"), after every frame was written. It now holds the name's
    bytes, as the file system does, and reads them back, so a re-run resumes."""
    from vidseg_ros.data.bags.from_frames import write_bag
    from vidseg_ros.data.datasets.extract import extract
    from vidseg_ros.data.datasets.layouts import read_index

    bag = latin1_dir / 'drive' if where == 'folder' else tmp_path / 'bags' / LATIN1
    rng = np.random.default_rng(0)
    write_bag(bag, [[rng.integers(0, 255, (16, 24, 3), np.uint8) for _ in range(3)]])
    out = tmp_path / 'out'
    assert extract([bag], out).written == 3
    assert os.fsencode(bag) in (out / 'index.csv').read_bytes()
    records = read_index(out)
    assert [r.bag for r in records] == [str(bag)] * 3
    assert all(r.image.is_file() for r in records)
    again = extract([bag], out)
    assert again.written == 0 and again.skipped_existing == 3
