"""What `vidseg export` leaves on disk where its writes cannot all be made, and what `vidseg info` says of a pair
whose partner is the wrong graph: an earlier export is kept whole, and the one line names the user's file."""
import json
import os
import resource
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from support.paths import ROOT
from vidseg_ros.cli import app
from vidseg_ros.models import create_model
from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
from vidseg_ros.tools.export import export_onnx

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')


def _checkpoint(folder, arch, **kw):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=2, **kw)
    path = folder / f'{arch}.pt'
    save_checkpoint(path, model, default_meta(arch, model.arch_config, classes=['bg', 'robot'],
                                              palette=[[0, 0, 0], [255, 0, 0]], ignore_index=None, input_hw=[64, 64]))
    return path


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Tiny key-frame and recurrent checkpoints and the key-frame pair exported from the first: name -> path/bytes."""
    folder = tmp_path_factory.mktemp('writes')
    keyframe = _checkpoint(folder, 'keyframe_fpn', width_mult=0.25, fpn_ch=16)
    export_onnx(keyframe, folder / 'k.onnx')
    return {'keyframe': keyframe, 'recurrent': _checkpoint(folder, 'recurrent_unet', size='small_shallow'),
            'key': (folder / 'k.onnx').read_bytes(), 'current': (folder / 'k.current.onnx').read_bytes()}


def test_a_key_frame_pair_whose_current_graph_cannot_be_placed_is_refused_before_anything_is_written(models, tmp_path):
    """A folder named m.current.onnx: the key-frame graph was moved over m.onnx first, then the rename of the
    current-frame graph failed ('.8fa3daa0-3d0d4aba.partial.current.onnx: Is a directory', a hidden name): the
    earlier m.onnx was lost and the new one had no partner."""
    (tmp_path / 'm.onnx').write_bytes(models['key'])
    (tmp_path / 'm.current.onnx').mkdir()
    with pytest.raises(ValueError, match=r'm\.current\.onnx is a folder: .*writes X\.onnx and X\.current\.onnx'):
        export_onnx(models['keyframe'], tmp_path / 'm.onnx')
    assert (tmp_path / 'm.onnx').read_bytes() == models['key']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']


def test_an_onnx_export_onto_a_full_disk_fails_in_one_line_naming_the_file_and_leaves_nothing(models, tmp_path):
    """torch.onnx.export wrote the staged file itself: the error was '[Errno 27] File too large', no file named,
    and the graph was moved into place without an fsync (the TorchScript export goes through write_file_atomic)."""
    out = tmp_path / 'x' / 'm.onnx'
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (50 * 1024, resource.RLIM_INFINITY))  # noqa: E731
    result = subprocess.run([sys.executable, '-m', 'vidseg_ros.cli', 'export', str(models['keyframe']), str(out)],
                            capture_output=True, text=True, timeout=300, preexec_fn=limit,
                            env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr == f'vidseg export: error: {out}: File too large (not written; a file there before is ' \
                            'unchanged)\n'
    assert list(out.parent.iterdir()) == []


def test_an_onnx_export_into_a_folder_it_may_not_write_names_the_file_not_the_staged_one(models, tmp_path):
    """'vidseg export m.pt /proc/m.onnx' said '/proc/.2c532e18-a76cf8f5.partial.onnx: No such file or directory'."""
    with pytest.raises(OSError) as e:
        export_onnx(models['keyframe'], '/proc/m.onnx')
    assert e.value.filename == '/proc/m.onnx'


def test_a_recurrent_onnx_export_over_a_key_frame_pair_removes_the_pair_s_current_graph(models, tmp_path):
    """m.current.onnx of the replaced key-frame export stayed beside the new recurrent m.onnx: a graph of another
    export under the name of its partner ('m.current.onnx and m.onnx come from two exports' in vidseg info)."""
    (tmp_path / 'm.onnx').write_bytes(models['key'])
    (tmp_path / 'm.current.onnx').write_bytes(models['current'])
    (tmp_path / 'm.ts').write_bytes(b'not touched')
    report = export_onnx(models['recurrent'], tmp_path / 'm.onnx')
    assert report['files'] == [str(tmp_path / 'm.onnx')]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx', 'm.ts']


def test_info_refuses_a_partner_that_is_not_the_current_frame_graph(models, tmp_path):
    """m.onnx copied as m.current.onnx: the engine refuses the pair ('its graph has 1 input(s) and 3 output(s)'),
    info said partner present and same_export true, without a note."""
    (tmp_path / 'm.onnx').write_bytes(models['key'])
    (tmp_path / 'm.current.onnx').write_bytes(models['key'])
    r = CliRunner().invoke(app, ['info', str(tmp_path / 'm.onnx')])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert 'same_export' not in out['partner']
    assert 'its graph has 1 input(s) and 3 output(s)' in out['partner']['problem']
    assert any('m.current.onnx' in n and 'the engine refuses the pair' in n for n in out['notes']), out['notes']


@pytest.mark.parametrize('name, fmt', [('.onnx', 'onnx'), ('.ts', 'ts')])
def test_an_export_named_only_its_suffix_is_told_to_add_a_name(models, tmp_path, name, fmt):
    """'vidseg export m.pt .onnx' said 'onnx exports are .onnx files (...), got .onnx': to Python (and the engine,
    which picks the runtime by suffix) '.onnx' is a hidden name without a suffix."""
    r = CliRunner().invoke(app, ['export', str(models['keyframe']), str(tmp_path / name), '--format', fmt])
    assert r.exit_code == 2
    assert r.stderr.endswith(f'{name}: a {"torchscript" if fmt == "ts" else fmt} export needs a name before its '
                             f'suffix, e.g. {tmp_path / ("model" + name)}\n'), r.stderr
    assert list(tmp_path.iterdir()) == []


def test_info_of_a_key_frame_graph_whose_partner_name_is_a_folder_says_so(models, tmp_path):
    """A folder m.current.onnx was 'm.current.onnx is missing' (it is there: the user looks for a file and sees it)."""
    (tmp_path / 'm.onnx').write_bytes(models['key'])
    (tmp_path / 'm.current.onnx').mkdir()
    r = CliRunner().invoke(app, ['info', str(tmp_path / 'm.onnx')])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out['partner'] == {'file': str(tmp_path / 'm.current.onnx'), 'present': False}
    assert out['notes'] == ['m.current.onnx is a folder: the engine needs both files of a key-frame ONNX export, '
                            'side by side'], out['notes']


def test_an_export_where_the_file_system_has_no_locks_is_written_with_a_warning(models, tmp_path, monkeypatch,
                                                                                  caplog):
    """flock on a mount without locks (some network and FUSE file systems) raised EOPNOTSUPP after all the work:
    the export failed as '[Errno 95] Operation not supported', naming no file. datasets.lock goes on, warning."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    monkeypatch.setattr(fcntl, 'flock', no_locks)
    report = export_onnx(models['keyframe'], tmp_path / 'm.onnx')
    assert report['files'] == [str(tmp_path / 'm.onnx'), str(tmp_path / 'm.current.onnx')]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']
    assert 'cannot lock (Operation not supported)' in caplog.text


