"""`vidseg bag-recover`: touches only MCAP bags, never an original, and salvages single messages."""
import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.records import Message

from support.bags import IMAGE, image_cdr, read_mcap, read_rosbags

from vidseg_ros.data.bags.recover import is_complete, recover_bag
from vidseg_ros.data.bags.writer import BagWriter


def tree(root: Path) -> dict:
    """Every path under root (root included) with its content hash: what 'untouched' is checked against."""
    out = {'.': 'dir'}
    for p in sorted(root.rglob('*')):
        out[str(p.relative_to(root))] = 'dir' if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', *args],
                          capture_output=True, text=True, timeout=120)


def sqlite_bag(path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    ts = get_typestore(Stores.LATEST)
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conn = w.add_connection('/cam', IMAGE, typestore=ts)
        for i in range(3):
            w.write(conn, 1000 + i, image_cdr(i))


def killed_bag(path: Path, n: int = 10) -> list[bytes]:
    """A bag as a SIGKILL leaves it: one chunk per message, no summary, no metadata.yaml."""
    w = BagWriter(path, chunk_size_bytes=100)
    w.add_topic('/cam', IMAGE)
    sent = [image_cdr(i) for i in range(n)]
    for i, data in enumerate(sent):
        w.write('/cam', data, 1000 + i)
    return sent


@pytest.mark.parametrize('kind,says', [('photo', 'photo.webp is not an MCAP file'),
                                       ('fake_mcap', 'bag_0.mcap is not an MCAP file'),
                                       ('empty_dir', 'holds no .mcap file'), ('sqlite3_bag', 'is a sqlite3 bag'),
                                       ('sqlite3_file', 'is a sqlite3 database')])
def test_refuses_anything_but_mcap_bags_and_touches_nothing(tmp_path, kind, says):
    root = tmp_path / 'in'
    root.mkdir()
    if kind == 'photo':
        target = root / 'photo.webp'
        target.write_bytes(b'RIFF\x00\x01\x00\x00WEBPVP8 ' + bytes(range(256)) * 4)
    elif kind == 'fake_mcap':
        target = root / 'bag'
        target.mkdir()
        (target / 'bag_0.mcap').write_bytes(b'not an mcap at all' * 100)
    elif kind == 'empty_dir':
        target = root / 'empty'
        target.mkdir()
    else:
        sqlite_bag(root / 'bag')
        target = root / 'bag' if kind == 'sqlite3_bag' else next((root / 'bag').glob('*.db3'))
        assert len(read_rosbags([root / 'bag'])) == 3
    before = tree(tmp_path)
    result = cli(str(target), '--force')
    assert result.returncode == 2, result
    line, = result.stderr.strip().splitlines()     # one line, no traceback
    assert line.startswith('vidseg bag-recover: error: ') and says in line, result.stderr
    assert tree(tmp_path) == before  # byte-identical, nothing created next to it either


def test_live_recording_is_reported_not_a_traceback(tmp_path):
    killed_bag(tmp_path / 'bag')  # just written: looks like a recording in progress
    before = tree(tmp_path)
    result = cli(str(tmp_path / 'bag'))
    assert result.returncode == 2 and 'still being recorded' in result.stderr and 'Traceback' not in result.stderr
    assert tree(tmp_path) == before


def test_out_writes_the_recovered_bag_elsewhere(tmp_path):
    sent = killed_bag(tmp_path / 'bag')
    before = tree(tmp_path / 'bag')
    out = tmp_path / 'other_disk' / 'rescued'
    result = cli(str(tmp_path / 'bag'), '--out', str(out), '--force')
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / 'bag') == before  # the original is never modified
    assert [d for _, d in read_rosbags([out])] == sent[:len(read_rosbags([out]))]
    assert len(read_rosbags([out])) >= 9 and is_complete(out / 'bag_0.mcap')
    again = cli(str(tmp_path / 'bag'), '--out', str(out), '--force')
    assert again.returncode == 2 and 'exists and is not an empty folder' in again.stderr  # never overwrites
    assert cli(str(out)).returncode == 0 and not (tmp_path / 'other_disk' / 'rescued_recovered').exists()


