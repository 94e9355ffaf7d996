"""The salvage of MCAP files cut exactly where a killed recorder leaves them (after a chunk, after its message indexes)
and of files whose first chunk is damaged: every message that reached the file, counted right. Written from survivors
of a mutation run on ``salvage.py`` (no test cut a file on a record boundary or damaged a first chunk)."""
from support.bags import IMAGE, INFO, image_cdr, info_cdr

from vidseg_ros.data.bags.salvage import SalvageStats, salvage_records
from vidseg_ros.data.bags.writer import BagWriter

CHUNK, MESSAGE_INDEX = 0x06, 0x07


def _records(data: bytes, at: int = 8):
    """(offset, opcode, end) of each record from ``at`` until the data section ends."""
    while at + 9 <= len(data):
        end = at + 9 + int.from_bytes(data[at + 1:at + 9], 'little')
        yield at, data[at], end
        if data[at] in (0x0F, 0x02):    # DataEnd, Footer
            return
        at = end


def _recording(tmp_path, n=40):
    """A closed two-topic file of several chunks; the times of its messages in file order."""
    w = BagWriter(tmp_path / 'bag', chunk_size_bytes=3000, direct_io=False)
    w.add_topic('/cam/image', IMAGE)
    w.add_topic('/cam/camera_info', INFO)
    for i in range(n):
        w.write('/cam/image', image_cdr(i, 8, 8), 1000 + 2 * i)
        w.write('/cam/camera_info', info_cdr(i), 1001 + 2 * i)
    w.close()
    return w.files[0].read_bytes()


def _salvage(tmp_path, data: bytes, name='cut.mcap'):
    path = tmp_path / name
    path.write_bytes(data)
    stats = SalvageStats()
    times = [r.log_time for r in salvage_records(path, stats) if hasattr(r, 'log_time')]
    return times, stats


def _messages_before(data: bytes, cut: int) -> int:
    """Messages of the chunks that end at or before byte ``cut`` (the message indexes after each say how many)."""
    n = counted = 0
    for at, op, end in _records(data):
        if op == CHUNK:
            counted = end <= cut
        elif op == MESSAGE_INDEX and counted:
            n += int.from_bytes(data[at + 11:at + 15], 'little') // 16
    return n


def test_a_file_cut_at_any_record_boundary_keeps_every_complete_chunk(tmp_path):
    """A killed recorder's file ends right after a chunk and its message indexes (or inside the indexes)."""
    data = _recording(tmp_path)
    records = list(_records(data))
    chunks = [(at, end) for at, op, end in records if op == CHUNK]
    assert len(chunks) >= 4
    for at, op, end in records:
        if op not in (CHUNK, MESSAGE_INDEX) or end >= len(data):
            continue
        times, stats = _salvage(tmp_path, data[:end])
        complete = sum(1 for _, chunk_end in chunks if chunk_end <= end)
        expected = _messages_before(data, end)
        assert len(times) == expected and stats.truncated and stats.damaged_chunks == 0, (end, complete, len(times))
        assert times == sorted(times) and stats.skipped == 0 and stats.salvaged == 0


def test_a_damaged_chunk_counts_its_lost_messages_as_skipped(tmp_path):
    """Messages of a damaged chunk that do not check out are counted skipped, from the chunk's message indexes."""
    data = bytearray(_recording(tmp_path))
    chunks = [(at, end) for at, op, end in _records(bytes(data)) if op == CHUNK]
    at, end = chunks[1]
    indexed = sum((int.from_bytes(data[i + 11:i + 15], 'little')) // 16
                  for i, op, e in _records(bytes(data)) if op == MESSAGE_INDEX and at < i < chunks[2][0])
    middle = (at + end) // 2
    data[middle:middle + 400] = bytes(400)     # zeros through the middle of the second chunk
    times, stats = _salvage(tmp_path, bytes(data))
    assert stats.damaged_chunks == 1
    assert stats.skipped == indexed - stats.salvaged > 0
    assert len(times) == 80 - stats.skipped


def test_a_damaged_first_chunk_costs_only_its_own_messages(tmp_path):
    """The first chunk holds the schemas and channels; the summary has them too, so the later chunks' messages are
    not orphaned when it is damaged."""
    data = bytearray(_recording(tmp_path))
    (at, end), second = [(a, e) for a, op, e in _records(bytes(data)) if op == CHUNK][:2]
    in_first = _messages_before(bytes(data), end)
    data[at + 9 + 40:end - 10] = bytes(end - 10 - at - 49)    # the first chunk's records zeroed (CRC fails)
    times, stats = _salvage(tmp_path, bytes(data))
    assert stats.damaged_chunks == 1
    assert len(times) == 80 - in_first and times == list(range(1000 + in_first, 1080)), times[:4]
