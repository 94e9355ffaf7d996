"""A video file's reported frame rate: a container's nonsense (90 kHz, NaN, negative) is unknown, not a rate."""
import math

import cv2
import numpy as np
import pytest
from support.videos import jpeg_starts, mjpg_avi

from vidseg_ros.data import video
from vidseg_ros.data.video import VideoFrames


class _Capture:
    """cv2.VideoCapture of a file whose header reports ``FPS``."""
    FPS = 0.0

    def __init__(self, source):
        pass

    def isOpened(self):
        return True

    def get(self, prop):
        return self.FPS if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


@pytest.mark.parametrize('reported,kept', [(90000.0, 0.0), (1000.5, 0.0), (math.nan, 0.0), (math.inf, 0.0),
                                            (-25.0, 0.0), (0.0, 0.0), (1000.0, 1000.0), (29.97, 29.97)])
def test_a_nonsense_frame_rate_is_unknown_with_one_warning(tmp_path, monkeypatch, caplog, reported, kept):
    """fps was taken as reported: a video source node published at 90000 Hz (or failed on NaN). A rate in
    range, or none (0), is kept without a word."""
    path = tmp_path / 'clip.mp4'
    path.write_bytes(b'not read: the capture is replaced')
    monkeypatch.setattr(_Capture, 'FPS', reported)
    monkeypatch.setattr(video.cv2, 'VideoCapture', _Capture)
    with caplog.at_level('WARNING'):
        assert VideoFrames(path).fps == kept
    warned = [r.getMessage() for r in caplog.records]
    if kept == reported:
        assert not warned
    else:
        assert len(warned) == 1 and str(path) in warned[0] and 'not a frame rate (0 < fps <= 1000)' in warned[0]


def test_a_real_video_keeps_its_frame_rate(tmp_path):
    path = mjpg_avi(tmp_path / 'clip.avi', 3, hw=(24, 32), fps=12.0, step=60)
    frames = VideoFrames(path)
    assert frames.fps == pytest.approx(12.0) and len(list(frames)) == 3