def message_spans(path: Path) -> list[tuple[int, int]]:
    """(first byte, end) of every message record in the file, in order (uncompressed chunks)."""
    spans = []
    with open(path, 'rb') as f:
        summary = make_reader(f).get_summary()
    data = path.read_bytes()
    for ci in summary.chunk_indexes:
        clen = struct.unpack_from('<I', data, ci.chunk_start_offset + 9 + 28)[0]
        base = ci.chunk_start_offset + 9 + 32 + clen + 8
        end = base + ci.uncompressed_size
        pos = base
        while pos < end:
            op, length = data[pos], struct.unpack_from('<Q', data, pos + 1)[0]
            if op == 0x05:
                spans.append((pos, pos + 9 + length))
            pos += 9 + length
    return spans


@pytest.mark.parametrize('flips', [1, 20, 131, 'headers'])
def test_flipped_bytes_cost_only_the_messages_they_hit(tmp_path, flips):
    n = 150
    w = BagWriter(tmp_path / 'bag', chunk_size_bytes=200_000)  # ~16 frames per chunk
    w.add_topic('/cam', IMAGE)
    sent = [bytes(image_cdr(i, 60, 64)) for i in range(n)]
    for i, data in enumerate(sent):
        w.write('/cam', data, 10**18 + i * 10**7)
    w.close()
    path = w.files[0]
    spans = message_spans(path)
    assert len(spans) == n
    raw = bytearray(path.read_bytes())
    if flips == 'headers':  # record lengths, channel ids and log times of some messages
        where = [spans[i][0] + off for i, off in ((3, 1), (20, 4), (21, 9), (40, 13), (41, 8), (77, 1), (149, 2))]
    else:
        where = np.random.default_rng(flips).integers(spans[0][0], spans[-1][1], flips)
    for pos in where:
        raw[pos] ^= 0xFF
    damaged = tmp_path / 'damaged'
    damaged.mkdir()
    (damaged / 'damaged_0.mcap').write_bytes(bytes(raw))
    original = path.read_bytes()
    hit = {i for i, (a, b) in enumerate(spans) if raw[a:b] != original[a:b]}
    untouched = [sent[i] for i in range(n) if i not in hit]
    report = recover_bag(damaged, force=True)
    got = [d for _, d in read_mcap(report.out / 'damaged_0.mcap')]
    assert got == [d for _, d in read_rosbags([report.out])]
    kept_intact = [d for d in got if d in set(sent)]  # the frames are all different
    assert set(untouched) <= set(kept_intact)  # every frame the damage did not touch comes back
    print(f'{flips} flipped bytes: {len(kept_intact)} frames kept with intact payload / {len(untouched)} untouched '
          f'({len(hit)} frames hit, {len(got) - len(kept_intact)} kept with damaged payload, '
          f'{report.skipped["damaged_0.mcap"]} skipped)')


def test_relative_paths(tmp_path):
    killed_bag(tmp_path / 'bag')
    result = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', 'bag_0.mcap', '--force'],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path / 'bag')
    assert result.returncode == 0, result.stderr
    assert len(read_rosbags([tmp_path / 'bag_recovered'])) >= 9


@pytest.fixture
def read_only_bag(tmp_path):
    """A killed bag in a folder bind-mounted read-only (needs root: skipped otherwise)."""
    import os
    root = tmp_path / 'ro'
    root.mkdir()
    killed_bag(root / 'bag')
    if os.geteuid() != 0:
        pytest.skip('a read-only bind mount needs root')
    for command in (['mount', '--bind', str(root), str(root)], ['mount', '-o', 'remount,ro,bind', str(root)]):
        made = subprocess.run(command, capture_output=True, text=True)
        if made.returncode != 0:
            subprocess.run(['umount', str(root)], capture_output=True)
            pytest.skip(f'cannot mount read-only here: {made.stderr.strip()}')
    yield root / 'bag'
    subprocess.run(['umount', '-l', str(root)], check=False)


def test_a_read_only_bag_says_read_only_not_disk_full(read_only_bag, tmp_path):
    before = tree(read_only_bag)
    result = cli(str(read_only_bag), '--force')
    assert result.returncode == 2, result.stderr      # the user's situation, not a bug (exit 1)
    line, = result.stderr.strip().splitlines()
    assert line == (f'vidseg bag-recover: error: {read_only_bag} is on a read-only file system: pass --out DIR on '
                    'a writable disk'), line
    assert tree(read_only_bag) == before
    assert cli(str(read_only_bag), '--out', str(tmp_path / 'rescued'), '--force').returncode == 0


