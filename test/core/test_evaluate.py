"""Evaluation, experiment and one-shot fine-tuning tools on a tiny synthetic DAVIS-layout set."""
import json

import cv2
import numpy as np
import pytest
import torch

from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.tools.eval_report import summary_table
from vidseg_ros.tools.evaluate import run_evaluation
from vidseg_ros.training.config import load_train_config

H, W = 64, 96


def _davis(root, seqs=('a', 'b'), n=6):
    """Moving bright square on noise; mask 255 on the square (DAVIS layout)."""
    rng = np.random.default_rng(0)
    for s in seqs:
        (root / 'JPEGImages/480p' / s).mkdir(parents=True)
        (root / 'Annotations/480p' / s).mkdir(parents=True)
        for t in range(n):
            img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
            mask = np.zeros((H, W), np.uint8)
            mask[20:40, 10 + 3 * t:30 + 3 * t] = 255
            img[mask > 0] = 220
            cv2.imwrite(str(root / f'JPEGImages/480p/{s}/{t:05d}.jpg'), img)
            cv2.imwrite(str(root / f'Annotations/480p/{s}/{t:05d}.png'), mask)
    return root


def _checkpoint(path, cached_levels=2):
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, cached_levels=cached_levels)
    meta = default_meta('keyframe_fpn', model.arch_config, classes=['background', 'object'],
                        palette=[[0, 0, 0], [255, 0, 0]], ignore_index=255, input_hw=[H, W],
                        provenance={'trained': True, 'data': 'synthetic', 'licence': 'LICENCE-OF-THIS-MODEL'})
    return save_checkpoint(path, model, meta)


def test_evaluate_keyframe_model_writes_report(tmp_path):
    data = _davis(tmp_path / 'davis')
    ckpt = _checkpoint(tmp_path / 'm.pt')
    out = tmp_path / 'eval'
    report = run_evaluation(ckpt, data, split='all', out_dir=out, key_intervals=[1, 3])
    assert set(report['intervals']) == {'1', '3'}
    r1, r3 = report['intervals']['1'], report['intervals']['3']
    assert r1['key_frames'] == 12 and r3['key_frames'] == 4     # 2 sequences x 6 frames
    for r in (r1, r3):
        assert 0 <= r['mIoU'] <= 1 and 0 <= r['J&F'] <= 1 and 0 <= r['TC'] <= 1
        assert r['latency_ms'] > 0
    assert r3['current']['pixels'] > 0 and r1['current']['pixels'] == 0
    saved = json.loads((out / 'metrics.json').read_text())
    assert saved['intervals']['3']['key_frames'] == 4
    for name in ('accuracy_latency.png', 'per_class_iou.png', 'confusion.png', 'model_card.md'):
        assert (out / name).is_file(), name
    card = (out / 'model_card.md').read_text()
    assert 'LICENCE-OF-THIS-MODEL' in card and '| 3 |' in card   # the model's, not a fixed text
    assert '| 1 |' in summary_table(report)


def test_evaluate_other_classes_is_label_free(tmp_path):
    data = _davis(tmp_path / 'davis', seqs=('a',), n=3)
    model = create_model('keyframe_fpn', num_classes=11, cached_levels=0)
    ckpt = save_checkpoint(tmp_path / 'c.pt', model, default_meta('keyframe_fpn', model.arch_config,
                                                                  input_hw=[H, W]))
    report = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'e', write_card=False)
    assert not report['labelled'] and 'mIoU' not in report['intervals']['1']
    assert 0 <= report['intervals']['1']['TC'] <= 1


