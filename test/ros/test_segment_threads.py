"""num_threads on a running segment node (real DDS): set and get as `ros2 param` does, nonsense refused with
the range, and a new value reaches torch in the node's inference worker (its OpenMP threads), which /diagnostics
says (torch_threads, the name `vidseg bench` reports it by)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import DescribeParameters
from sensor_msgs.msg import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_segment_params import NAME, NODE, RELIABLE, SMALL, call, get_param, send, set_param  # noqa: E402
from support.ros_helpers import diag_values  # noqa: E402


def os_threads(node) -> int:
    return len(os.listdir(f'/proc/{node.proc.pid}/task'))


def reported_threads(probe, diags, node, want: str, key: str = 'torch_threads') -> None:
    """Wait until this node's camera status says ``key`` ``want`` (its latest status, after a frame)."""
    def latest():
        for arr in reversed(diags):
            for st in arr.status:
                if st.name.endswith(f'{NAME}: image'):
                    return diag_values(st).get(key)
        return None
    probe.wait_for(lambda: latest() == want, 10, f'/diagnostics {key} {want} (last: {latest()})', node)


def test_num_threads_set_and_get_on_a_running_node(start_node, probe, real_frames):
    node = start_node(NODE, {**SMALL, 'num_threads': 1})
    masks = probe.collect(Image, f'/{NAME}/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    rgb = real_frames[0]
    send(probe, pub, rgb, [masks], node)
    assert get_param(probe, node, 'num_threads').integer_value == 1
    reported_threads(probe, diags, node, '1')

    rng = call(probe, node, DescribeParameters, 'describe_parameters',
               DescribeParameters.Request(names=['num_threads'])).descriptors[0].integer_range[0]
    assert (rng.from_value, rng.to_value) == (0, 256)
    for bad in (-1, 257, 'two', 1.5):
        r = set_param(probe, node, 'num_threads', bad)
        assert not r.successful and r.reason, f'num_threads={bad!r} accepted'
        assert get_param(probe, node, 'num_threads').integer_value == 1, f'num_threads changed by {bad!r}'

    send(probe, pub, rgb, [masks], node)
    before = os_threads(node)
    r = set_param(probe, node, 'num_threads', 8)
    assert r.successful, r.reason
    assert get_param(probe, node, 'num_threads').integer_value == 8
    for _ in range(2):   # the worker takes the change between frames, then runs the model on 8 threads
        send(probe, pub, rgb, [masks], node)
    # torch's OpenMP team of the inference worker: 7 more threads than at 1 (a count that never reached the
    # worker leaves it at 1 thread; some slack for other threads of the process coming and going)
    assert os_threads(node) >= before + 5, (before, os_threads(node))
    reported_threads(probe, diags, node, '8')
    assert set_param(probe, node, 'num_threads', 0).successful    # torch's default again, still serving
    send(probe, pub, rgb, [masks], node)
    assert node.alive()


def test_num_threads_reaches_an_onnx_models_sessions_on_a_running_node(start_node, probe, real_frames, tmp_path):
    """An ONNX model ran onnxruntime's default pool at any num_threads; now its sessions are made at it, rebuilt
    in the worker on a change (masks go on), and /diagnostics says the count (onnx_threads)."""
    import torch
    from vidseg_ros.models import create_model
    from vidseg_ros.models.checkpoint import default_meta, save_checkpoint
    from vidseg_ros.tools.export import export_onnx
    torch.manual_seed(0)
    model = create_model('keyframe_fpn', width_mult=0.25)
    save_checkpoint(tmp_path / 'kf.pt', model, default_meta('keyframe_fpn', model.arch_config, input_hw=[96, 128],
                                                            provenance={'trained': True}))
    export_onnx(tmp_path / 'kf.pt', tmp_path / 'kf.onnx')
    node = start_node(NODE, {**SMALL, 'model': str(tmp_path / 'kf.onnx'), 'num_threads': 1})
    masks = probe.collect(Image, f'/{NAME}/mask', RELIABLE)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, 'image', msg_type=Image)
    send(probe, pub, real_frames[0], [masks], node)
    reported_threads(probe, diags, node, '1', 'onnx_threads')
    assert set_param(probe, node, 'num_threads', 2).successful
    for rgb in real_frames[1:3]:
        send(probe, pub, rgb, [masks], node)
    reported_threads(probe, diags, node, '2', 'onnx_threads')
    assert node.alive() and 'not applied' not in node.log()
