"""Someone else's dataset, bag or model, built to harm: an index.csv whose sequence names are paths (propagate
and make-variant wrote outside the dataset), a metadata.yaml of 50 MB or a YAML alias bomb (extract held for
minutes or hours), a checkpoint provenance of 1 MB (`vidseg info` printed it whole)."""
import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from support.bags import mono8_bag
from vidseg_ros.cli import app
from vidseg_ros.data.bags import reader
from vidseg_ros.data.datasets.labels import write_label
from vidseg_ros.data.datasets.layouts import FrameRecord, read_index, write_index, write_meta


def _dataset(root, sequence):
    """Four frames of one sequence, human labels on the first and last: enough to propagate and make variants."""
    import cv2
    rng = np.random.default_rng(0)
    recs = []
    for i in range(4):
        image = root / 'images' / 's' / f'{i}.png'
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), rng.integers(0, 255, (16, 20, 3), dtype=np.uint8))
        label = write_label(root / 'labels' / 's' / f'{i}.png', np.ones((16, 20), np.uint8)) if i in (0, 3) else None
        recs.append(FrameRecord(sequence, i, image, label, stamp_ns=i + 1, label_source='human' if label else 'none'))
    write_index(root, recs)
    write_meta(root, {'classes': ['a', 'b'], 'ignore_index': 255, 'fps': 10})
    return root


@pytest.mark.parametrize('sequence', ['../../../escaped', '/ABS/escaped', '..', 'a\\..\\..\\b', 's\x1b[2J\n'])
@pytest.mark.parametrize('command', [['propagate', '{src}'],
                                     ['make-variant', '{src}', '{tmp}/v', '--kind', 'noise', '--sigma', '3']])
def test_a_sequence_that_is_a_path_is_refused_and_nothing_is_written_outside(tmp_path, sequence, command):
    work = tmp_path / 'a' / 'b' / 'c'
    src = _dataset(work / 'src', sequence.replace('/ABS', str(tmp_path)))
    before = {p for p in tmp_path.rglob('*')}
    r = CliRunner().invoke(app, [c.format(src=src, tmp=work) for c in command])
    made = {p for p in tmp_path.rglob('*')} - before
    # the old code wrote labels/<sequence>/ and images/<sequence>_<i>_noise/ wherever the name pointed
    assert not [p for p in made if 'escaped' in str(p)]
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and 'column sequence' in lines[0] and '\x1b' not in lines[0], lines


def test_a_plain_sequence_name_still_reads(tmp_path):
    assert read_index(_dataset(tmp_path, 'drive_cam-1.2_000'))[0].sequence == 'drive_cam-1.2_000'


def _bomb(levels: int) -> str:
    """YAML of 10**levels leaves in ``levels`` lines: each anchor a list of ten aliases of the one before."""
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]']
    lines += [f'a{i}: &a{i} [{", ".join([f"*a{i - 1}"] * 10)}]' for i in range(1, levels)]
    return '\n'.join(lines) + '\n'


def test_an_alias_bomb_in_the_file_list_is_not_expanded(tmp_path, monkeypatch):
    bag = mono8_bag(tmp_path / 'bag', ['/cam'])
    meta = (bag / 'metadata.yaml').read_text().replace('  relative_file_paths:\n  - bag.mcap\n',
                                                       '  relative_file_paths: *a7\n')
    (bag / 'metadata.yaml').write_text(_bomb(8) + meta)
    expanded = []
    real_str = str

    class Str(str):     # str() of the bomb's lists walked its 10**8 leaves (minutes; 10**10 was hours and GBs)
        def __new__(cls, value=''):
            if isinstance(value, list):
                expanded.append(1)
                raise AssertionError('the alias bomb was expanded')
            return real_str.__new__(cls, value)
    monkeypatch.setattr(reader, 'str', Str, raising=False)
    warnings = []
    assert len(list(reader.read_messages(bag, warnings=warnings))) == 3 and not expanded


def test_a_50_mb_metadata_yaml_is_not_parsed_and_the_bag_is_salvaged(tmp_path, monkeypatch):
    bag = mono8_bag(tmp_path / 'bag', ['/cam'])
    meta = (bag / 'metadata.yaml').read_text()
    (bag / 'metadata.yaml').write_text(meta.replace('  custom_data: null\n', '  custom_data:\n    k: ' +
                                                    'v' * 50 * 2**20 + '\n'))
    parsed = []
    monkeypatch.setattr(yaml, 'safe_load', lambda *a, **k: parsed.append(1))
    from ruamel.yaml import YAML
    monkeypatch.setattr(YAML, 'load', lambda *a, **k: parsed.append(1))
    warnings = []
    assert len(list(reader.read_messages(bag, warnings=warnings))) == 3
    assert not parsed and any('50.0 MB, over the 4 MB' in w for w in warnings), warnings
    assert reader.list_topics(bag) == {'/cam': ('sensor_msgs/msg/Image', 3)} and not parsed


def test_info_cuts_a_1_mb_provenance_field(tmp_path):
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    model = create_model('truncated_fpn', num_classes=2, width_mult=0.25)
    path = save_checkpoint(tmp_path / 'm.pt', model, default_meta(
        'truncated_fpn', model.arch_config, classes=['bg', 'fg'], input_hw=[64, 96],
        provenance={'licence': 'L' * 2**20, 'data_roots': ['/d'] * 10**5, 'command': 'vidseg train c.yaml'}))
    r = CliRunner().invoke(app, ['info', str(path)])
    assert r.exit_code == 0, r.output[-500:]
    assert len(r.output) < 20_000, len(r.output)
    prov = json.loads(r.output)['provenance']
    assert prov['licence'].endswith(f'... ({2**20} characters)') and prov['command'] == 'vidseg train c.yaml'
    assert prov['data_roots'][-1] == '... (100000 items)'
