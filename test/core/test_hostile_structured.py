"""Hostile structured text where the package reads YAML, CSV or JSON from a user or a dataset/bag folder: alias
bombs, deep nesting, huge scalars, a cycle, non-UTF-8 bytes, huge integers, cells over the csv module's limit,
wrong types. Each is a one-line error naming the file (exit 2 at the CLI), in bounded time and memory. Where the
old code hung or took exponential time the case runs in a child with a timeout and a memory cap."""
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from support.bags import mono8_bag
from support.eval_data import folder_dataset, noise_images

from vidseg_ros.config import ConfigError, load_yaml
from vidseg_ros.data.datasets.labels import read_class_table
from vidseg_ros.data.datasets.layouts import extracted_source, read_index
from vidseg_ros.tools.cli_options import parse_set

ROOT = Path(__file__).resolve().parents[2]


def bomb(levels: int = 9, indent: str = '') -> str:
    """'Billion laughs': 9 anchors of 9 aliases each, about 340 bytes for 9**9 leaves."""
    text = f'{indent}a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n'
    for prev, key in zip('abcdefgh', 'bcdefghi'[:levels - 1]):
        text += f'{indent}{key}: &{key} [{", ".join([f"*{prev}"] * 9)}]\n'
    return text


def map_bomb() -> str:
    """The bomb as nested mappings: a traversal of mappings (a params file's node paths) is exponential."""
    text = 'a: &a {' + ', '.join(f'k{i}: 1' for i in range(9)) + '}\n'
    for prev, key in zip('abcdefgh', 'bcdefghi'):
        text += f'{key}: &{key} {{' + ', '.join(f'k{i}: *{prev}' for i in range(9)) + '}\n'
    return text


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          preexec_fn=_capped, env={**os.environ, 'PYTHONPATH': str(ROOT)})


@pytest.mark.parametrize('text, says', [
    ('x: ' + '[' * 100_000 + ']' * 100_000 + '\n', 'nested over 64 levels'),     # RecursionError: internal error
    ('x: ' + '{a: ' * 20_000 + '1' + '}' * 20_000 + '\n', 'nested over 64 levels'),
    ('x:' + ''.join('\n' + ' ' * i + 'k:' for i in range(1, 200)) + ' 1\n', 'nested over 64 levels'),
    (bomb(), 'an alias bomb'),                                                    # loaded, 9**9 leaves
    ('scale_range: &a [1, *a]\n', 'a cycle'),                                     # loaded as a recursive list
    ('epochs: ' + '9' * 5000 + '\n', '4300 digits'),                              # ValueError without the file
    (b'name: caf\xe9\n', 'not UTF-8 text'),                                       # UnicodeDecodeError, no file
], ids=['deep-list', 'deep-flow-map', 'deep-block-map', 'bomb', 'cycle', 'bigint', 'latin1'])
def test_yaml_refused_naming_the_file(tmp_path, text, says):
    path = tmp_path / 'cfg.yaml'
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=says) as e:
        load_yaml(path)
    assert str(path) in str(e.value)


def test_yaml_that_is_fine_still_loads(tmp_path):
    path = tmp_path / 'cfg.yaml'
    path.write_bytes(b'\xef\xbb\xbf' + bomb(levels=5).encode() + b'base: &base {x: 1}\nm: {<<: *base, y: 2}\n'
                     b'lr: 1e-3\ndeep: ' + b'[' * 60 + b']' * 60 + b'\n')
    data = load_yaml(path)
    assert data['m'] == {'x': 1, 'y': 2} and data['lr'] == 1e-3 and len(data['e'][0][0][0]) == 9


def test_huge_yaml_is_refused_at_once(tmp_path):
    """A 50 MB scalar took PyYAML's pure-Python scanner minutes (train and eval ran past a 30 s timeout)."""
    path = tmp_path / 'huge.yaml'
    path.write_text('name: "' + 'x' * 50_000_000 + '"\n')
    p = child(f'from vidseg_ros.config import load_yaml\nload_yaml({str(path)!r})')
    assert p.returncode == 1 and 'over 4 MB of YAML' in p.stderr, p.stderr[-1000:]


