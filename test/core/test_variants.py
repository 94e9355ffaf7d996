"""All-frames protocol variants: selection counts, strides, noise sigma and 8-bit noisy copies."""
import numpy as np
import pytest

from vidseg_ros.data.images import read_rgb
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import FrameRecord, FrameSource, extracted_source, identity_lut
from vidseg_ros.data.datasets.variants import (add_noise, make_variant, measure_noise_sigma, per_sequence,
                                      strided, successive, write_variant)
from vidseg_ros.tools import commands_data


def _source(tmp_path, seqs=2, n=30, hw=(16, 20), noise=4.0):
    import cv2
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, hw + (3,)).astype(np.float32)
    recs = []
    for s in range(seqs):
        for i in range(n):
            img = np.clip(np.rint(base + rng.normal(0, noise, base.shape)), 0, 255).astype(np.uint8)
            p = tmp_path / 'img' / f's{s}' / f'{i}.png'
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), img)
            lab = write_label(tmp_path / 'lab' / f's{s}' / f'{i}.png', np.full(hw, i % 2, np.uint8))
            recs.append(FrameRecord(f's{s}', i, p, lab, stamp_ns=i))
    return FrameSource(recs, ['a', 'b'], 255, identity_lut(255, 2), name='toy')


def test_selection_variants(tmp_path):
    src = _source(tmp_path)
    one = per_sequence(src, 1)
    assert [(r.sequence, r.index) for r in one.records] == [('s0', 15), ('s1', 15)]
    twenty = per_sequence(src, 20)
    assert len(twenty.records) == 40 and twenty.records[0].index == 0 and twenty.records[19].index == 29
    assert len(per_sequence(src, 0).records) == 60
    s = strided(src, count=3, stride=20)
    assert [(r.sequence, r.index) for r in s.records] == [('s0', 0), ('s0', 20), ('s1', 0)]
    c = successive(src, count=35)
    assert [r.index for r in c.records[:3]] == [0, 1, 2] and c.records[-1].sequence == 's1'


