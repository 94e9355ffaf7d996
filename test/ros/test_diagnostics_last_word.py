"""A node's last /diagnostics status (STALE at exit, ERROR when the worker died) is acknowledged as soon as the reader
has it, not on FastDDS's periodic heartbeat. A reader acknowledges only in answer to a writer's HEARTBEAT, sent with a
sample only when the sample fills the writer's history; at depth 10 the segment node's exit waited its whole
LAST_STATUS_ACK_S (0.5 s) almost every time (the heartbeat came every 3 s) with the status already delivered.

Here the writer's periodic heartbeat is an hour apart, so only the one sent with the sample can bring the
acknowledgement: the test waits long, but never on speed."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from support.paths import ROOT  # noqa: E402

HOUR_HEARTBEAT = '''  <data_writer profile_name="hour_heartbeat" is_default_profile="true">
    <times>
      <heartbeat_period><sec>3600</sec><nanosec>0</nanosec></heartbeat_period>
    </times>
  </data_writer>
</profiles>'''

# The node's own publisher (diagnostics.publisher, as segment_node and recorder_node make it) and last_word.
WRITER = textwrap.dedent('''
    import time
    import rclpy
    from vidseg_ros.ros import diagnostics

    rclpy.init()
    node = rclpy.create_node('last_word_writer')
    pub = diagnostics.publisher(node)
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)   # the reader's side of the match too
    stamp = node.get_clock().now().to_msg()
    for _ in range(3):   # the periodic statuses before
        pub.publish(diagnostics.array(stamp, [diagnostics.status('cam', 'hw', diagnostics.OK, 'serving', {})]))
        time.sleep(0.1)
    acked = diagnostics.last_word(pub, lambda: diagnostics.array(stamp, [diagnostics.status(
        'cam', 'hw', diagnostics.STALE, 'inactive: node stopped', {})]), WAIT_S, node.get_logger())
    print(f'acked={acked}', flush=True)
    node.destroy_node()
    rclpy.shutdown()
''')
WAIT_S = 30.0   # an acknowledgement comes in milliseconds; without one the old writer waited an hour for it


def test_the_last_status_is_acknowledged_without_the_periodic_heartbeat(probe, tmp_path):
    profile = tmp_path / 'fastdds.xml'
    profile.write_text((ROOT / 'config' / 'fastdds_shm.xml').read_text().replace('</profiles>', HOUR_HEARTBEAT))
    diags = probe.collect(DiagnosticArray, '/diagnostics')   # reliable, like rqt_robot_monitor and the aggregator
    r = subprocess.run([sys.executable, '-c', WRITER.replace('WAIT_S', repr(WAIT_S))], capture_output=True,
                       text=True, timeout=180, cwd=str(ROOT),
                       env={**os.environ, 'FASTDDS_DEFAULT_PROFILES_FILE': str(profile),
                            'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))})
    assert r.returncode == 0, r.stderr[-3000:]
    probe.wait_for(lambda: any(s.level == DiagnosticStatus.STALE for m in diags for s in m.status), 30,
                   'the STALE status')
    assert 'acked=True' in r.stdout, r.stdout + r.stderr[-3000:]