@pytest.mark.parametrize('meta, says', [
    ('classes: {a: 1}\n', 'classes must be a list'),          # read as the class list ['a']: eval gave mIoU nan
    ('classes: [bg, obj]\nignore_index: [1]\n', 'ignore_index must be an integer'),    # TypeError: internal error
    ('classes: [bg, yes]\n', 'classes must be a list of names'),
    ('fps: .nan\n', 'fps must be a finite number'),
    ('ignore_index: -7\n', 'ignore_index must be 0..255'),                 # OverflowError: internal error
    ('ignore_index: ' + '9' * 20 + '\n', 'ignore_index must be 0..255'),
    ('colors: [[0, 0, 0], [4, 5, 999]]\n', r'colors must be \[r, g, b\] triples of 0..255, got \[4, 5, 999\]'),
    ('a: 1\na: 2\n', 'given twice'),
    ('x: ' + '[' * 100_000 + ']' * 100_000 + '\n', 'nested over'),
], ids=['classes-map', 'ignore-list', 'classes-bool', 'fps-nan', 'ignore-negative', 'ignore-huge', 'colour-999', 'dup-key',
        'deep'])
def test_dataset_yaml_types_and_bounds(tmp_path, meta, says):
    labels = [np.zeros((8, 8), np.uint8)] * 2
    root = folder_dataset(tmp_path / 'ds', noise_images(labels), labels)
    (root / 'dataset.yaml').write_text(meta)
    with pytest.raises(ValueError, match=says) as e:
        extracted_source(root)
    assert 'dataset.yaml' in str(e.value)


HEADER = 'sequence,index,stamp_ns,image,label,label_source,bag,topic,encoding\n'


@pytest.mark.parametrize('rows, says', [
    ('s,0,0,"' + 'x' * 200_000 + '",,,,,\n', 'field larger than field limit'),       # _csv.Error: internal error
    ('s,0,0,images/s/0.png,,,,,\ns,0,0,images/s/0.png,,,,,\n', 'is also row 1'),      # read as two frames
    ('s,-5,0,images/s/0.png,,,,,\n', "'-5' is out of range"),
    ('s,0,' + '9' * 30 + ',images/s/0.png,,,,,\n', 'out of range'),
], ids=['big-cell', 'dup-row', 'negative-index', 'huge-stamp'])
def test_index_csv_refused_naming_the_file(tmp_path, rows, says):
    (tmp_path / 'index.csv').write_text(HEADER + rows)
    with pytest.raises(ValueError, match=says) as e:
        read_index(tmp_path)
    assert 'index.csv' in str(e.value)


def test_index_csv_with_a_bom_is_read(tmp_path):
    """A spreadsheet's "CSV UTF-8" starts with a BOM: it was 'no column sequence in the header'."""
    (tmp_path / 'index.csv').write_text('\ufeff' + HEADER + 's,0,0,images/s/0.png,,,,,\r\n')
    (rec,) = read_index(tmp_path)
    assert rec.sequence == 's' and rec.image == tmp_path / 'images/s/0.png'


def test_class_table_cell_over_the_csv_limit(tmp_path):
    path = tmp_path / 'classes.csv'
    path.write_text('name,r,g,b\n"' + 'x' * 200_000 + '",1,2,3\n')
    with pytest.raises(ValueError, match='classes.csv: not a readable CSV table'):
        read_class_table(path)


@pytest.mark.parametrize('item, says', [
    ('crop_hw=' + '[' * 100_000 + ']' * 100_000, 'crop_hw: nested too deep'),      # RecursionError
    ('epochs=' + '9' * 5000, 'epochs: Exceeds the limit'),                         # ValueError: no option named
], ids=['deep', 'bigint'])
def test_set_values_that_json_cannot_take(item, says):
    with pytest.raises(typer.BadParameter, match=says):
        parse_set([item])