def test_noise_sigma_matches_frame_differences(tmp_path):
    src = _source(tmp_path, noise=4.0)
    sigma = measure_noise_sigma(src)
    # Independent noise of std 4 in each frame: successive differences have std 4 * sqrt(2).
    assert sigma == pytest.approx(4.0 * np.sqrt(2), rel=0.15)
    rgb = np.full((50, 50, 3), 128, np.uint8)
    noisy = add_noise(rgb, sigma, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and np.std(noisy.astype(float) - 128) == pytest.approx(sigma, rel=0.1)


def test_noise_variant_written_as_dataset(tmp_path):
    src = _source(tmp_path)
    var = make_variant(src, 'noise', copies=4, out=tmp_path / 'v')
    assert len(var.records) == 8 and var.extra['noise_sigma'] > 0
    first = read_rgb(var.records[0].image)
    assert np.array_equal(first, read_rgb(per_sequence(src, 1).records[0].image))   # copy 0 = original
    assert not np.array_equal(read_rgb(var.records[1].image), first)
    write_variant(var, tmp_path / 'v')
    back = extracted_source(tmp_path / 'v')
    assert len(back.records) == 8 and back.class_names == ['a', 'b']
    assert back.read_label(back.records[0]).max() == 1


def test_make_variant_command_on_davis(tmp_path, davis_dir):
    res = commands_data.make_variant(davis_dir, tmp_path / 'v', 'per_sequence', n=1)
    assert res['frames'] == res['sequences'] >= 11
    back = extracted_source(tmp_path / 'v')
    assert set(np.unique(back.read_label(back.records[0]))) <= {0, 1}
    with pytest.raises(ValueError, match='valid'):
        make_variant(back, 'bogus')


def test_make_variant_refuses_its_source_and_an_existing_dataset_before_writing(tmp_path):
    """`make-variant ds ds` rewrote ds/index.csv with the variant's rows (6 became 1)."""
    import shutil
    src = _source(tmp_path, seqs=1, n=4)
    write_variant(per_sequence(src, 0), tmp_path / 'ds')          # a dataset folder holding index.csv
    ds = extracted_source(tmp_path / 'ds')
    before = (tmp_path / 'ds' / 'index.csv').read_bytes()
    for out, kind, match in ((tmp_path / 'ds', 'per_sequence', 'already holds a dataset'),
                             (tmp_path / 'ds', 'noise', 'already holds a dataset'),
                             (tmp_path / 'img', 'per_sequence', "holds the source's files"),
                             (tmp_path / 'img' / 's0', 'noise', "holds the source's files"),
                             (tmp_path, 'per_sequence', "holds the source's files")):
        with pytest.raises(ValueError, match=match):
            make_variant(ds if out == tmp_path / 'ds' else src, kind, out=out, copies=2)
    assert (tmp_path / 'ds' / 'index.csv').read_bytes() == before
    assert not (tmp_path / 'ds' / 'images').exists() and not (tmp_path / 'img' / 'index.csv').exists()
    shutil.rmtree(tmp_path / 'ds')           # gone: the folder is new again
    write_variant(make_variant(src, 'per_sequence', out=tmp_path / 'ds'), tmp_path / 'ds')


def test_noise_on_single_frame_sequences_says_what_to_do(tmp_path):
    """It said 'pass sigma explicitly', which the CLI has no option for."""
    one = per_sequence(_source(tmp_path), 1)            # every sequence a single frame
    with pytest.raises(ValueError, match='successive video frames') as e:
        make_variant(one, 'noise', out=tmp_path / 'v')
    assert 'pass sigma' not in str(e.value)
    assert len(make_variant(one, 'noise', out=tmp_path / 'v', sigma=3.0, copies=2).records) == 4


def test_noise_copies_of_a_still_video_are_refused_not_duplicates(tmp_path):
    """Every successive frame identical measures sigma 0: the 'noise' copies were exact duplicates, exit 0."""
    still = _source(tmp_path, noise=0.0)
    assert measure_noise_sigma(still) == 0.0          # what `vidseg noise-sigma` reports, as it is
    for sigma in (None, 0.0):
        with pytest.raises(ValueError, match=r'(identical|must be above 0).*exact duplicates.*--sigma S'):
            make_variant(still, 'noise', out=tmp_path / 'v', sigma=sigma, copies=2)
        assert not (tmp_path / 'v' / 'images').exists()
    var = make_variant(still, 'noise', out=tmp_path / 'v', sigma=3.0, copies=2)
    assert not np.array_equal(read_rgb(var.records[0].image), read_rgb(var.records[1].image))


def test_cli_noise_variant_takes_sigma_where_it_cannot_be_measured(tmp_path):
    """Single-frame sequences have no frame-to-frame noise to measure: the error names --sigma, which works."""
    from typer.testing import CliRunner
    from vidseg_ros.cli import app
    one = per_sequence(_source(tmp_path), 1)
    write_variant(one, tmp_path / 'one')
    base = ['make-variant', str(tmp_path / 'one'), '--kind', 'noise', '--split', 'all', '--copies', '2']
    r = CliRunner().invoke(app, base + [str(tmp_path / 'v1')])
    assert r.exit_code == 2 and 'make-variant --sigma' in r.stderr
    r = CliRunner().invoke(app, base + [str(tmp_path / 'v2'), '--sigma', '3'])
    assert r.exit_code == 0, r.output
    assert '"frames": 4' in r.stdout and '"noise_sigma": 3.0' in r.stdout


def _two_sizes(tmp_path, sizes):
    """One sequence whose frames have the sizes ``sizes`` (a camera that switched modes), all labelled."""
    import cv2
    rng = np.random.default_rng(0)
    recs = []
    for i, hw in enumerate(sizes):
        p = tmp_path / 'img' / f'{i}.png'
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 255, hw + (3,), dtype=np.uint8))
        recs.append(FrameRecord('s', i, p, write_label(tmp_path / 'lab' / f'{i}.png', np.zeros(hw, np.uint8)), i))
    return FrameSource(recs, ['a', 'b'], 255, identity_lut(255, 2), name='alt')


def test_noise_sigma_where_no_two_successive_frames_share_a_size_is_an_error(tmp_path):
    """Every pair was skipped and sqrt(0 / 1) reported sigma 0.0: the noise variant then wrote copies identical
    to their original, exit 0."""
    src = _two_sizes(tmp_path, [(12, 16), (15, 20)] * 2)
    with pytest.raises(ValueError, match=r'no two successive frames have the same size \(3 pair') as e:
        measure_noise_sigma(src)
    assert 'make-variant --sigma' in str(e.value)
    with pytest.raises(ValueError, match='no two successive frames have the same size'):
        make_variant(src, 'noise', out=tmp_path / 'v', copies=2)
    assert not (tmp_path / 'v').exists()


