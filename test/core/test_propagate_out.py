"""`vidseg propagate DATASET --out DIR`: the labels go to a new dataset folder, DATASET left as it was.

Every other command that writes takes an output folder; propagate only wrote into DATASET, so comparing two
methods meant copying the dataset first."""
import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import INDEX_NAME, META_NAME, extracted_source, read_index

RUNNER = CliRunner()
H, W = 48, 64


def _dataset(tmp_path, keep=(0, 5)):
    """An extracted 6-frame drive (a block moving right) with human labels on ``keep``."""
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (5, 5), 1.5)
    frames, masks = [], []
    for i in range(6):
        f, m = bg.copy(), np.zeros((H, W), np.uint8)
        f[14:30, 8 + 2 * i:24 + 2 * i] = 200
        m[14:30, 8 + 2 * i:24 + 2 * i] = 1
        frames.append(f)
        masks.append(m)
    write_bag(tmp_path / 'bag', [frames])
    extract([tmp_path / 'bag'], tmp_path / 'pair' / 'ds')
    recs = read_index(tmp_path / 'pair' / 'ds')
    for i in keep:
        write_label(tmp_path / 'lab' / f'{recs[i].stamp_ns}.png', masks[i])
    if keep:
        import_labels(tmp_path / 'pair' / 'ds', tmp_path / 'lab', class_names=['bg', 'obj'])
    return tmp_path / 'pair' / 'ds'


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _run(*args):
    r = RUNNER.invoke(app, ['propagate', *map(str, args)])
    return r, (json.loads(r.stdout) if r.exit_code == 0 else None)


def test_out_writes_a_new_dataset_and_leaves_the_source_unchanged(tmp_path):
    ds = _dataset(tmp_path)
    before = _files(ds)
    r, summary = _run(ds, '--out', tmp_path / 'pair' / 'flow')
    assert r.exit_code == 0, r.output
    assert summary['out'] == str(tmp_path / 'pair' / 'flow') and summary['propagated'] == 4
    assert _files(ds) == before                                       # not one byte of the source changed
    out = extracted_source(tmp_path / 'pair' / 'flow')
    assert [x.label_source for x in out.records] == ['human'] + ['propagated'] * 4 + ['human']
    assert out.class_names == ['bg', 'obj'] and (tmp_path / 'pair' / 'flow' / META_NAME).is_file()
    # the same labels as propagating a copy in place (the default, unchanged)
    shutil.copytree(ds, tmp_path / 'copy')
    r, _ = _run(tmp_path / 'copy')
    assert r.exit_code == 0, r.output
    for a, b in zip(out.records, read_index(tmp_path / 'copy')):
        assert np.array_equal(cv2.imread(str(a.label), 0), cv2.imread(str(b.label), 0))
    # the frames are referenced, not copied, relative to DIR: the pair moves together
    assert not (tmp_path / 'pair' / 'flow' / 'images').exists()
    shutil.move(tmp_path / 'pair', tmp_path / 'moved')
    moved = extracted_source(tmp_path / 'moved' / 'flow')
    assert all(x.image.is_file() and x.label.is_file() for x in moved.records)


@pytest.mark.parametrize('where,says', [
    ('ds', r'is \(inside\) the dataset'), ('ds/sub', r'is \(inside\) the dataset'),
    ('other', r'already holds a dataset \(index.csv, dataset.yaml\)')])
def test_out_that_would_overwrite_a_dataset_is_refused_before_writing(tmp_path, where, says):
    import re
    ds = _dataset(tmp_path)
    shutil.copytree(ds, tmp_path / 'pair' / 'other')
    before = {d: _files(tmp_path / 'pair' / d) for d in ('ds', 'other')}
    r, _ = _run(ds, '--out', tmp_path / 'pair' / where)
    assert r.exit_code == 2
    line, = r.stderr.strip().splitlines()
    assert line.startswith('vidseg propagate: error: ') and re.search(says, line), line
    assert {d: _files(tmp_path / 'pair' / d) for d in ('ds', 'other')} == before
    assert not (tmp_path / 'pair' / 'ds' / 'sub').exists()


def test_out_refused_for_lack_of_labels_leaves_no_dataset_behind(tmp_path):
    ds = _dataset(tmp_path, keep=())
    r, _ = _run(ds, '--out', tmp_path / 'new')
    assert r.exit_code == 2 and 'no human-labelled frame' in r.stderr
    assert not (tmp_path / 'new').exists()
    (tmp_path / 'empty').mkdir()                 # a folder that was there stays, empty as it was
    r, _ = _run(ds, '--out', tmp_path / 'empty')
    assert r.exit_code == 2 and list((tmp_path / 'empty').iterdir()) == []


def test_out_with_overwrite_redoes_the_source_s_propagated_labels_in_dir_only(tmp_path):
    ds = _dataset(tmp_path)
    assert _run(ds, '--min-confidence', '0')[0].exit_code == 0     # in place: filled labels
    before = _files(ds)
    r, summary = _run(ds, '--out', tmp_path / 'holes', '--overwrite')
    assert r.exit_code == 0, r.output
    assert summary['propagated'] == 4 and summary['ignored_percent'] > 0 and _files(ds) == before
    r, summary = _run(ds, '--out', tmp_path / 'kept')
    assert r.exit_code == 0 and 'propagated' not in summary     # without --overwrite: the source's are kept
    labels = [x.label for x in read_index(tmp_path / 'kept')]
    assert all(ds.name in str(p.resolve()) for p in labels)