def test_frames_per_video_experiment_runs(tmp_path):
    from vidseg_ros.tools.experiment import run_experiment
    data = _davis(tmp_path / 'davis', n=8)
    cfg = tmp_path / 'c.yaml'
    cfg.write_text(f'name: tiny\ndataset: davis\ndata_root: {data}\ntrain_split: head\n'
                   'val_split: all\nnum_classes: 2\nignore_index: 255\ninput_hw: [64, 96]\n'
                   'batch_size: 2\narch_config: {cached_levels: 0}\nclass_balanced: true\n')
    out = run_experiment('frames-per-video', cfg, out_dir=tmp_path / 'x', total_steps=2)
    assert set(out['results']) == {'1', '20', 'all', '1+19noise'}
    assert out['results']['1+19noise']['train_samples'] == 2 * 20
    assert out['results']['1']['steps'] == 2
    assert '| all |' in out['table'] and (tmp_path / 'x' / 'frames-per-video.png').is_file()
    json.loads((tmp_path / 'x' / 'frames-per-video.json').read_text(), parse_constant=_not_json)
    with pytest.raises(ValueError, match='unknown experiment'):
        run_experiment('nope', cfg)
    # the same --out-dir again: its runs are kept, and the message says what to do (not --resume)
    before = (tmp_path / 'x' / 'tiny_1' / 'last.pt').read_bytes()
    with pytest.raises(ValueError, match='already holds this experiment.s run tiny_1; give another --out-dir'):
        run_experiment('frames-per-video', cfg, out_dir=tmp_path / 'x', total_steps=2)
    assert (tmp_path / 'x' / 'tiny_1' / 'last.pt').read_bytes() == before


def test_frames_per_video_builds_each_training_set_once(tmp_path, monkeypatch):
    """Each variant's set was built three times (to size its epochs, to train, to count its samples), and a
    module-level cache of the noise sigma hid the repeated measuring; a set built later after the frames
    changed got the old sigma from it."""
    from vidseg_ros.tools.experiment import run_experiment
    from vidseg_ros.training import data_setup
    builds, measured = [], []
    build, measure = data_setup.train_dataset, data_setup.measure_noise_sigma
    monkeypatch.setattr(data_setup, 'train_dataset', lambda cfg: builds.append(cfg.name) or build(cfg))
    monkeypatch.setattr(data_setup, 'measure_noise_sigma', lambda src: measured.append(src.name) or measure(src))
    data = _davis(tmp_path / 'davis', n=8)
    cfg = tmp_path / 'c.yaml'
    cfg.write_text(f'name: tiny\ndataset: davis\ndata_root: {data}\ntrain_split: head\nval_split: all\n'
                   'num_classes: 2\nignore_index: 255\ninput_hw: [64, 96]\nbatch_size: 2\n'
                   'arch_config: {cached_levels: 0}\n')
    out = run_experiment('frames-per-video', cfg, out_dir=tmp_path / 'x', total_steps=1, variants=['1', '1+19noise'])
    assert out['results']['1+19noise']['train_samples'] == 2 * 20 and out['results']['1']['train_samples'] == 2
    assert builds == ['tiny_1', 'tiny_1+19noise'] and measured == ['davis']
    # the same frames measured again after they changed: the new sigma, not a remembered one
    base = load_train_config(cfg, {'frames_per_video': 1, 'noise_copies': 1})
    before = data_setup.train_dataset(base).sigma
    for path in sorted((data / 'JPEGImages/480p').rglob('*.jpg'))[::2]:
        cv2.imwrite(str(path), np.full((H, W, 3), 128, np.uint8))
    assert data_setup.train_dataset(base).sigma != pytest.approx(before)


def _not_json(name):
    raise AssertionError(f'{name} is not JSON')


def test_frames_per_video_refuses_a_variant_that_cannot_take_a_step(tmp_path):
    """One sequence at batch 2: the 1-frame variant has 1 sample, fewer than a batch. It trained 0 steps
    (loss NaN) while the table said 'steps 2' and scored the untrained model."""
    from vidseg_ros.config import ConfigError
    from vidseg_ros.tools.experiment import run_experiment
    data = _davis(tmp_path / 'davis', seqs=('a',), n=8)
    cfg = tmp_path / 'c.yaml'
    cfg.write_text(f'name: tiny\ndataset: davis\ndata_root: {data}\ntrain_split: head\nval_split: all\n'
                   'num_classes: 2\nignore_index: 255\ninput_hw: [64, 96]\nbatch_size: 2\n'
                   'arch_config: {cached_levels: 0}\n')
    with pytest.raises(ConfigError, match=r"^frames-per-video variant '1': 1 training samples .* fewer than one "
                                          r'batch \(batch_size 2\): no step would be taken; lower batch_size to 1'):
        run_experiment('frames-per-video', cfg, out_dir=tmp_path / 'x', total_steps=2)
    assert not (tmp_path / 'x').exists()      # refused before any variant trained
    with pytest.raises(ConfigError, match=r"unknown frames-per-video variant\(s\) 'al'; known: "):
        run_experiment('frames-per-video', cfg, out_dir=tmp_path / 'x', total_steps=2, variants=['al'])