def test_bag_metadata_nested_too_deep_is_salvaged(tmp_path):
    """rosbags parsed it with a RecursionError: extract was an internal error; now the bag is read record by
    record, as for any metadata.yaml the regular reader cannot use."""
    bag = mono8_bag(tmp_path / 'bag', ['/cam'])
    meta = bag / 'metadata.yaml'
    meta.write_text('junk: ' + '[' * 100_000 + ']' * 100_000 + '\n' + meta.read_text())
    p = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'extract', str(bag), '--out', str(tmp_path / 'ds')],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, preexec_fn=_capped,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'nested over 64 levels' in p.stderr and len(read_index(tmp_path / 'ds')) == 3


@pytest.mark.parametrize('text, says', [
    ('x: ' + '[' * 100_000 + ']' * 100_000 + '\n', 'nested over 64 levels'),     # RecursionError out of the launch
    (map_bomb(), 'an alias bomb'),                                               # node paths: 9**9 mappings walked
], ids=['deep', 'bomb'])
def test_params_file_problem_is_bounded(tmp_path, text, says):
    # 'launch' alone imports the repository's launch/ folder as a namespace package where launch is not installed
    pytest.importorskip('launch.actions', reason='launch comes from ../shared/ros2_extras')
    path = tmp_path / 'params.yaml'
    path.write_text(text)
    p = child('from pathlib import Path\nfrom vidseg_ros.ros.launch_support import params_problem\n'
              f'print(params_problem(Path({str(path)!r}), "vidseg_segmenter"))')
    assert p.returncode == 0 and says in p.stdout, p.stderr[-1000:]


@pytest.mark.parametrize('text', ['[' * 100_000 + ']' * 100_000, '- ' + bomb().replace('\n', '\n  ')],
                         ids=['deep', 'bomb'])
def test_bag_qos_text_is_bounded(text, caplog):
    """A channel's offered_qos_profiles (text from whoever wrote the bag) was a RecursionError out of bag-recover,
    or an alias bomb that metadata.yaml would list expanded; now listed as none, with a warning."""
    from vidseg_ros.data.bags.writer import _qos_profiles
    assert _qos_profiles('/cam', text) == []
    assert 'offered_qos_profiles in the bag is not YAML' in caplog.text


def test_index_of_a_header_only_says_it_has_no_frames(tmp_path):
    """eval --split s of it said 'no sequence s; it has' and stopped there."""
    from vidseg_ros.data.datasets.public_layouts import open_source
    (tmp_path / 'index.csv').write_text(HEADER)
    with pytest.raises(ConfigError, match=r'no sequence s; it has no frames \(its index lists none\)$'):
        open_source(tmp_path, split='s')


@pytest.mark.parametrize('text, says', [
    ('1: 2\n', r'^1: setting names are text, got int$'),                   # TypeError in the unknown-key message
    ('null: 2\nepochs: 1\n', r'^None: setting names are text, got NoneType$'),
    ('arch_config: {1: 2}\n', r'^arch_config\.1: setting names are text'),  # "keywords must be strings"
])
def test_setting_names_that_are_not_text(tmp_path, text, says):
    from vidseg_ros.training.config import load_train_config
    path = tmp_path / 'cfg.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_train_config(path)


def test_grant_file_nested_too_deep_is_no_grant(tmp_path):
    """A run's overwrite_output.json (read where last.pt is of an older version) of 10**5 nested brackets was a
    RecursionError out of `train --resume`, an internal error; it grants nothing now, as a malformed one does."""
    import torch
    from vidseg_ros.training.run_outputs import GRANT_NAME, saved_grant
    torch.save({'format': 'old'}, tmp_path / 'last.pt')
    (tmp_path / GRANT_NAME).write_text('[' * 100_000 + ']' * 100_000)
    assert saved_grant(tmp_path) is None


def test_class_table_names_with_control_characters_name_the_table(tmp_path):
    """label-import --classes with a NUL in a name said '<dataset>/dataset.yaml: class names hold control
    characters': the file to fix is the class table."""
    path = tmp_path / 'classes.csv'
    path.write_text('name,r,g,b\nbg,0,0,0\nob\x00j,1,1,1\n')
    with pytest.raises(ValueError, match=r'classes\.csv: class names hold control characters'):
        read_class_table(path)
