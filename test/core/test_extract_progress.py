"""`vidseg extract` at a terminal: a warning logged while its progress bar is drawn starts a line of its own. It was
written after the bar's text, on its line ('extract:  78%|...| 311/400 [...]WARNING vidseg_ros...'), as train's
were (test_train_progress)."""
import numpy as np
import pytest
from support.terminal import screen, vidseg_at_a_terminal

from vidseg_ros.data.bags.from_frames import write_bag
from vidseg_ros.data.recorder.core import Recorder

pytest.importorskip('tqdm')


def test_a_warning_during_extract_starts_a_line_above_the_bar(tmp_path):
    rng = np.random.default_rng(0)
    # long enough for the bar to show (it waits half a second), then a bag that recorded nothing: one warning
    write_bag(tmp_path / 'drive', [[rng.integers(0, 255, (120, 160, 3), np.uint8) for _ in range(300)]])
    recorder = Recorder(tmp_path / 'empty')
    recorder.add_topic('/image', 'sensor_msgs/msg/Image')
    recorder.stop()
    status, raw = vidseg_at_a_terminal('extract', tmp_path / 'drive', tmp_path / 'empty', '--out', tmp_path / 'ds')
    assert status == 0, raw
    assert '\rextract: ' in raw                                     # the bar was drawn
    shown = screen(raw)
    assert any(line.startswith('WARNING ') and 'no image messages' in line for line in shown), shown
    assert all(line.startswith('WARNING ') or (line.startswith('extract: ') and 'WARNING' not in line)
               for line in shown), shown