def test_one_shot_finetune_labels_sequence(tmp_path):
    from vidseg_ros.tools.finetune import one_shot
    data = _davis(tmp_path / 'davis', seqs=('a',), n=4)
    model = create_model('keyframe_fpn', num_classes=11, cached_levels=0)
    ckpt = save_checkpoint(tmp_path / 'c.pt', model, default_meta('keyframe_fpn', model.arch_config,
                                                                  input_hw=[H, W]))
    seq = data / 'JPEGImages/480p/a'
    out = one_shot(ckpt, seq / '00000.jpg', data / 'Annotations/480p/a/00000.png', seq,
                   tmp_path / 'ft', steps=15, lr=1e-3, labels_dir=data / 'Annotations/480p/a')
    assert out['frames'] == 4 and len(list((tmp_path / 'ft').glob('*.png'))) == 4
    assert out['loss_last'] < out['loss_first']
    assert 0 <= out['J&F'] <= 1


def test_recurrent_clip_protocol_resets_state(tmp_path, monkeypatch):
    """clip_len=2 resets the engine's temporal state before frames 2 and 4 of a 5-frame sequence; 0 never."""
    from vidseg_ros.engine.stream import StreamSegmenter
    data = _davis(tmp_path / 'davis', seqs=('a',), n=5)
    model = create_model('recurrent_unet', num_classes=2, size='small_shallow', temporal_cell='cgru')
    meta = default_meta('recurrent_unet', model.arch_config, classes=['background', 'object'],
                        palette=[[0, 0, 0], [255, 0, 0]], ignore_index=255, input_hw=[H, W])
    ckpt = save_checkpoint(tmp_path / 'r.pt', model, meta)
    calls = []
    reset, step = StreamSegmenter.reset, StreamSegmenter.step
    monkeypatch.setattr(StreamSegmenter, 'reset', lambda self, reason='reset': (calls.append(reason),
                                                                                 reset(self, reason))[1])
    monkeypatch.setattr(StreamSegmenter, 'step', lambda self, *a, **k: (calls.append('frame'),
                                                                        step(self, *a, **k))[1])
    stream = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 's', write_card=False)
    assert [c for c in calls if c != 'frame'].count('clip') == 0 and calls.count('frame') == 5
    calls.clear()
    clips = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'c', write_card=False, clip_len=2)
    assert calls[calls.index('new sequence'):] == ['new sequence', 'frame', 'frame', 'clip', 'frame', 'frame',
                                                   'clip', 'frame']
    assert stream['kind'] == 'recurrent' and clips['clip_len'] == 2 and stream['clip_len'] == 0
    assert set(clips['intervals']) == {'1'} and clips['intervals']['1']['frames'] == 5
    assert 0 <= clips['intervals']['1']['J&F'] <= 1


