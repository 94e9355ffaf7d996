"""The salvage of an MCAP whose definition of one channel was lost: that channel's messages are skipped and said to
be, the other channels' messages read, the other splits too."""
from pathlib import Path

from support.bags import IMAGE, INFO, image_cdr, info_cdr
from vidseg_ros.data.bags.reader import read_messages
from vidseg_ros.data.bags.recover import recover_bag
from vidseg_ros.data.bags.writer import BagWriter


def _records(data: bytes, at: int, end: int):
    """(offset, opcode) of each record in ``data[at:end]``."""
    while at < end:
        yield at, data[at]
        at += 9 + int.from_bytes(data[at + 1:at + 9], 'little')


def killed_bag_without_the_info_channel(path: Path, n: int = 30) -> list[bytes]:
    """A recording of image and camera_info killed mid-file (no summary), the Channel record of camera_info in the
    first chunk overwritten; the images sent."""
    w = BagWriter(path, chunk_size_bytes=3000)
    w.add_topic('/cam/image', IMAGE)
    w.add_topic('/cam/camera_info', INFO)
    sent = []
    for i in range(n):
        sent.append(image_cdr(i, 8, 8))
        w.write('/cam/image', sent[-1], 1000 + 2 * i)
        w.write('/cam/camera_info', info_cdr(i), 1001 + 2 * i)
    (split,) = w.files      # never closed
    data = bytearray(split.read_bytes())
    chunk = next(at for at, op in _records(data, 8, len(data)) if op == 0x06)
    clen = int.from_bytes(data[chunk + 9 + 28:chunk + 9 + 32], 'little')
    start = chunk + 9 + 32 + clen + 8       # the chunk's records (uncompressed)
    end = chunk + 9 + int.from_bytes(data[chunk + 1:chunk + 9], 'little')
    channels = [at for at, op in _records(data, start, end) if op == 0x04]
    assert len(channels) == 2
    data[channels[1]] = 0xff        # the second channel registered: camera_info
    split.write_bytes(bytes(data))
    return sent


def test_messages_of_a_channel_whose_definition_was_lost_are_skipped_not_the_whole_bag(tmp_path):
    # 'message on unknown channel 2 (its definition was lost)' was raised out of the salvage: extract and bag-recover
    # ended in that error, every image lost with the camera_info
    sent = killed_bag_without_the_info_channel(tmp_path / 'bag')
    warnings: list[str] = []
    got = list(read_messages(tmp_path / 'bag', warnings=warnings))
    assert [m.data for m in got] == sent and {m.topic for m in got} == {'/cam/image'}
    assert any('of channel 2 skipped: its definition was lost' in w for w in warnings), warnings
    report = recover_bag(tmp_path / 'bag', force=True)
    assert report.skipped['bag_0.mcap'] == len(sent) and report.messages['bag_0.mcap'] == len(sent)   # the infos
    assert [m.data for m in read_messages(report.out)] == sent
