"""``vidseg bag-from-frames`` of big flat folders: the work grows linearly with the files. Counted, not timed.
A flat folder whose names are ``<SEQ>_<FRAME>`` is split by ``SEQ``; a camera app's ``<date>_<second>_<frame>``
names make one ``SEQ`` a second (an hour at 30 Hz: 3600 of 108000 files). Before, each prefix took its files
from a pass over all of them (files x prefixes): 30000 files took 3.2 s to group, 3000 took 0.05 s."""
from vidseg_ros.data.bags import from_frames


class _CountingPattern:
    """``from_frames._SEQ_NAME`` that counts the lookups of a match's groups (each a step over one file name)."""

    def __init__(self, pattern):
        self.pattern, self.lookups = pattern, 0

    def match(self, text):
        m = self.pattern.match(text)
        return None if m is None else _CountingMatch(m, self)


class _CountingMatch:
    def __init__(self, m, owner):
        self.m, self.owner = m, owner

    def __getitem__(self, group):
        self.owner.lookups += 1
        return self.m[group]


def _folder(root, n: int):
    root.mkdir()
    for i in range(n):      # 30 frames a second, named by the second: n / 30 sequences
        (root / f'20240101_{i // 30:06d}_{i % 30:03d}.png').touch()
    return root


def test_a_flat_folder_is_split_in_one_pass(tmp_path, monkeypatch):
    lookups = []
    for n in (300, 3000):
        counter = _CountingPattern(from_frames._SEQ_NAME)
        monkeypatch.setattr(from_frames, '_SEQ_NAME', counter)
        seqs = from_frames.find_sequences(_folder(tmp_path / f'f{n}', n))     # frames are read lazily: none here
        assert len(seqs) == n // 30 and seqs[1][0] == '20240101_000001'
        lookups.append(counter.lookups)
    # one lookup a file; files x prefixes was 3000 x 100 (+ 3000)
    assert lookups[1] <= 2 * 3000 and lookups[1] < 12 * lookups[0], lookups


def test_the_split_keeps_each_sequence_in_frame_order(tmp_path, monkeypatch):
    monkeypatch.setattr(from_frames, '_read_all', lambda paths: [p.name for p in paths])    # the files, unread
    root = tmp_path / 'flat'
    root.mkdir()
    for name in ('b_10', 'a_2', 'b_2', 'a_10', 'a_1'):
        (root / f'{name}.png').touch()
    assert from_frames.find_sequences(root) == [('a', ['a_1.png', 'a_2.png', 'a_10.png']),
                                                ('b', ['b_2.png', 'b_10.png'])]


def test_a_new_output_check_resolves_each_folder_once_not_each_file(tmp_path, monkeypatch):
    """check_new_output resolved the real path of every source file's folder: 100k frames in a few folders
    took 2.3 s of realpath, twice per `vidseg propagate --out`."""
    from vidseg_ros.data.datasets import layouts
    calls = []
    real = layouts.real_path
    monkeypatch.setattr(layouts, 'real_path', lambda p: calls.append(p) or real(p))
    files = [tmp_path / 'src' / f'seq{s}' / f'{i:06d}.png' for s in range(3) for i in range(1000)]
    layouts.check_new_output(tmp_path / 'out', source_files=files)
    assert len(calls) == 1 + 3      # the output, then each of the three folders