def test_cli_eval_keeps_the_tracked_card_and_earlier_runs(tmp_path):
    """A card beside a model in models/ is hand-written: eval never replaces it unless --card names it."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    data = _davis(tmp_path / 'davis', seqs=('a',), n=3)
    (tmp_path / 'models').mkdir()
    ckpt = _checkpoint(tmp_path / 'models' / 'm.pt', cached_levels=0)
    tracked = tmp_path / 'models' / 'm.md'
    tracked.write_text('# m\nhand-written history\n')
    argv = ['eval', str(ckpt), str(data), '--split', 'all', '--out-dir', str(tmp_path / 'runs')]
    first, second = (CliRunner().invoke(app, argv) for _ in range(2))
    assert first.exit_code == 0 and second.exit_code == 0, first.output + first.stderr
    assert tracked.read_text() == '# m\nhand-written history\n'
    runs = sorted(p.name for p in (tmp_path / 'runs').iterdir())
    assert runs == ['m-all-1', 'm-all-2']
    assert all((tmp_path / 'runs' / r / 'metrics.json').is_file() for r in runs)
    r = CliRunner().invoke(app, argv + ['--card', str(tracked)])
    assert r.exit_code == 0
    assert tracked.read_text() == (tmp_path / 'runs' / 'm-all-3' / 'model_card.md').read_text()


def test_eval_prints_json_alone_on_stdout_and_its_table_on_stderr(tmp_path):
    """The table came first on stdout: `vidseg eval ... | jq` read it as broken JSON."""
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    data = _davis(tmp_path / 'davis', seqs=('a',), n=3)
    ckpt = _checkpoint(tmp_path / 'm.pt', cached_levels=0)
    r = CliRunner().invoke(app, ['eval', str(ckpt), str(data), '--split', 'all', '--key-intervals', '1',
                                 '--out-dir', str(tmp_path / 'runs')])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)['intervals']['1']['TC'] is not None
    assert '| interval | mIoU all |' in r.stderr


def test_a_refused_eval_leaves_no_empty_run_folder(tmp_path):
    from typer.testing import CliRunner

    from vidseg_ros.cli import app
    data = _davis(tmp_path / 'davis', seqs=('a',), n=3)
    ckpt = _checkpoint(tmp_path / 'm.pt', cached_levels=0)
    r = CliRunner().invoke(app, ['eval', str(ckpt), str(data), '--split', 'no_such_seq',
                                 '--out-dir', str(tmp_path / 'runs')])
    assert r.exit_code == 2, r.output
    assert list((tmp_path / 'runs').iterdir()) == []


def test_eval_sources_extracted_datasets_and_refuses_empty_selections(tmp_path):
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    from vidseg_ros.tools.evaluate import open_eval_source
    ds = tmp_path / 'ds'
    recs = []
    for seq in ('a', 'b'):
        (ds / 'images' / seq).mkdir(parents=True)
        for i in range(2):
            img, lab = ds / 'images' / seq / f'{i}.png', ds / 'labels' / seq / f'{i}.png'
            cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
            lab.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(lab), np.zeros((8, 8), np.uint8))
            recs.append(FrameRecord(seq, i, img, lab if seq == 'a' else None, i, 'human' if seq == 'a' else 'none'))
    write_index(ds, recs)
    write_meta(ds, {'classes': ['bg', 'obj'], 'ignore_index': 255})
    assert len(open_eval_source(ds, split='all').records) == 4
    assert {r.sequence for r in open_eval_source(ds, split='a').records} == {'a'}
    with pytest.raises(ValueError, match='no labelled frames'):
        open_eval_source(ds, split='b')
    with pytest.raises(ValueError, match='no sequence'):
        open_eval_source(ds, split='c')
    (tmp_path / 'cv' / 'test').mkdir(parents=True)
    (tmp_path / 'cv' / 'testannot').mkdir()
    with pytest.raises(FileNotFoundError, match='splits here: test'):
        open_eval_source(tmp_path / 'cv', split='val')


def _extracted(root, stamps_s, seq='a', index=None, sizes=None):
    """An extracted dataset (index.csv with stamps) of a moving square, 2 classes; ``index``: the frame
    numbers (default 0, 1, ...), ``sizes``: each frame's (H, W) (default (H, W))."""
    from vidseg_ros.data.datasets.layouts import FrameRecord, write_index, write_meta
    recs = []
    (root / 'images' / seq).mkdir(parents=True)
    (root / 'labels' / seq).mkdir(parents=True)
    for i, t in enumerate(stamps_s):
        img, lab = root / 'images' / seq / f'{i}.png', root / 'labels' / seq / f'{i}.png'
        mask = np.zeros(sizes[i] if sizes else (H, W), np.uint8)
        mask[20:40, 10 + 3 * i:30 + 3 * i] = 1
        cv2.imwrite(str(img), np.where(mask[..., None] > 0, 220, 30).astype(np.uint8).repeat(3, 2))
        cv2.imwrite(str(lab), mask)
        recs.append(FrameRecord(seq, index[i] if index else i, img, lab, int(round(t * 1e9)), 'human'))
    write_index(root, recs)
    write_meta(root, {'classes': ['background', 'object'], 'ignore_index': 255})
    return root


