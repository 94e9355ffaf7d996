"""bag-from-frames leaves a whole bag or none: an error part-way (an unreadable frame, a full disk, Ctrl-C)
removes what it wrote, and an existing --out is refused saying what it holds."""
import errno

import cv2
import numpy as np
import pytest
from support.disk import file_size_limit
from support.videos import jpeg_starts, mjpg_avi

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


def test_hidden_files_are_not_frames_in_any_folder_layout(tmp_path):
    """from_frames listed folders itself: macOS's '._<name>.png' beside each CamVid frame became a sequence
    of its own that failed as unreadable, and a folder of sequences with one stray '._x.png' at its top was taken
    as a flat folder of no images. It now uses VideoFrames's listing, as the video source node does."""
    camvid = tmp_path / 'camvid'
    camvid.mkdir()
    for i, f in enumerate(_frames(4)):
        cv2.imwrite(str(camvid / f'seq{i // 2 + 1}_{i:03d}.png'), f)
        (camvid / f'._seq{i // 2 + 1}_{i:03d}.png').write_bytes(b'\x00\x05\x16\x07AppleDouble')
    cv2.imwrite(str(camvid / '.hidden_000.png'), _frames(1)[0])
    summary = frames_to_bag(camvid, tmp_path / 'bag1')
    assert summary['sequences'] == ['seq1', 'seq2'] and summary['frames'] == 4
    assert [len(s) for s in summary['stamps']] == [2, 2]

    root = tmp_path / 'davis'
    for name, n in (('bear', 2), ('car', 3)):
        (root / name).mkdir(parents=True)
        for i, f in enumerate(_frames(n)):
            cv2.imwrite(str(root / name / f'{i:05d}.png'), f)
    (root / '._bear.png').write_bytes(b'\x00\x05\x16\x07AppleDouble')
    (root / '.thumbnails').mkdir()
    cv2.imwrite(str(root / '.thumbnails' / '0.png'), _frames(1)[0])
    summary = frames_to_bag(root, tmp_path / 'bag2')
    assert summary['sequences'] == ['bear', 'car'] and [len(s) for s in summary['stamps']] == [2, 3]


def test_an_image_bomb_in_a_split_folder_is_refused_from_its_header(tmp_path):
    """The CamVid-style split read its frames with read_rgb, past the MAX_INPUT_PIXELS check VideoFrames makes."""
    import struct
    import zlib
    src = tmp_path / 'src'
    src.mkdir()
    cv2.imwrite(str(src / 'a_000.png'), _frames(1)[0])
    ihdr = b'IHDR' + struct.pack('>IIBBBBB', 20000, 20000, 8, 0, 0, 0, 0)
    (src / 'b_000.png').write_bytes(b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + ihdr
                                    + struct.pack('>I', zlib.crc32(ihdr)))
    with pytest.raises(ValueError, match='20000x20000 = 400000000 pixels exceeds max_input_pixels'):
        frames_to_bag(src, tmp_path / 'bag')
    assert not (tmp_path / 'bag').exists()


def test_a_video_with_a_frame_that_does_not_decode_is_refused_whole(tmp_path):
    """Since VideoFrames skips a damaged frame (and counts it), bag-from-frames wrote 9 of 10 frames without a
    word, stamped at 15 Hz so that every frame after the hole came one period early. A bag is all the frames or
    none: the source is refused naming the count, and nothing is left behind."""
    data = bytearray(mjpg_avi(tmp_path / 'clip.avi', 10, fps=10.0).read_bytes())
    assert frames_to_bag(tmp_path / 'clip.avi', tmp_path / 'whole')['frames'] == 10
    starts = jpeg_starts(data)
    data[starts[4]:starts[5] - 8] = bytes(starts[5] - 8 - starts[4])     # frame 4 zeroed
    (tmp_path / 'damaged.avi').write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r'video .*damaged.avi: 1 frame\(s\) did not decode; .* none was written'):
        frames_to_bag(tmp_path / 'damaged.avi', tmp_path / 'out' / 'bag')
    assert not (tmp_path / 'out').exists()
