"""One writer per dataset: two `vidseg extract` runs into one folder both exited 0 with 60 frames on disk and
30 in index.csv (each wrote back the index it had read at its start plus its own rows). Every command that
writes a dataset (or finetune's output folder) now holds ``<folder>/.vidseg.lock``: a second one is refused
at once, naming the holder's PID, and writes nothing."""
import contextlib
import fcntl
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.paths import ROOT
from vidseg_ros.data.bags.from_frames import BagFromFramesConfig, write_bag
from vidseg_ros.data.datasets.extract import extract
from vidseg_ros.data.datasets.label_import import import_labels
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import extracted_source, read_index
from vidseg_ros.data.datasets.public_layouts import guess_layout
from vidseg_ros.data.datasets.variants import make_variant, per_sequence, write_variant
from vidseg_ros.data.labelling.run import propagate_dataset

LOCK = '.vidseg.lock'
IN_USE = r'dataset in use by another vidseg command \(PID 4242\); wait for it to end'


def _bag(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    write_bag(path, [[rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(n)]],
              BagFromFramesConfig(rate_hz=10))
    return path


@contextlib.contextmanager
def _held(folder: Path):
    """The folder's lock as another process holds it (flock sees another open file) with PID 4242 in it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, 'w') as other:
        other.write('4242\n')
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX)
        yield


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _labelled(tmp_path: Path) -> Path:
    """A 6-frame extracted dataset with human labels (a left and a right half) on frames 0 and 5."""
    ds = tmp_path / 'ds'
    extract([_bag(tmp_path / 'a', 6, 1)], ds)
    labels = tmp_path / 'labels'
    for rec in (r for r in read_index(ds) if r.index in (0, 5)):
        ids = np.zeros((24, 32), np.uint8)
        ids[:, 16:] = 1
        write_label(labels / f'{rec.stamp_ns}.png', ids)
    import_labels(ds, labels, class_names=['left', 'right'])
    return ds


def test_extract_into_a_dataset_in_use_is_refused_and_writes_nothing(tmp_path):
    ds = tmp_path / 'ds'
    extract([_bag(tmp_path / 'a', 6, 1)], ds)
    second = _bag(tmp_path / 'b', 6, 2)
    with _held(ds):
        before = _tree(ds)
        with pytest.raises(ValueError, match=f'{ds}: {IN_USE}'):
            extract([second], ds)
        assert _tree(ds) == before
    with _held(tmp_path / 'new'):       # a new folder another run has just made is not removed either
        with pytest.raises(ValueError, match=IN_USE):
            extract([second], tmp_path / 'new')
        assert [p.name for p in (tmp_path / 'new').iterdir()] == [LOCK]
    assert extract([second], ds).written == 6 and len(read_index(ds)) == 12     # released: it goes ahead


def test_label_import_and_propagate_into_a_dataset_in_use_are_refused_and_write_nothing(tmp_path):
    ds = _labelled(tmp_path)
    with _held(ds):
        before = _tree(ds)
        with pytest.raises(ValueError, match=IN_USE):
            import_labels(ds, tmp_path / 'labels', class_names=['a', 'b'])
        with pytest.raises(ValueError, match=IN_USE):
            propagate_dataset(ds)
        assert _tree(ds) == before
    counts = propagate_dataset(ds)
    assert counts['total_human'] == 2 and counts['total_propagated'] == 4


def test_make_variant_and_finetune_into_a_folder_in_use_are_refused_and_write_nothing(tmp_path):
    src = extracted_source(_labelled(tmp_path))
    with _held(tmp_path / 'v'):
        with pytest.raises(ValueError, match=IN_USE):
            make_variant(src, 'noise', out=tmp_path / 'v', sigma=3.0, copies=2)
        with pytest.raises(ValueError, match=IN_USE):
            write_variant(per_sequence(src, 0), tmp_path / 'v')
        assert [p.name for p in (tmp_path / 'v').iterdir()] == [LOCK]
    from vidseg_ros.tools.finetune import one_shot
    (tmp_path / 'seq').mkdir()
    cv2.imwrite(str(tmp_path / 'seq' / '00000.png'), np.zeros((24, 32, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'mask.png'), np.zeros((24, 32), np.uint8))
    with _held(tmp_path / 'ft'):        # refused before the model is even loaded (there is none here)
        with pytest.raises(ValueError, match=r'ft: output folder in use by another vidseg command \(PID 4242\)'):
            one_shot(tmp_path / 'none.pt', tmp_path / 'seq' / '00000.png', tmp_path / 'mask.png', tmp_path / 'seq',
                     tmp_path / 'ft', steps=1, progress=False)
        assert [p.name for p in (tmp_path / 'ft').iterdir()] == [LOCK]


def test_the_cli_refusal_is_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    bag = _bag(tmp_path / 'a', 3, 1)
    with _held(tmp_path / 'ds'):
        r = CliRunner().invoke(app, ['extract', str(bag), '--out', str(tmp_path / 'ds')])
    assert r.exit_code == 2 and r.stderr.count('\n') == 1
    assert f'{tmp_path / "ds"}: dataset in use by another vidseg command (PID 4242); wait for it to end' in r.stderr


def test_the_lock_file_is_no_part_of_the_dataset_and_nested_use_shares_it(tmp_path):
    from vidseg_ros.data.datasets.lock import dataset_lock
    ds = _labelled(tmp_path)
    assert (ds / LOCK).read_text() == ''        # no stale PID once the writer is done
    assert guess_layout(ds) == 'folder' and len(extracted_source(ds).records) == 6
    with dataset_lock(tmp_path / 'v', create=True):        # a command that writes a variant in steps
        write_variant(per_sequence(extracted_source(ds), 0), tmp_path / 'v')
    assert len(read_index(tmp_path / 'v')) == 2
    with dataset_lock(tmp_path / 'x' / 'y', create=True):
        pass
    assert not (tmp_path / 'x').exists()            # a folder it made and left empty is removed again


# Each run reads the index, then takes a second over its bag: started together, the runs overlap.
_RACER = '''
import sys, time
from pathlib import Path
from vidseg_ros.data.datasets import extract as ex
bag, out, ready, go = sys.argv[1:5]
read = ex.read_messages
def slow(*args, **kwargs):
    time.sleep(1.0)
    yield from read(*args, **kwargs)
ex.read_messages = slow
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
try:
    print(ex.extract([bag], out).written)
except ValueError as e:
    print(e)
    sys.exit(2)
'''


def test_two_extract_processes_at_once_lose_no_frame(tmp_path):
    """Two real processes into one new folder: one is refused, or both succeed with every frame indexed."""
    bags = [_bag(tmp_path / f'b{i}', 6, i) for i in range(2)]
    go = tmp_path / 'go'
    procs = [subprocess.Popen([sys.executable, '-c', _RACER, str(bag), str(tmp_path / 'ds'), str(tmp_path / f'r{i}'),
                               str(go)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, bag in enumerate(bags)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f'r{i}').exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) in ([0, 0], [0, 2]), outs
    for code, out in zip(codes, outs):
        assert code == 0 or 'dataset in use by another vidseg command' in out, out
    on_disk = sorted((tmp_path / 'ds' / 'images').rglob('*.png'))
    assert sorted(r.image for r in read_index(tmp_path / 'ds')) == on_disk
    assert len(on_disk) == 6 * codes.count(0)


def test_make_variant_holds_one_lock_from_its_noise_images_to_its_index(tmp_path, monkeypatch):
    """`vidseg make-variant --kind noise` writes images, then the index: a second run starting between the two
    steps overwrote the first one's noise images (each step locked on its own)."""
    import threading

    from vidseg_ros.data.datasets import variants
    from vidseg_ros.data.datasets.lock import dataset_lock
    from vidseg_ros.tools.commands_data import make_variant as command
    ds = _labelled(tmp_path)
    seen = []
    real = variants.write_variant

    def between(var, out):          # another writer tries here, on another thread (another PID in real life)
        def other():
            try:
                with dataset_lock(out, create=True):
                    seen.append('got in')
            except ValueError as e:
                seen.append(str(e))
        t = threading.Thread(target=other)
        t.start()
        t.join()
        return real(var, out)
    monkeypatch.setattr(variants, 'write_variant', between)
    report = command(ds, tmp_path / 'v', 'noise', sigma=3.0, copies=2)
    assert report['frames'] > 0 and len(seen) == 1 and 'dataset in use by another vidseg command' in seen[0]