def test_eval_resets_state_at_a_time_gap_as_the_node_does(tmp_path):
    """10 Hz frames with a 4.7 s hole after frame 3: the node (max_gap_s 0.5) resets there, so at key
    interval 3 the key frames are 0, 3, 4 (gap) and 7, not 0, 3, 6 as a stamp-free stream gives."""
    data = _extracted(tmp_path / 'ds', [0.0, 0.1, 0.2, 0.3, 5.0, 5.1, 5.2, 5.3])
    ckpt = _checkpoint(tmp_path / 'm.pt')
    report = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'e', key_intervals=[3],
                            write_card=False)
    r3 = report['intervals']['3']
    assert r3['resets'] == {'gap': 1}
    assert r3['key_frames'] == 4
    t = report['timing']
    assert t['video'] and t['gaps'] == 1 and t['rate_hz'] == pytest.approx(10.0)
    wide = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'w', key_intervals=[3],
                          write_card=False, max_gap_s=10.0)
    assert wide['intervals']['3']['resets'] == {} and wide['intervals']['3']['key_frames'] == 3


def test_eval_of_a_split_that_is_not_video_reports_interval_1_without_tc(tmp_path, caplog):
    data = _extracted(tmp_path / 'ds', [0.0, 1.0, 2.0, 3.0])        # 1 Hz, like CamVid train
    ckpt = _checkpoint(tmp_path / 'm.pt')
    with caplog.at_level('WARNING'):
        report = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'e', key_intervals=[1, 3])
    assert set(report['intervals']) == {'1'} and not report['timing']['video']
    r1 = report['intervals']['1']
    assert 'TC' not in r1 and 'mVC8' not in r1 and 0 <= r1['mIoU'] <= 1
    assert r1['resets'] == {'gap': 3} and r1['key_frames'] == 4
    assert 'not real video' in caplog.text
    assert 'not real video' in (tmp_path / 'e' / 'model_card.md').read_text()


def _camvid_names(root, split, names):
    (root / split).mkdir(parents=True)
    (root / f'{split}annot').mkdir()
    for n in names:
        cv2.imwrite(str(root / split / f'{n}.png'), np.zeros((8, 8, 3), np.uint8))
        cv2.imwrite(str(root / f'{split}annot' / f'{n}.png'), np.zeros((8, 8), np.uint8))


def test_camvid_timing_val_is_a_15hz_run_train_is_1hz(tmp_path):
    from vidseg_ros.data.datasets.public_layouts import camvid_source
    from vidseg_ros.tools.evaluate import sequence_timing
    _camvid_names(tmp_path, 'val', [f'0016E5_{n:05d}' for n in range(7959, 7970, 2)])
    _camvid_names(tmp_path, 'train', [f'0016E5_{n:05d}' for n in range(390, 600, 30)] +
                  [f'Seq05VD_f{n:05d}' for n in range(0, 120, 30)])
    val = sequence_timing(camvid_source(tmp_path, 'val').sequences(), 0.5)
    assert val['video'] and val['rate_hz'] == pytest.approx(15.0) and val['source_frames_per_frame'] == 2
    assert val['gaps'] == 0 and 'spans 2k source frames' in val['note']
    train = sequence_timing(camvid_source(tmp_path, 'train').sequences(), 0.5)
    assert not train['video'] and train['rate_hz'] == pytest.approx(1.0) and train['gaps'] == 6 + 3


def test_real_camvid_val_is_one_15hz_run(camvid_dir):
    from vidseg_ros.data.datasets.public_layouts import camvid_source
    from vidseg_ros.tools.evaluate import sequence_timing
    val = sequence_timing(camvid_source(camvid_dir, 'val').sequences(), 0.5)
    assert val['video'] and val['rate_hz'] == pytest.approx(15.0) and val['gaps'] == 0
    assert not sequence_timing(camvid_source(camvid_dir, 'train').sequences(), 0.5)['video']


def test_eval_source_takes_camvid_drives_like_the_selection_split(tmp_path):
    from vidseg_ros.tools.evaluate import open_eval_source
    _camvid_names(tmp_path, 'train', [f'{s}_{n:05d}' for s in ('0001TP', '0006R0') for n in (30, 60)])
    assert {r.sequence for r in open_eval_source(tmp_path, 'camvid', 'train:0006R0').records} == {'0006R0'}
    assert len(open_eval_source(tmp_path, 'camvid', 'train').records) == 4
    with pytest.raises(ValueError, match='no sequence.*Seq05VD'):
        open_eval_source(tmp_path, 'camvid', 'train:Seq05VD')


