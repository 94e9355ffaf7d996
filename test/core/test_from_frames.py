"""bag-from-frames leaves a whole bag or none: an error part-way (an unreadable frame, a full disk, Ctrl-C)
removes what it wrote, and an existing --out is refused saying what it holds."""
import errno

import cv2
import numpy as np
import pytest
from support.disk import file_size_limit

from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, frames_to_bag, write_bag
from vidseg_ros.data.bags.reader import read_messages


def _frames(n, hw=(48, 64)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for _ in range(n)]


def _folder(tmp_path, n=4):
    src = tmp_path / 'src'
    src.mkdir()
    for i, f in enumerate(_frames(n)):
        cv2.imwrite(str(src / f'{i:03d}.png'), f)
    return src


def _interrupt_at(k):
    seen = []

    def progress(_):
        seen.append(1)
        if len(seen) == k:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
@pytest.mark.parametrize('failure', ['unreadable frame', 'full disk', 'ctrl-c'])
def test_an_error_part_way_leaves_no_bag_and_a_rerun_works(tmp_path, storage, failure):
    """The partial bag stayed, and the re-run said only '<out> exists already, not overwriting.'"""
    src = _folder(tmp_path)
    good = (src / '002.png').read_bytes()
    out = tmp_path / 'new' / 'bag'           # its parent is made by the run, and removed with it
    cfg = BagFromFramesConfig(storage=storage)
    if failure == 'unreadable frame':
        (src / '002.png').write_bytes(b'not a png')
        with pytest.raises(ValueError, match='cannot read image file'):
            frames_to_bag(src, out, cfg)
    elif failure == 'full disk':
        with file_size_limit(20_000), pytest.raises(OSError) as err:     # 4 frames of 9 kB each
            write_bag(out, [_frames(4)], cfg)
        assert err.value.errno == (errno.EFBIG if storage == 'mcap' else errno.EIO)   # sqlite: 'disk I/O error'
    else:
        with pytest.raises(KeyboardInterrupt):
            frames_to_bag(src, out, cfg, progress=_interrupt_at(2))
    assert not (tmp_path / 'new').exists()
    (src / '002.png').write_bytes(good)
    assert frames_to_bag(src, out, cfg)['frames'] == 4
    assert sum(m.topic == '/camera/image_raw' for m in read_messages(out)) == 4


def test_an_existing_out_is_refused_saying_what_it_holds(tmp_path):
    src = _folder(tmp_path, 1)
    frames_to_bag(src, tmp_path / 'bag')
    with pytest.raises(FileExistsError, match='exists already \\(a bag\\): not overwriting; remove it or choose'):
        frames_to_bag(src, tmp_path / 'bag')
    (tmp_path / 'bag' / 'metadata.yaml').unlink()      # what a killed (SIGKILL) run leaves
    with pytest.raises(FileExistsError, match='no metadata.yaml: a partial bag from an interrupted run\\?\\): '
                                              'remove it or choose another --out'):
        frames_to_bag(src, tmp_path / 'bag')


def test_a_bag_name_too_long_for_its_storage_file_is_refused_before_writing(tmp_path):
    """A 250-character --out made the folder, then failed on <name>.mcap with the path cut before the reason."""
    src = _folder(tmp_path, 1)
    with pytest.raises(ValueError, match='is 251 bytes, too long.*at most 250 bytes'):
        frames_to_bag(src, tmp_path / ('b' * 251))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src']
    assert frames_to_bag(src, tmp_path / ('b' * 250))['frames'] == 1


def test_a_sqlite3_bag_path_too_long_for_sqlite_is_refused_before_writing(tmp_path):
    """SQLite opens paths of at most 511 bytes: it failed with "unable to open database file", an internal error."""
    src, cfg = _folder(tmp_path, 1), BagFromFramesConfig(storage='sqlite3')
    with pytest.raises(ValueError, match='SQLite opens at most 511: choose a shorter --out, or --storage mcap'):
        frames_to_bag(src, tmp_path / ('d' * 200) / ('b' * 200), cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src']
    assert frames_to_bag(src, tmp_path / ('d' * 200) / ('b' * 100), cfg)['frames'] == 1


def test_an_os_error_with_a_long_path_keeps_its_reason_in_the_message(tmp_path, monkeypatch):
    """The CLI prints '<path>: <reason>' cut to 400 characters: a long path hid the reason."""
    from vidseg_ros.data.bags import from_frames
    from vidseg_ros.tools.cli_errors import _describe, one_line
    long_path = str(tmp_path / ('d' * 200) / ('e' * 200) / 'bag')

    def fail(*_):
        raise OSError(errno.ENOSPC, 'No space left on device', long_path)

    monkeypatch.setattr(from_frames, '_write_frames', fail)
    with pytest.raises(OSError) as err:
        write_bag(tmp_path / 'bag', [_frames(1)])
    assert one_line(_describe(err.value)).endswith('No space left on device')
    assert not (tmp_path / 'bag').exists()