def test_noise_sigma_uses_the_pairs_of_one_size_past_the_sampled_ones(tmp_path):
    """max_pairs=1 samples the first pair (two sizes); the sigma comes from a later pair of one size."""
    src = _two_sizes(tmp_path, [(12, 16), (15, 20), (15, 20)])
    assert measure_noise_sigma(src, max_pairs=1) > 0


def test_noise_sigma_command_is_a_user_error_on_frames_of_two_sizes(tmp_path):
    from typer.testing import CliRunner
    from vidseg_ros.cli import app
    write_variant(per_sequence(_two_sizes(tmp_path, [(12, 16), (15, 20)] * 2), 0), tmp_path / 'ds')
    r = CliRunner().invoke(app, ['noise-sigma', str(tmp_path / 'ds'), '--split', 'all'])
    assert r.exit_code == 2 and 'same size' in r.stderr and '"sigma"' not in r.stdout, r.output


def test_noise_copies_on_a_full_disk_are_an_error_not_truncated_images(tmp_path):
    """cv2.imwrite's result was ignored: a full disk left truncated noise images and no error."""
    import errno

    from support.disk import file_size_limit
    src = _source(tmp_path, n=3)          # noise frames: PNGs of ~1 kB
    with file_size_limit(300), pytest.raises(OSError) as err:
        make_variant(src, 'noise', copies=2, sigma=3.0, out=tmp_path / 'v')
    assert err.value.errno == errno.EFBIG and err.value.filename.endswith('00000.png')
    assert not (tmp_path / 'v').exists()      # the copies made, and the folder, removed


def test_a_variant_stores_its_own_files_relative_and_can_be_moved(tmp_path, monkeypatch):
    """With a relative OUT, the noise copies were stored as absolute paths: a moved variant lost its images."""
    import shutil

    from vidseg_ros.data.datasets.layouts import INDEX_NAME
    src = _source(tmp_path, n=3)
    lut = np.arange(256, dtype=np.uint8)      # not the dataset convention's (ids >= 2 kept): labels are converted
    src = FrameSource(src.records, src.class_names, src.ignore_index, lut, name='toy')
    monkeypatch.chdir(tmp_path)
    write_variant(make_variant(src, 'noise', copies=2, sigma=3.0, out='v'), 'v')
    rows = (tmp_path / 'v' / INDEX_NAME).read_text().splitlines()[1:]
    assert len(rows) == 4 and all(r.split(',')[3].startswith('images/') for r in rows)      # inside: relative
    assert all(r.split(',')[4].startswith('labels/') for r in rows)
    shutil.move(tmp_path / 'v', tmp_path / 'moved')
    back = extracted_source(tmp_path / 'moved')
    assert all(r.image.is_file() and r.label.is_file() for r in back.records)
    assert read_rgb(back.records[1].image).shape == (16, 20, 3) and back.read_label(back.records[0]).max() <= 1


def test_a_variant_whose_source_moved_says_so_when_opened(tmp_path):
    """A variant refers to its source's frames by absolute path: a moved source was 'cannot read image file'
    from the middle of a training run; now opening the variant names the variant and how to make it again."""
    import shutil
    src = _source(tmp_path, n=3)
    write_variant(per_sequence(src, 1), tmp_path / 'v')
    assert len(extracted_source(tmp_path / 'v').records) == 2
    shutil.move(tmp_path / 'img', tmp_path / 'img_moved')
    with pytest.raises(FileNotFoundError, match=r"v: variant .* refers to .*img.*missing .*vidseg make-variant"):
        extracted_source(tmp_path / 'v')


def test_a_variant_moved_or_copied_with_its_source_still_reads(tmp_path):
    """A variant stored its source's frames as absolute paths: moving (or copying) the source and variant folders
    together left a variant that refers to the old place. They are relative now; an older absolute index reads."""
    import shutil
    from dataclasses import replace

    from vidseg_ros.data.datasets.layouts import INDEX_NAME, write_index
    src = _source(tmp_path / 'pair', n=3)
    source = tmp_path / 'pair' / 'src'
    write_variant(per_sequence(src, 0), source)          # the source as a dataset folder of its own files
    commands_data.make_variant(source, tmp_path / 'pair' / 'v', 'per_sequence', n=1)
    rows = (tmp_path / 'pair' / 'v' / INDEX_NAME).read_text().splitlines()[1:]
    assert [r.split(',')[3] for r in rows] == ['../img/s0/1.png', '../img/s1/1.png']
    shutil.copytree(tmp_path / 'pair', tmp_path / 'copy')
    shutil.move(tmp_path / 'pair', tmp_path / 'moved')
    for where in ('copy', 'moved'):
        back = extracted_source(tmp_path / where / 'v')
        assert [r.index for r in back.records] == [1, 1] and back.read_label(back.records[1]).max() == 1
        assert read_rgb(back.records[0].image).shape == (16, 20, 3)
        assert all(where in str(r.image.resolve()) for r in back.records)
    old = extracted_source(tmp_path / 'moved' / 'v')      # as an older version wrote it: absolute paths
    (tmp_path / 'old').mkdir()
    write_index(tmp_path / 'old', [replace(r, image=r.image.resolve(), label=r.label.resolve()) for r in old.records])
    assert '/moved/img/' in (tmp_path / 'old' / INDEX_NAME).read_text()
    assert len([r for r in extracted_source(tmp_path / 'old').records if r.image.is_file()]) == 2