def test_sequences_without_frame_times_are_not_video(tmp_path):
    from vidseg_ros.data.datasets.layouts import FrameRecord
    from vidseg_ros.tools.evaluate import sequence_timing
    recs = [FrameRecord('a', i, tmp_path / f'{i}.png', stamp_ns=0) for i in range(3)]
    t = sequence_timing({'a': recs}, 0.5)
    assert not t['video'] and 'frame times unknown' in t['note']
    assert not sequence_timing({'a': recs[:1]}, 0.5)['video']          # one frame is no video either


def test_plots_show_what_was_measured_and_nothing_else(tmp_path, monkeypatch):
    """A k=1 (or recurrent) run has no current frames: no empty 'current frames' series in the legend; a
    class with no score (absent from labels and predictions) is marked n/a, not drawn as an IoU of 0."""
    from vidseg_ros.tools import eval_report
    figs = {}
    monkeypatch.setattr(eval_report, '_save', lambda fig, path: figs.setdefault(path.name, fig) and path)
    scores = {'mIoU': 0.5, 'per_class_iou': {'road': 0.9, 'car': 0.1, 'boat': None}}
    report = {'model': 'm.pt', 'labelled': True, 'classes': ['road', 'car', 'boat'],
              'intervals': {'1': {'latency_ms': 10.0, 'all': scores, 'current': {'mIoU': float('nan')},
                                  'confusion': [[5, 1, 0], [1, 3, 0], [0, 0, 0]]}}}
    eval_report.write_plots(report, tmp_path)
    assert figs['accuracy_latency.png'].axes[0].get_legend_handles_labels()[1] == ['all frames']
    texts = [t.get_text() for t in figs['per_class_iou.png'].axes[0].texts]
    assert texts == ['n/a']


def test_eval_reads_a_checkpoint_file_once(tmp_path, monkeypatch):
    data = _davis(tmp_path / 'davis', seqs=('a',), n=3)
    ckpt = _checkpoint(tmp_path / 'm.pt')
    reads, load = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda f, *a, **k: reads.append(str(f)) or load(f, *a, **k))
    run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'eval', write_card=False)
    assert reads == [str(ckpt)]


def test_runs_of_consecutive_frames_break_at_resets_missing_frames_and_size_changes(tmp_path):
    """The runs TC and mVC are scored within, as the streamed evaluation finds them (each frame's break_reason in
    stream_sequence, EvalSession.temporal_runs and timing['breaks'])."""
    from vidseg_ros.tools.evaluate import EvalSession, _runs_of
    # CamVid val style: every 2nd source frame at 15 Hz is the usual step, not a missing frame
    index = [0, 2, 4, 6, 10, 12, 14, 16, 18, 20, 22]
    stamps = [i / 30 for i in index]
    stamps[7:] = [s + 5 for s in stamps[7:]]         # a 5 s hole before index 16
    stamps[9] = stamps[8] - 0.1                      # a stamp going backwards at index 20
    sizes = [(64, 96)] * 10 + [(48, 72)]             # the last frame is smaller
    data, ckpt = _extracted(tmp_path / 'ds', stamps, index=index, sizes=sizes), _checkpoint(tmp_path / 'm.pt')
    ev = EvalSession(ckpt, data, split='all', max_gap_s=0.5)
    ev.score(keyframe_interval=1)
    assert ev.temporal_runs == [[(0, 4), (4, 7), (7, 9), (9, 10), (10, 11)]]
    assert ev.timing['breaks'] == {'missing': 1, 'gap': 1, 'backwards': 1, 'resize': 1}
    ev = EvalSession(ckpt, data, split='all', max_gap_s=0.0)   # max_gap_s 0: the node keeps its state across gaps
    ev.score(keyframe_interval=1)
    assert ev.temporal_runs == [[(0, 4), (4, 9), (9, 10), (10, 11)]]
    assert ev.timing['breaks'] == {'missing': 1, 'backwards': 1, 'resize': 1}
    one = EvalSession(ckpt, _extracted(tmp_path / 'one', [0.0]), split='all', max_gap_s=0.5)
    one.score(keyframe_interval=1)
    assert one.temporal_runs == [[(0, 1)]] and one.timing['breaks'] == {}
    assert _runs_of([]) == []        # a sequence of no frames


