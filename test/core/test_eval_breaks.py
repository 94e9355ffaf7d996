"""Where ``vidseg eval`` breaks a run of consecutive frames (no TC pair, no mVC window across it): exactly where the
node's key-frame policy resets its state on the same stamps, and at missing frame indices."""
from types import SimpleNamespace

import pytest

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.policy import KeyframePolicy
from vidseg_ros.tools.evaluate import break_reason

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _node_reset(prev_ns: int, ns: int, max_gap_s: float) -> str:
    policy = KeyframePolicy(EngineConfig(max_gap_s=max_gap_s))
    policy.decide(prev_ns, (4, 4))
    return policy.decide(ns, (4, 4)).reset_reason


@pytest.mark.parametrize('max_gap_s', [0.5, 0.1, 1 / 3, 2.0, 0.0])
@pytest.mark.parametrize('dt_ns', [0, 1, -1, 100_000_000, 333_333_333, 333_333_334, S // 2, S // 2 + 1, S // 2 - 1,
                                   2 * S, 2 * S + 1, 60 * S, -60 * S])
def test_a_stamp_break_is_where_the_node_resets(max_gap_s, dt_ns):
    """The boundary included: a gap of exactly max_gap_s keeps the state (node and eval), one ns more resets it;
    the same stamp twice is no break; max_gap_s 0 breaks only backwards."""
    assert _eval_break(dt_ns, max_gap_s) == _node_reset(T0, T0 + dt_ns, max_gap_s)


@pytest.mark.parametrize('max_gap_s', [0.3, 0.6, 0.7, 1.2])
def test_a_gap_of_exactly_max_gap_s_is_no_break_where_the_product_rounds_up(max_gap_s):
    """Frames exactly max_gap_s apart (a 3.33 Hz camera with max_gap_s 0.3): the node keeps its state, so
    every pair is a TC pair; eval broke at each of them."""
    dt_ns = round(max_gap_s * S)
    assert _node_reset(T0, T0 + dt_ns, max_gap_s) == ''
    assert _eval_break(dt_ns, max_gap_s) == ''


def _eval_break(dt_ns: int, max_gap_s: float) -> str:
    prev, rec = SimpleNamespace(stamp_ns=T0, index=7), SimpleNamespace(stamp_ns=T0 + dt_ns, index=8)
    return break_reason(prev, rec, (4, 4), (4, 4), 1.0, max_gap_s)


@pytest.mark.parametrize('step,usual,why', [(2, 2.0, ''), (3, 2.0, 'missing'), (1, 2.0, ''), (1, 1.0, ''),
                                            (2, 1.0, 'missing'), (0, 1.0, '')])
def test_a_missing_frame_is_an_index_step_above_the_usual_one(step, usual, why):
    """CamVid val (every 2nd source frame) has a usual step of 2: a step of 2 follows, 3 misses a frame."""
    prev, rec = SimpleNamespace(stamp_ns=0, index=10), SimpleNamespace(stamp_ns=1, index=10 + step)
    assert break_reason(prev, rec, None, None, usual, 0.5) == why
    assert break_reason(prev, rec, (4, 4), (4, 5), usual, 0.5) == 'resize'    # a size change first


def test_frames_exactly_max_gap_s_apart_are_video():
    """A 3.33 Hz split with max_gap_s 0.3: the node keeps its state from frame to frame, eval said 'not real video
    (median frame rate 3.33 Hz, state reset beyond 0.3 s): key interval 1 only, no TC / mVC' with 9 gaps."""
    from vidseg_ros.tools.evaluate import sequence_timing
    recs = [SimpleNamespace(stamp_ns=T0 + i * 300_000_000, index=i) for i in range(10)]
    timing = sequence_timing({'s': recs}, 0.3)
    assert timing['video'] and timing['gaps'] == 0
