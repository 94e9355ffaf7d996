"""The evaluation report's plots and model card: nothing on stderr that the user cannot act on."""
import logging
import warnings

from vidseg_ros.tools import eval_report

SCORES = {'mIoU': 0.5, 'mAcc': 0.6, 'pixel_acc': 0.7, 'per_class_iou': {'道路': 0.9, 'car': 0.1}}


def _report(model='模型😀.pt'):
    return {'model': model, 'labelled': True, 'classes': ['道路', 'car'], 'device': 'cpu', 'data': 'd',
            'split': 'val', 'sequences': 1,
            'intervals': {'1': {'latency_ms': 10.0, 'latency_key_ms': 10.0, 'latency_current_ms': float('nan'),
                                'all': SCORES, 'key': SCORES, 'current': {'mIoU': float('nan')},
                                'confusion': [[5, 1], [1, 3]]}}}


def test_names_the_font_lacks_draw_without_warnings(tmp_path):
    """A model or class named in CJK or with an emoji: matplotlib warned 'Glyph ... missing from font(s)'
    once per character and plot on every eval."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        paths = eval_report.write_plots(_report(), tmp_path)
    assert [p.name for p in paths] == ['accuracy_latency.png', 'per_class_iou.png', 'confusion.png']
    assert [str(w.message) for w in seen] == []


def test_other_plot_warnings_still_show(tmp_path, monkeypatch):
    def warns(report, out_dir, plt):
        warnings.warn('something else', UserWarning)
        return []
    monkeypatch.setattr(eval_report, '_write_plots', warns)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        eval_report.write_plots(_report(), tmp_path)
    assert [str(w.message) for w in seen] == ['something else']


def test_without_matplotlib_the_plots_are_skipped_with_one_warning(tmp_path, monkeypatch, caplog):
    """eval scored everything, wrote metrics.json, then failed on the plots (no card either)."""
    import sys
    monkeypatch.setitem(sys.modules, 'matplotlib', None)      # `import matplotlib` fails as if not installed
    with caplog.at_level(logging.INFO):
        paths = eval_report.write_plots(_report(), tmp_path)
    assert paths == [] and list(tmp_path.iterdir()) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith('plots skipped: they need the matplotlib package '
                                                   '(pip install matplotlib)'), lines
    assert caplog.records[0].levelno == logging.WARNING


def test_a_checkpoints_old_setting_names_are_read_silently(caplog):
    """The shipped camvid checkpoints store key_distance(_mode): each eval logged 'setting key_distance is
    deprecated', which only a new training run could change."""
    meta = {'train_config': {'key_distance': 4, 'key_distance_mode': 'random', 'epochs': 3}, 'classes': ['a']}
    with caplog.at_level(logging.INFO):
        card = eval_report.card_text(_report('m.pt'), meta)
    assert 'max_distance: 4' in card and 'epochs: 3' in card     # the old name is still read
    assert not [r for r in caplog.records if 'deprecated' in r.getMessage()], caplog.text


def test_card_copy_replaces_the_tracked_card_whole(tmp_path):
    tracked = tmp_path / 'models' / 'm.md'
    tracked.parent.mkdir()
    tracked.write_text('# m\nhand-written history\n')
    card, copy = eval_report.write_card_file(_report('m.pt'), {}, tmp_path, also=tracked)
    assert copy == tracked and tracked.read_text() == card.read_text() != ''
    assert sorted(p.name for p in tracked.parent.iterdir()) == ['m.md']


def test_a_failed_card_copy_keeps_the_tracked_card(tmp_path, monkeypatch):
    """--card over a tracked card on a full disk: the copy (shutil.copyfile) truncated it first, then failed."""
    import errno
    import os

    import pytest
    tracked = tmp_path / 'models' / 'm.md'
    tracked.parent.mkdir()
    tracked.write_text('# m\nhand-written history\n')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'sendfile', full)     # how shutil.copyfile writes on Linux
    monkeypatch.setattr(os, 'fsync', full)        # how an atomic write syncs before its rename
    with pytest.raises(OSError) as e:
        eval_report.write_card_file(_report('m.pt'), {}, tmp_path, also=tracked)
    assert e.value.errno == errno.ENOSPC and str(tracked) in str(e.value)
    assert tracked.read_text() == '# m\nhand-written history\n'
    assert sorted(p.name for p in tracked.parent.iterdir()) == ['m.md']     # no temporary file left


def test_the_card_keeps_no_terminal_escapes_from_the_checkpoint():
    """A downloaded checkpoint's licence and provenance went into model_card.md raw: `cat` of the card set
    the terminal's title, cleared the screen or coloured it."""
    meta = {'classes': ['a'], 'provenance': {'licence': 'MIT\x1b]0;owned\x07\nline 2\x1b[2J\r',
                                             'data': 'd\x1b[31m', 'init_from': 'x\x00.pt'},
            'train_config': {'optimizer': 'adamw\x1b[31m'}}
    card = eval_report.card_text(_report('m.pt'), meta)
    assert not [c for c in card if c != '\n' and (ord(c) < 32 or 127 <= ord(c) < 160)], repr(card)
    assert 'MIT\\x1b]0;owned\\x07\nline 2\\x1b[2J\\r' in card        # shown, and the licence keeps its lines
    assert '**Training data**: d\\x1b[31m' in card and 'x\\x00.pt' in card


def test_the_experiment_plot_skips_without_matplotlib_and_draws_nan_scores_as_zero(tmp_path, monkeypatch, caplog):
    """`vidseg experiment` trained and scored every variant, then failed on its plot where matplotlib is missing
    (eval's plots skip); a NaN score (J&F of a split without objects) went into the bars as NaN."""
    import sys

    from vidseg_ros.tools import experiment
    results = {'1': {'mIoU': 0.5, 'J&F': float('nan'), 'TC': None}, 'all': {'mIoU': 0.6, 'J&F': 0.4, 'TC': 0.7}}
    experiment._plot(results, tmp_path / 'ok.png')
    assert (tmp_path / 'ok.png').stat().st_size > 1000
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    with caplog.at_level(logging.WARNING):
        experiment._plot(results, tmp_path / 'none.png')
    assert not (tmp_path / 'none.png').exists()
    assert [r.getMessage()[:40] for r in caplog.records] == ['plots skipped: they need the matplotlib ']
