"""Names from someone else's files, as this package keeps them: a bag's topic names (MCAP and sqlite3, read
whole or salvaged) holding terminal escapes, a forged log line or 100 kB; a checkpoint's or dataset's class
names of megabytes; a model card's provenance lines. Whatever is kept (index.csv, the card) carries none of it
raw and no row of 100 kB; a topic keeps one name, so a re-run resumes and --topic selects it."""
import pytest
from support.bags import mono8_bag

from vidseg_ros.data.datasets.extract import ExtractConfig, extract
from vidseg_ros.text import bag_name

ANSI = '/cam\x1b[2J\x1b]0;pwned\x07\r[ERROR] forged\nx'
LONG = '/cam/' + 'A' * 100_000


def _cut(bag, out):
    """The bag's MCAP cut at two thirds, without metadata.yaml: read by the salvage reader."""
    out.mkdir()
    data = next(bag.glob('*.mcap')).read_bytes()
    (out / 'cut.mcap').write_bytes(data[:len(data) * 2 // 3])
    return out


def _rows(out):
    return (out / 'index.csv').read_bytes().split(b'\r\n')


@pytest.mark.parametrize('kind', ['mcap', 'sqlite3', 'salvaged'])
def test_a_hostile_topic_is_indexed_escaped_and_cut_and_a_rerun_resumes(tmp_path, kind):
    bag = mono8_bag(tmp_path / 'bag', [ANSI, LONG], 'sqlite3' if kind == 'sqlite3' else 'mcap')
    if kind == 'salvaged':
        bag = _cut(bag, tmp_path / 'cut')
    out = tmp_path / 'ds'
    first = extract([bag], out)
    assert first.written >= 4 and not first.failed
    rows = _rows(out)
    for row in rows:        # the topic column went raw: ESC, CR and LF inside a quoted cell, 100 kB a row
        assert not any(c in row for c in (b'\x1b', b'\r', b'\n', b'\x07')), row[:300]
        assert len(row) < 2000, len(row)
    assert any(b'/cam\\x1b[2J' in row for row in rows)
    again = extract([bag], out)
    assert (again.written, again.skipped_existing) == (0, first.written)


def test_the_topic_name_shown_and_the_raw_one_select_the_same_topic(tmp_path):
    bag = mono8_bag(tmp_path / 'bag', [ANSI, '/other'])
    shown = extract([bag], tmp_path / 'a', ExtractConfig(topics=[bag_name(ANSI)]))
    raw = extract([bag], tmp_path / 'b', ExtractConfig(topics=[ANSI]))
    assert shown.written == raw.written == 3
    assert {r.split(b',')[7] for r in _rows(tmp_path / 'a')[1:] if r} == {bag_name(ANSI).encode()}


def test_bag_name_keeps_plain_names_and_keeps_hostile_ones_apart():
    assert bag_name('/robot1/camera/image_raw') == '/robot1/camera/image_raw'
    for name in (ANSI, LONG):
        kept = bag_name(name)
        assert len(kept) <= 200 and kept.isprintable() and bag_name(kept) == kept
    # cut alike, told apart by the end
    assert bag_name(LONG) != bag_name(LONG + 'B')
    assert bag_name('/a\x1b') != bag_name('/a\\x1b')


def test_a_checkpoint_or_dataset_with_a_class_name_of_megabytes_is_refused_in_one_short_line(tmp_path):
    """A 10 MB class name loaded, and `vidseg info` printed 10 MB (plots, /diagnostics and the card showed it)."""
    from vidseg_ros.data.datasets.layouts import read_meta
    from vidseg_ros.models.checkpoint import CheckpointError, check_meta, default_meta
    classes = ['Sky' + 'B' * 10_000_000] + [f'c{i}' for i in range(11)]
    with pytest.raises(CheckpointError, match='over 200 characters') as e:
        check_meta(default_meta('keyframe_fpn', classes=classes, palette=[[0, 0, 0]] * 12), 'm.pt')
    assert len(str(e.value)) < 500
    check_meta(default_meta('keyframe_fpn', classes=['x' * 200] + classes[1:], palette=[[0, 0, 0]] * 12), 'm.pt')
    (tmp_path / 'dataset.yaml').write_text(f'classes: [a, {"b" * 201}]\n')
    with pytest.raises(ValueError, match='over 200 characters'):
        read_meta(tmp_path)


def test_the_model_card_keeps_a_checkpoints_line_breaks_out_of_its_lines_and_its_fields_short():
    """A provenance line break added card lines: a '## Evaluation' with made-up numbers under 'Training data',
    a ``` that closed the config block; 1 MB of a field was 1 MB of card."""
    from vidseg_ros.tools.eval_report import card_text
    forged = 'CamVid\n\n## Evaluation: forged\n\n| 1 | 99.9 |\n'
    meta = {'classes': ['a', 'b'], 'provenance': {'data': forged + 'D' * 1_000_000, 'licence': 'L' * 1_000_000},
            'train_config': {'optimizer': 'adamw\n```\n## Evaluation: forged'}}
    report = {'model': 'm.pt', 'labelled': False, 'device': 'cpu', 'data': 'd', 'split': 'val', 'sequences': 1,
              'intervals': {'1': {'latency_ms': 1.0, 'latency_key_ms': 1.0, 'latency_current_ms': 1.0}}}
    card = card_text(report, meta)
    assert '## Evaluation: forged' not in card.splitlines() and '| 1 | 99.9 |' not in card.splitlines()
    assert sum(line.startswith('```') for line in card.splitlines()) == 2 and len(card) < 10_000
    assert '**Training data**: CamVid ## Evaluation: forged' in card
