"""recorder_node and time: use_sim_time with a /clock from a probe that goes back (a looping bag player
restarting it). Log time is the receive time on the node clock, as with ros2 bag record --use-sim-time, so
the bag's log times go back too; that used to happen without a word."""
from __future__ import annotations

import time

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from mcap.reader import make_reader
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String
from support.ros_helpers import diag_values

NODE = 'vidseg_ros.ros.recorder_node'


def _clock(pub, seconds: float) -> None:
    ns = int(seconds * 1e9)
    pub.publish(Clock(clock=Time(sec=ns // 10**9, nanosec=ns % 10**9)))


def _log_times(bag_dir) -> list[float]:
    out = []
    for path in sorted(bag_dir.glob('*.mcap')):
        with open(path, 'rb') as f:
            out += [m.log_time / 1e9 for _, _, m in make_reader(f).iter_messages(log_time_order=False)]
    return out


def test_clock_going_back_is_said_and_counted(start_node, probe, tmp_path):
    node = start_node(NODE, {'output_dir': str(tmp_path), 'bag_prefix': 'time', 'topics': ['/chat'],
                             'discovery_period_s': 0.2, 'diagnostics_period_s': 0.3, 'min_free_disk_bytes': 0,
                             'use_sim_time': True})
    clock = probe.node.create_publisher(Clock, '/clock', 10)
    diags = probe.collect(DiagnosticArray, '/diagnostics')
    (pub,) = probe.publishers(node, '/chat', msg_type=String)
    for t0, tag in ((1000.0, 'a'), (990.0, 'b')):   # the player loops: /clock back 10 s
        for i in range(3):
            _clock(clock, t0 + i * 0.5)
            time.sleep(0.1)   # /clock reaches the node before the message
            pub.publish(String(data=f'{tag}{i}'))
            time.sleep(0.05)

    def counted():
        mine = [s for a in diags for s in a.status if s.name == '/vidseg_recorder']
        return mine and diag_values(mine[-1]).get('messages_written') == '6' and diag_values(mine[-1])
    probe.wait_for(counted, 30, '6 messages written (past the settle time)', node)
    values = counted()
    assert values['clock_jumps_back'] == '1' and 10.9 < float(values['clock_jump_back_s_max']) < 11.1, values
    assert node.stop() == 0
    log = node.log_path.read_text()
    assert log.count('the node clock (/clock (use_sim_time)) went back 11.000 s') == 1, log
    (bag,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith('time_')]
    # receive time on the node clock: the /clock each message was sent under, or the next tick where a loaded
    # recorder took that /clock before the message (CI: 991.0 for the message sent under 990.5)
    times = _log_times(bag)
    sent_under = [1000.0, 1000.5, 1001.0, 990.0, 990.5, 991.0]
    assert len(times) == 6 and all(t in (s, s + 0.5) for t, s in zip(times, sent_under)), times
    assert times[3] < times[2] - 9     # the bag's log times go back with the clock