def _pair_tc(ev, t):
    """TC of frames (t-1, t) of the first sequence, from the frames themselves (no flows reused)."""
    from vidseg_ros.data.images import read_rgb
    from vidseg_ros.training.metrics import temporal_consistency
    recs = next(iter(ev.seqs.values()))
    preds = ev.runs[0]['pred']
    return temporal_consistency(preds[t - 1:t + 1], [read_rgb(r.image) for r in recs[t - 1:t + 1]], 2)


def test_eval_scores_tc_and_mvc_only_within_runs_of_consecutive_frames(tmp_path):
    """12 frames at 10 Hz, 5 s hole after frame 3: the node resets there, and the pair (3, 4) and every
    window over it are not scored (they were: TC and mVC8 came out as without the hole)."""
    from vidseg_ros.training.metrics import video_consistency
    from vidseg_ros.tools.evaluate import EvalSession
    stamps = [0.1 * i for i in range(12)]
    ckpt = _checkpoint(tmp_path / 'm.pt')
    whole = EvalSession(ckpt, _extracted(tmp_path / 'whole', stamps), split='all')
    rw = whole.score(keyframe_interval=1)
    assert rw['TC_pairs'] == 11 and rw['mVC8_windows'] == 5 and 'mVC16' not in rw and rw['mVC16_windows'] == 0
    pairs = [_pair_tc(whole, t) for t in range(1, 12)]
    assert rw['TC'] == pytest.approx(np.mean(pairs))
    gap = EvalSession(ckpt, _extracted(tmp_path / 'gap', stamps[:4] + [s + 5 for s in stamps[4:]]), split='all')
    rg = gap.score(keyframe_interval=1)
    assert rg['resets'] == {'gap': 1} and gap.timing['breaks'] == {'gap': 1}
    assert rg['TC_pairs'] == 10 and rg['TC'] == pytest.approx(np.mean(pairs[:3] + pairs[4:]))
    assert rg['mVC8_windows'] == 1
    run = gap.runs[0]
    assert rg['mVC8'] == pytest.approx(video_consistency(run['pred'][4:], run['gt'][4:], 8, 255))
    assert gap.timing['note'].endswith('; TC / mVC within runs of consecutive frames (1 break: 1 time gap): '
                                       'TC over 10 frame pair(s), mVC8 / mVC16 over 1 / 0 window(s)')
    assert whole.timing['note'].endswith('reset the state as in the node; TC over 11 frame pair(s), '
                                         'mVC8 / mVC16 over 5 / 0 window(s)')
    # frames missing from the index (0.4 s apart: no reset) break the runs too
    idx = EvalSession(ckpt, _extracted(tmp_path / 'idx', [0.0, 0.1, 0.2, 0.6, 0.7, 0.8], index=[0, 1, 2, 6, 7, 8]),
                      split='all')
    ri = idx.score(keyframe_interval=1)
    assert ri['resets'] == {} and idx.timing['breaks'] == {'missing': 1} and ri['TC_pairs'] == 4
    assert ri['TC'] == pytest.approx(np.mean([_pair_tc(idx, t) for t in (1, 2, 4, 5)]))


def test_eval_of_frames_changing_size_mid_sequence(tmp_path):
    """4 frames at 64x96 then 4 at 80x120: the flow between the two sizes raised an OpenCV assertion
    (internal error); a size change is a break for TC / mVC, and the engine resets as the node does."""
    data = _extracted(tmp_path / 'ds', [0.1 * i for i in range(8)], sizes=[(H, W)] * 4 + [(80, 120)] * 4)
    report = run_evaluation(_checkpoint(tmp_path / 'm.pt'), data, split='all', out_dir=tmp_path / 'e',
                            key_intervals=[1, 3])
    for r in report['intervals'].values():
        assert r['resets'] == {'resize': 1} and r['TC_pairs'] == 6 and 0 <= r['TC'] <= 1 and 0 <= r['mIoU'] <= 1
        assert r['mVC8_windows'] == 0 and 'mVC8' not in r
    assert report['intervals']['3']['key_frames'] == 4       # 0, 3, 4 (resize), 7
    assert report['timing']['breaks'] == {'resize': 1}
    assert '(1 break: 1 size change)' in (tmp_path / 'e' / 'model_card.md').read_text()