def _png_bomb(path, width: int, height: int) -> None:
    """A grey PNG of width x height zeros, compressed row by row (never held whole): a few hundred KB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b''.join(z.compress(row) for _ in range(height)) + z.flush()
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
                     + chunk(b'IDAT', idat) + chunk(b'IEND', b''))


def test_an_image_bomb_is_refused_from_its_header(tmp_path):
    """A 389 KB PNG of 20000x20000 was decoded: 1.2 GB of frame, 2.3 GB peak, then published as it was."""
    import resource
    _png_bomb(tmp_path / '0.png', 20000, 20000)
    cv2.imwrite(str(tmp_path / '1.png'), np.zeros((24, 32, 3), np.uint8))
    assert (tmp_path / '0.png').stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(video.ImageError, match=r'20000x20000 = 400000000 pixels exceeds max_input_pixels'):
        video.read_frame(tmp_path / '0.png')
    with pytest.raises(video.ImageError, match='exceeds max_input_pixels'):
        list(VideoFrames(tmp_path))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 << 10     # KiB: under 200 MiB more
    assert video.read_frame(tmp_path / '1.png').shape == (24, 32, 3)


def test_an_unopenable_image_is_an_image_error(tmp_path):
    """A link loop or a folder named like an image raised OSError, which the node does not catch as a bad frame."""
    (tmp_path / 'a.png').symlink_to(tmp_path / 'b.png')
    (tmp_path / 'b.png').symlink_to(tmp_path / 'a.png')
    (tmp_path / 'c.png').mkdir()
    for name in ('a.png', 'c.png'):
        with pytest.raises(video.ImageError, match='cannot read image file'):
            video.read_frame(tmp_path / name)


def test_hidden_files_are_not_frames(tmp_path):
    """'.hidden.png' was published as a frame and macOS's '._0001.png' metadata files each as an unreadable one;
    a glob ('*.png') never matched them. Numbers sort by value, any case of suffix."""
    for name in ('1.png', '10.png', '2.png', 'X.PNG', '.hidden.png'):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / '._1.png').write_bytes(b'\x00\x05\x16\x07 AppleDouble')
    (tmp_path / 'notes.txt').write_text('not a frame')
    expected = ['1.png', '2.png', '10.png', 'X.PNG']
    assert [p.name for p in VideoFrames(tmp_path).files] == expected
    assert [p.name for p in VideoFrames(tmp_path / '*.*').files] == expected


def test_a_damaged_video_frame_is_skipped_not_the_end(tmp_path, caplog):
    """Frame 4 of 10 zeroed: the stream ended there (4 frames, no word); the read after a failed one decodes the
    next frame."""
    data = bytearray(mjpg_avi(tmp_path / 'clip.avi', 10, fps=10.0).read_bytes())
    starts = jpeg_starts(data)
    assert len(starts) == 10
    data[starts[4]:starts[5] - 8] = bytes(starts[5] - 8 - starts[4])
    (tmp_path / 'damaged.avi').write_bytes(bytes(data))
    with caplog.at_level('WARNING'):
        frames = VideoFrames(tmp_path / 'damaged.avi')
        means = [round(rgb.mean() / 20) for _, rgb in frames]
    assert means == [0, 1, 2, 3, 5, 6, 7, 8, 9] and frames.skipped == 1
    warned = [r.getMessage() for r in caplog.records if r.name == video.__name__]
    assert len(warned) == 1 and 'skipped 1 frame(s) that did not decode before frame 4' in warned[0], warned


def test_a_truncated_video_ends_where_its_data_ends(tmp_path, sample_video):
    """opencv-doc's vtest.avi cut at half its size: its header still says 795 frames; the frames before the cut
    come, then the end, with no error and no hang, and again from the start (as a loop reads it)."""
    data = sample_video.read_bytes()
    (tmp_path / 'cut.avi').write_bytes(data[:len(data) // 2])
    frames = VideoFrames(tmp_path / 'cut.avi')
    first = [rgb[::64, ::64].copy() for _, rgb in frames]
    assert 300 < len(first) < len(frames) == 795
    assert frames.short_of == 795 - len(first)     # said once (a warning), not an error: the count may be estimated
    again = iter(frames)
    assert np.array_equal(next(again)[1][::64, ::64], first[0])


@pytest.mark.parametrize('content', [b'', b'hello world\n' * 10, None], ids=['empty', 'text', 'folder'])
def test_a_file_that_is_no_video_fails_at_once(tmp_path, content):
    path = tmp_path / 'clip.mp4'
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(video.ImageError, match='cannot open video|no images'):
        VideoFrames(path)


def test_a_video_of_huge_frames_is_refused_at_open(tmp_path, monkeypatch):
    """A header claiming 20000x20000 frames: each read would decode 1.2 GB."""
    class Huge(_Capture):
        def get(self, prop):
            return {cv2.CAP_PROP_FRAME_WIDTH: 20000.0, cv2.CAP_PROP_FRAME_HEIGHT: 20000.0}.get(prop, 0.0)
    (tmp_path / 'clip.mp4').write_bytes(b'not read')
    monkeypatch.setattr(video.cv2, 'VideoCapture', Huge)
    with pytest.raises(video.ImageError, match='20000x20000 = 400000000 pixels exceeds max_input_pixels'):
        VideoFrames(tmp_path / 'clip.mp4')


@pytest.mark.parametrize('name', ['clip [1080p].avi', 'clip[2].avi', 'take*1?.avi'])
def test_a_video_named_like_a_glob_is_a_video(tmp_path, name):
    """'clip [1080p].avi' was taken as a glob matching no image: no error, but its frame rate (25) was unknown
    and the node published it at the folders' 10 Hz, with no frame-size check."""
    mjpg_avi(tmp_path / name, 3, hw=(24, 32), step=60)
    frames = VideoFrames(tmp_path / name)
    assert frames.is_video and frames.fps == pytest.approx(25.0) and len(list(frames)) == 3