@pytest.mark.parametrize('code,says', [
    (13, 'x/bag_recovered/bag_0.mcap: permission denied: pass --out DIR where you may write'),
    (28, 'writing the recovered bag failed (No space left on device); nothing was changed in x/bag; pass --out '
         'DIR on a disk with free space')])
def test_write_errors_say_their_cause(monkeypatch, capsys, code, says):
    import os

    from vidseg_ros.data.bags import recover

    def fails(bag, out, force):
        raise OSError(code, os.strerror(code), 'x/bag_recovered/bag_0.mcap')
    monkeypatch.setattr(recover, 'recover_bag', fails)
    assert recover.run('x/bag') == 2
    assert capsys.readouterr().err.strip() == f'vidseg bag-recover: error: {says}'


def compressed_bag(path: Path, codec: str, state: str) -> Path:
    """A bag of 12 frames in several ``codec`` chunks: intact (closed), killed (no summary) or damaged (a
    flipped byte in its 4th chunk); returns the bag folder."""
    w = BagWriter(path, compression=codec, chunk_size_bytes=20_000)
    w.add_topic('/cam', IMAGE)
    for i in range(12):
        w.write('/cam', bytes(image_cdr(i, 60, 64)), 10**18 + i * 10**7)
    if state != 'killed':
        w.close()
    if state == 'damaged':
        raw = bytearray(w.files[0].read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        w.files[0].write_bytes(bytes(raw))
    return path


def without_codec(monkeypatch, codec: str) -> None:
    """This process as it is without the codec's package (zstandard or lz4): its import fails."""
    import mcap.stream_reader
    module, attribute = {'zstd': ('zstandard', 'zstandard'), 'lz4': ('lz4.frame', 'lz4')}[codec]
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(mcap.stream_reader, attribute, None)     # mcap imported it when it was there


def absent_package(root: Path, name: str) -> str:
    """A folder that, first on PYTHONPATH, makes ``import name`` fail as if the package were not installed."""
    (root / name).mkdir(parents=True)
    (root / name / '__init__.py').write_text(f"raise ImportError('simulated absence of {name}')\n")
    return str(root)


@pytest.mark.parametrize('state', ['intact', 'killed', 'damaged'])
@pytest.mark.parametrize('codec,package', [('zstd', 'zstandard'), ('lz4', 'lz4')])
def test_a_missing_codec_is_refused_before_anything_is_written(tmp_path, monkeypatch, codec, package, state):
    """Without the package a chunk read as damaged: an intact zstd bag was 'recovered' into an empty one."""
    from vidseg_ros.data.bags.salvage import MissingCodec
    bag = compressed_bag(tmp_path / 'bag', codec, state)
    before = tree(tmp_path)
    without_codec(monkeypatch, codec)
    with pytest.raises(MissingCodec, match=f'^{codec} chunks need the {package} package \\(pip install {package}\\)$'):
        recover_bag(bag, tmp_path / 'out', force=True)
    assert tree(tmp_path) == before


def test_bag_recover_without_zstandard_is_one_error_line_and_exit_2(tmp_path):
    import os
    bag = compressed_bag(tmp_path / 'bag', 'zstd', 'intact')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([absent_package(tmp_path / 'absent', 'zstandard'),
                                                       os.environ['PYTHONPATH']]))
    result = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'bag-recover', str(bag), '--out',
                             str(tmp_path / 'out')], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ('vidseg bag-recover: error: zstd chunks need the zstandard package '
                                     '(pip install zstandard)'), result.stderr
    assert not (tmp_path / 'out').exists() and result.stdout == ''


@pytest.mark.parametrize('codec', ['zstd', 'lz4'])
def test_the_salvage_reader_raises_on_a_missing_codec_instead_of_dropping_chunks(tmp_path, monkeypatch, codec):
    """extract reads a damaged bag through the salvage: without the codec every chunk was 'damaged' and
    its frames silently left out."""
    from vidseg_ros.data.bags.salvage import MissingCodec, SalvageStats, salvage_records
    bag = compressed_bag(tmp_path / 'bag', codec, 'damaged')
    assert sum(isinstance(r, Message) for r in salvage_records(bag / 'bag_0.mcap')) >= 10
    without_codec(monkeypatch, codec)
    stats = SalvageStats()
    with pytest.raises(MissingCodec, match=f'{codec} chunks need'):
        list(salvage_records(bag / 'bag_0.mcap', stats))
    assert stats.damaged_chunks == 0