def test_eval_with_no_two_consecutive_frames_reports_no_tc(tmp_path, caplog):
    data = _extracted(tmp_path / 'ds', [0.0, 0.1, 0.2], sizes=[(H, W), (80, 120), (H, W)])
    with caplog.at_level('INFO'):
        report = run_evaluation(_checkpoint(tmp_path / 'm.pt'), data, split='all', out_dir=tmp_path / 'e')
    r1 = report['intervals']['1']
    assert report['timing']['video'] and r1['TC_pairs'] == 0 and r1['mVC8_windows'] == 0
    assert not {'TC', 'mVC8', 'mVC16'} & set(r1) and 0 <= r1['mIoU'] <= 1
    note = 'no TC / mVC: no two consecutive frames (2 breaks: 2 size changes)'
    assert note in report['timing']['note'] and note in caplog.text
    assert '| 1 |' in summary_table(report)


def test_labels_imported_without_class_names_are_scored_as_class_ids(tmp_path, caplog):
    # label-import without --class-names (and every first-release import) leaves dataset.yaml with no class
    # names: training numbers the classes and reports mIoU, but eval compared ['0', '1'] with [] and reported
    # no mIoU at all, exit 0
    from vidseg_ros.data.datasets.layouts import write_meta
    data = _extracted(tmp_path / 'data', [i / 15 for i in range(4)])
    write_meta(data, {'classes': [], 'ignore_index': 255})
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', num_classes=2, cached_levels=0)
    ckpt = save_checkpoint(tmp_path / 'm.pt', model, default_meta('keyframe_fpn', model.arch_config,
                                                                  classes=['0', '1'], input_hw=[H, W]))
    report = run_evaluation(ckpt, data, split='all', out_dir=tmp_path / 'e', write_card=False)
    assert report['labelled'] and 0 <= report['intervals']['1']['mIoU'] <= 1
    assert "scored as the model's class ids (0 0, 1 1)" in caplog.text


def _overflowing(path):
    """BatchNorm biases of 3e38: finite, so the file loads, but the next layer's sums overflow on any frame."""
    from vidseg_ros.models.checkpoint import load_checkpoint
    model, meta = load_checkpoint(_checkpoint(path.with_name('ok.pt')))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(3e38)
    return save_checkpoint(path, model, meta)


def test_eval_of_a_model_whose_output_overflows_is_one_line_and_exit_2(tmp_path):
    """It scored the constant class-0 mask the NaN logits gave (TC 1.0), exit 0."""
    import subprocess
    import sys
    data, ckpt = _davis(tmp_path / 'davis', seqs=('a',), n=3), _overflowing(tmp_path / 'huge.pt')
    proc = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'eval', str(ckpt), str(data), '--split', 'all',
                           '--key-intervals', '1', '--out-dir', str(tmp_path / 'ev')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    # the one line names the frame (the first of the sequence: every frame overflows) and what went wrong
    first = data / 'JPEGImages' / '480p' / 'a' / '00000.jpg'
    assert last.startswith(f'vidseg eval: error: frame {first}: the model output holds NaN or inf'), last
    assert 'Traceback' not in proc.stderr


def test_eval_names_the_frame_the_model_gives_nan_on(tmp_path, monkeypatch):
    """The engine's NonFiniteOutput knows no file: eval stopped with 'the model output holds NaN or inf on this
    frame' and the user had to guess which of the split's frames. The error now names the frame file."""
    from vidseg_ros.engine.base import NonFiniteOutput
    from vidseg_ros.engine.stream import StreamSegmenter
    data = _davis(tmp_path / 'davis', seqs=('a', 'b'), n=4)
    step, calls = StreamSegmenter.step, []

    def nan_on_the_7th(self, *a, **k):     # frame 2 of sequence b
        calls.append(1)
        if len(calls) == 7:
            raise NonFiniteOutput('the model output holds NaN or inf on this frame')
        return step(self, *a, **k)
    monkeypatch.setattr(StreamSegmenter, 'step', nan_on_the_7th)
    with pytest.raises(NonFiniteOutput) as err:
        run_evaluation(_checkpoint(tmp_path / 'm.pt'), data, split='all', out_dir=tmp_path / 'e', write_card=False,
                       key_intervals=[1])
    bad = data / 'JPEGImages' / '480p' / 'b' / '00002.jpg'
    assert str(err.value) == f'frame {bad}: the model output holds NaN or inf on this frame'
