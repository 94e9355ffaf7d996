"""A long recording's metadata.yaml: past the 4 MB any YAML may be (26,000 1 s splits wrote 4.8 MB), it is still read
when the folder's files account for it; hostile ones stay refused. The 4 MB bounds are scaled down here so that a
few dozen real splits stand for the 26,000 (their parse took 17 s)."""
import pytest

from support.bags import image_cdr
from vidseg_ros import config
from vidseg_ros.data.bags import reader
from vidseg_ros.data.bags.writer import BagWriter, bag_qos_profile

SPLITS = 40


@pytest.fixture
def small_bounds(monkeypatch):
    """Bounds of 4 kB, 2.7 times less than the bag's metadata.yaml, as 4 MB is to that of 26,000 splits."""
    monkeypatch.setattr(reader, 'METADATA_LIMIT', 4096)
    monkeypatch.setattr(reader, 'MAX_YAML_BYTES', 4096, raising=False)
    monkeypatch.setattr(config, 'MAX_YAML_BYTES', 4096)
    reader._parsed_metadata.cache_clear()
    yield
    reader._parsed_metadata.cache_clear()


def _long_bag(path):
    """SPLITS 1 s splits of two topics, written by the recorder's writer, under a 40-character name (every split's
    name is twice in metadata.yaml)."""
    w = BagWriter(path / ('b' * 40), max_bag_duration_s=1.0, direct_io=False)
    for topic in ('/cam', '/mask'):
        w.add_topic(topic, 'sensor_msgs/msg/Image', [bag_qos_profile()])
    for i in range(SPLITS):
        w.write('/cam', image_cdr(i), 10**18 + i * 10**9)
        w.write('/mask', image_cdr(i), 10**18 + i * 10**9 + 1)
    w.close()
    return w.bag_dir


def test_a_metadata_yaml_past_the_yaml_bound_its_files_account_for_is_read(tmp_path, small_bounds):
    bag = _long_bag(tmp_path)
    assert (bag / 'metadata.yaml').stat().st_size > 2.7 * 4096
    warnings = []
    msgs = list(reader.read_messages(bag, warnings=warnings))
    # the old code refused it ('over the 0 MB a recorder writes') and read all 40 files record by record
    assert not warnings, warnings
    assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs) and len(msgs) == 2 * SPLITS
    assert reader.list_topics(bag, salvage=False) == {'/cam': ('sensor_msgs/msg/Image', SPLITS),
                                                      '/mask': ('sensor_msgs/msg/Image', SPLITS)}
    (bag / 'late.mcap').write_bytes((bag / f'{bag.name}_0.mcap').read_bytes())
    assert reader.unlisted_files(bag) == [bag / 'late.mcap']


@pytest.mark.parametrize('name', ['n' * 240, '\U0001F600' * 60, '\u00e9' * 120], ids=['long', 'emoji', 'accents'])
def test_the_writer_stays_within_the_allowance_of_its_files(tmp_path, name):
    """Without METADATA_LIMIT: the splits alone account for the metadata.yaml the writer writes, the bag's name as
    long as a split's file name may be, or of characters YAML escapes (an emoji is 10 bytes there, twice a split:
    allowed 8 bytes a character, such a name outgrew it)."""
    w = BagWriter(tmp_path / name, max_bag_duration_s=1.0, direct_io=False)
    for topic in ('/cam', '/mask'):
        w.add_topic(topic, 'sensor_msgs/msg/Image', [bag_qos_profile()])
    for i in range(100):
        w.write('/cam', image_cdr(i), 10**18 + i * 10**9)
    w.close()
    size = (w.bag_dir / 'metadata.yaml').stat().st_size
    assert 100 * 500 < size <= reader._metadata_allowance(w.bag_dir) - reader.METADATA_LIMIT


def test_past_the_yaml_bound_an_alias_or_deep_nesting_is_refused(tmp_path, small_bounds):
    bag = _long_bag(tmp_path)
    meta = bag / 'metadata.yaml'
    text = meta.read_text()
    for hostile, why in [(text.replace('  compression_format: \'\'\n', '  compression_format: &a \'\'\n')
                          .replace('  compression_mode: \'\'\n', '  compression_mode: *a\n'), 'an alias'),
                         (text.replace('  custom_data:\n', '  deep: ' + '[' * 100 + ']' * 100 + '\n  custom_data:\n'),
                          'nested over 64 levels')]:
        assert hostile != text
        meta.write_text(hostile)
        reader._parsed_metadata.cache_clear()
        warnings = []
        assert len(list(reader.read_messages(bag, warnings=warnings))) == 2 * SPLITS
        assert any(why in w and 'salvaging' in w for w in warnings), warnings


def test_files_do_not_allow_past_the_cap(tmp_path, small_bounds, monkeypatch):
    bag = _long_bag(tmp_path)
    monkeypatch.setattr(reader, 'METADATA_CAP', 8000)
    warnings = []
    assert len(list(reader.read_messages(bag, warnings=warnings))) == 2 * SPLITS
    assert any('over the 0 MB a recorder writes' in w for w in warnings), warnings
