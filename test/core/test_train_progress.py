"""`vidseg train` at a terminal draws a progress bar on stderr: log lines and the one-line error of a run that stops
must each start a line of their own. They were written after the bar's text, on its line ('epoch 1/2: 0step
[00:00, ?step/s]vidseg train: error: the loss became nan ...')."""
import pytest

from support.eval_data import tiny_train_config
from support.terminal import screen, vidseg_at_a_terminal

pytest.importorskip('tqdm')


@pytest.mark.parametrize('args,last', [((), 'INFO vidseg_ros.training.loop: wrote'),
                                        (('--set', 'lr=1e30'), 'vidseg train: error: the loss became nan')])
def test_log_lines_and_the_error_start_a_line_under_the_progress_bar(tmp_path, args, last):
    status, raw = vidseg_at_a_terminal('train', tiny_train_config(tmp_path, 2), *args)
    assert 'epoch 1/2: ' in raw                                       # the bar was drawn
    shown = screen(raw)
    assert status == (2 if args else 0), shown
    assert all(line.startswith(('INFO ', 'vidseg train: error: ')) for line in shown), shown
    assert shown[-1].startswith(last)