def test_bench_takes_its_engine_defaults_from_the_engine_config_and_refuses_zero_frames(monkeypatch):
    """commands_models.bench restated EngineConfig's defaults (device 'auto', fp32, keyframe_interval 5...): a
    second copy that would drift; frames=0 ended in statistics' 'mean requires at least one data point'."""
    import dataclasses
    import inspect

    from vidseg_ros.engine.base import EngineConfig
    from vidseg_ros.engine.stream import StreamSegmenter
    from vidseg_ros.tools.commands_models import bench
    engine = {f.name for f in dataclasses.fields(EngineConfig)} - {'input_hw'}
    restated = {n: p.default for n, p in inspect.signature(bench).parameters.items()
                if n in engine and p.default is not None}
    assert restated == {}
    seen = []

    def built(cfg):
        seen.append(cfg)
        raise RuntimeError('built')
    monkeypatch.setattr(StreamSegmenter, 'from_checkpoint', staticmethod(built))
    with pytest.raises(RuntimeError, match='built'):
        bench()
    assert seen == [EngineConfig()]
    with pytest.raises(ValueError, match='frames must be at least 1, got 0'):
        bench('untrained:keyframe_fpn', frames=0)


def test_a_ctrl_c_between_the_renames_of_a_key_frame_pair_leaves_one_export_s_pair(models, tmp_path, monkeypatch):
    """A Ctrl-C right after the key-frame graph's rename left the new m.onnx beside the earlier export's
    m.current.onnx (the staged current-frame graph removed on the way out): a pair the engine refuses as two
    exports. The signal now waits for the pair's two renames."""
    import signal

    from vidseg_ros.engine.backends import open_exported
    (tmp_path / 'm.onnx').write_bytes(models['key'])
    (tmp_path / 'm.current.onnx').write_bytes(models['current'])
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if str(dst) == str(tmp_path / 'm.onnx'):
            os.kill(os.getpid(), signal.SIGINT)      # Ctrl-C just after the first rename of the pair
    monkeypatch.setattr(os, 'replace', replace)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(models['keyframe'], tmp_path / 'm.onnx')
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']
    assert (tmp_path / 'm.current.onnx').read_bytes() != models['current']
    open_exported(tmp_path / 'm.onnx', device='cpu')     # one export's pair


def test_an_export_killed_by_sigterm_leaves_no_staged_files(models, tmp_path):
    """kill (SIGTERM) while the graphs were staged left .<hex>-<hex>.partial.onnx and .partial.current.onnx
    (14.5 MB for camvid_keyframe_fpn), one more pair each time; the earlier export stays as it was."""
    import signal
    import time
    (tmp_path / 'm.onnx').write_bytes(models['key'])
    (tmp_path / 'm.current.onnx').write_bytes(models['current'])
    proc = subprocess.Popen([sys.executable, '-m', 'vidseg_ros.cli', 'export', str(models['keyframe']),
                             str(tmp_path / 'm.onnx')], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, 'PYTHONPATH': str(ROOT)})
    deadline = time.monotonic() + 120
    while not any('.partial' in p.name for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, 'the export never staged a file'
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143     # the CLI contract: SIGTERM is exit 143, cleaned up (dc513b2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.current.onnx', 'm.onnx']
    assert (tmp_path / 'm.onnx').read_bytes() == models['key']


@pytest.mark.parametrize('fmt, suffix', [('onnx', '.onnx'), ('ts', '.ts')])
def test_a_folder_given_as_the_export_says_it_is_a_folder(models, tmp_path, fmt, suffix):
    """`vidseg export m.pt runs/` said 'onnx exports are .onnx files ..., got runs', not that runs is a folder."""
    (tmp_path / 'runs').mkdir()
    r = CliRunner().invoke(app, ['export', str(models['keyframe']), str(tmp_path / 'runs'), '--format', fmt])
    assert r.exit_code == 2
    assert r.stderr.strip() == (f'vidseg export: error: {tmp_path}/runs is a folder; give the file to write, e.g. '
                                f'{tmp_path}/runs/model{suffix}')
    assert os.listdir(tmp_path / 'runs') == []