def test_a_full_disk_leaves_dataset_yaml_and_index_whole_with_no_temporary_file(tmp_path):
    """dataset.yaml was written in place (a full disk left a truncated class table) and index.csv.tmp stayed. A real
    failing write: past the file-size limit (EFBIG, as ENOSPC on a full disk); it patched builtins.open before,
    which the writer no longer calls (it writes through a locked descriptor since d1e6c3a)."""
    import errno

    from support.disk import file_size_limit
    from vidseg_ros.data.datasets.layouts import read_meta, write_index, write_meta
    src = _source(tmp_path, n=2)
    write_variant(per_sequence(src, 1), tmp_path / 'v')
    before = {p.name: p.read_bytes() for p in (tmp_path / 'v').iterdir() if p.is_file()}
    records = extracted_source(tmp_path / 'v').records
    with file_size_limit(5):
        with pytest.raises(OSError) as meta_error:
            write_meta(tmp_path / 'v', {'classes': ['x', 'y'], 'ignore_index': 255})
        with pytest.raises(OSError) as index_error:
            write_index(tmp_path / 'v', records)
    assert meta_error.value.errno == index_error.value.errno == errno.EFBIG
    assert {p.name: p.read_bytes() for p in (tmp_path / 'v').iterdir() if p.is_file()} == before
    assert read_meta(tmp_path / 'v')['classes'] == ['a', 'b']


@pytest.mark.parametrize('kind, options', [('strided', {'count': 9, 'stride': 20}),
                                           ('strided', {'count': 400, 'stride': 20}),
                                           ('successive', {'count': 100})])
def test_strided_and_successive_on_davis_pick_the_frames_a_plain_listing_does(tmp_path, davis_dir, kind, options,
                                                                               caplog):
    """The frames of `make-variant --kind strided|successive` against an independent selection from DAVIS's folders
    (every frame labelled): every stride-th frame of each sequence, sequence after sequence, the first `count`; or
    the first `count` frames in a row. Asking more than there are keeps them all, with a warning. The variant's
    dataset.yaml names its kind: a selection kept its source's name ('variant: davis' for all three)."""
    import cv2
    import yaml
    seqs = (davis_dir / 'ImageSets' / 'sequences.txt').read_text().split()
    frames = {s: sorted(p.name for p in (davis_dir / 'JPEGImages' / '480p' / s).iterdir()) for s in seqs}
    if kind == 'strided':
        want = [(s, f) for s in seqs for f in frames[s][::options['stride']]][:options['count']]
    else:
        want = [(s, f) for s in seqs for f in frames[s]][:options['count']]
    with caplog.at_level('WARNING'):
        res = commands_data.make_variant(davis_dir, tmp_path / 'v', kind, **options)
    back = extracted_source(tmp_path / 'v')
    got = [(r.sequence, r.image.name) for r in back.records]
    assert sorted(got) == sorted(want) and res['frames'] == len(want)
    for r in back.records[::7]:      # each frame with its own label (DAVIS's 0/255 masks as 0/1 class ids)
        mask = cv2.imread(str(davis_dir / 'Annotations' / '480p' / r.sequence / r.image.with_suffix('.png').name), 0)
        assert np.array_equal(back.read_label(r), (mask > 127).astype(np.uint8))
    short = len(want) < options['count']
    assert (f'only {len(want)}' in caplog.text) == short
    name = {'strided': 'davis-strided20', 'successive': 'davis-successive'}[kind]
    assert yaml.safe_load((tmp_path / 'v' / 'dataset.yaml').read_text())['variant'] == name