def test_a_glob_still_lists_its_images(tmp_path):
    for name in ('f2.png', 'f10.png', 'g1.png'):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in VideoFrames(tmp_path / 'f*.png').files] == ['f2.png', 'f10.png']


def test_damaged_last_frames_are_said_not_taken_for_the_end(tmp_path, caplog):
    """Frames 8 and 9 of 10 zeroed: the reads ended after frame 7 as at the end of the file, and nothing said that
    2 frames the header reports never came (bag-from-frames then wrote a bag without its tail)."""
    data = bytearray(mjpg_avi(tmp_path / 'clip.avi', 10, fps=10.0).read_bytes())
    starts = jpeg_starts(data)
    end = data.index(b'idx1', starts[9])
    data[starts[8]:end - 8] = bytes(end - 8 - starts[8])
    (tmp_path / 'damaged.avi').write_bytes(bytes(data))
    with caplog.at_level('WARNING'):
        frames = VideoFrames(tmp_path / 'damaged.avi')
        means = [round(rgb.mean() / 20) for _, rgb in frames]
        again = [round(rgb.mean() / 20) for _, rgb in frames]     # a loop's second pass says it no more
    assert means == again == list(range(8)) and frames.short_of == 2
    warned = [r.getMessage() for r in caplog.records if r.name == video.__name__]
    assert warned == [f'{tmp_path / "damaged.avi"}: the video reports 10 frames, 8 came: the file may be cut short '
                      'or its last frames damaged'], warned


def test_a_folder_of_netpbm_frames_is_a_video_of_rgb_frames(tmp_path):
    """A folder of .pgm / .ppm frames (the PNM files images.py sizes from their headers; many camera drivers and
    tools dump them) was 'no images (.png, ...) found'. A PPM reads in RGB order, a 16-bit PGM as its top 8 bits (as a
    16-bit PNG), and a 10-bit one (maxval 1023) by its maxval: OpenCV took it as 16-bit full scale, a black frame."""
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    (tmp_path / '0.ppm').write_bytes(b'P6\n32 24\n255\n' + rgb.tobytes())
    grey16 = rgb[:, :, 0].astype(np.uint16) * 257
    assert cv2.imwrite(str(tmp_path / '1.pgm'), grey16)
    (tmp_path / '2.pgm').write_bytes(b'P5\n32 24\n1023\n' + (grey16 >> 6).astype('>u2').tobytes())
    frames = VideoFrames(tmp_path)
    assert [p.name for p in frames.files] == ['0.ppm', '1.pgm', '2.pgm']
    got = [f for _, f in frames]
    assert np.array_equal(got[0], rgb)
    assert np.array_equal(got[1], np.repeat(rgb[:, :, :1], 3, axis=2))
    assert np.abs(got[2].astype(int) - rgb[:, :, :1]).max() <= 1


@pytest.mark.parametrize('hw', [(60, 80), (45, 100), (15, 100)])
def test_resize_hw_stretches_a_frame_bilinearly_and_shrinks_it_by_area(hw):
    """The video source's resize_hw: INTER_AREA alone was nearly nearest-neighbour where an axis grew (70-104 grey
    levels from bilinear on noise); now as the engine resizes (area along a shrinking axis, bilinear along a
    growing one)."""
    import cv2
    from vidseg_ros.data.video import resize_rgb
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    out = resize_rgb(rgb, hw)
    if hw[0] >= 30:
        want = cv2.resize(rgb, hw[::-1], interpolation=cv2.INTER_LINEAR)
    else:       # shrunk in height by area first, then stretched in width
        want = cv2.resize(cv2.resize(rgb, (40, hw[0]), interpolation=cv2.INTER_AREA), hw[::-1],
                          interpolation=cv2.INTER_LINEAR)
    assert out.shape == (*hw, 3) and np.abs(out.astype(int) - want).max() <= 1
    assert resize_rgb(rgb, (15, 20)).tolist() == cv2.resize(rgb, (20, 15), interpolation=cv2.INTER_AREA).tolist()
    assert resize_rgb(rgb, None) is rgb and resize_rgb(rgb, (30, 40)) is rgb
