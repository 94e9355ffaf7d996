"""recorder_node under repetition (real rclpy + FastDDS, its own process): splits, pause/resume and topics
that come and go must not leave threads, file descriptors or DDS readers behind."""
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from mcap.reader import make_reader  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from support.ros_helpers import ServiceCaller, node_entities, process_resources  # noqa: E402

from vidseg_ros.ros.recorder_topics import MAX_IDLE_SUBSCRIPTIONS  # noqa: E402

NODE = 'vidseg_recorder'


def start(start_node, tmp_path, **params):
    """recorder_node in its own process (stopped by the fixture whatever the test's outcome)."""
    values = {'output_dir': str(tmp_path / 'bags'), 'bag_prefix': 'leak', 'discovery_period_s': 0.2,
              'diagnostics_period_s': 0.5, 'min_free_disk_bytes': 0, **params}
    (tmp_path / 'bags').mkdir()
    return start_node('vidseg_ros.ros.recorder_node', values)


def subscriptions(probe) -> list[str]:
    return node_entities(probe, NODE)['subscriptions']


def counts(bag_dir) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in sorted(bag_dir.glob('*/*.mcap')):
        with open(path, 'rb') as f:
            for _, channel, _ in make_reader(f).iter_messages():
                out[channel.topic] = out.get(channel.topic, 0) + 1
    return out


def come_and_go(probe, rec, names: list[str], n_msgs: int = 3) -> None:
    """Publishers on ``names`` until the recorder has subscribed each and taken their messages, then gone."""
    pubs = [probe.node.create_publisher(String, t, 10) for t in names]
    probe.wait_for(lambda: all(p.get_subscription_count() for p in pubs), 60, 'recorder subscribed', rec)
    for i in range(n_msgs):
        for p in pubs:
            p.publish(String(data=f'{p.topic_name} {i}'))
        time.sleep(0.05)
    probe.wait_for(lambda: rec.log().count('recording /churn/') >= len(names), 60, 'topics settled', rec)
    time.sleep(0.5)   # the messages reach the queue (reliable: resent until acknowledged)
    for p in pubs:
        probe.node.destroy_publisher(p)


def test_topics_of_new_names_coming_and_going_keep_a_bounded_number_of_readers(start_node, probe, tmp_path):
    """Regex recording of topics with ever new names (per run, per task): each kept its DDS reader (~100 kB)
    for good; 2 x 70 topics came and went and the recorder held 140 subscriptions, growing without end.
    Now at most MAX_IDLE_SUBSCRIPTIONS idle ones; a pruned topic coming back is recorded again."""
    n = MAX_IDLE_SUBSCRIPTIONS + 6
    rec = start(start_node, tmp_path, topic_regex='^/churn/')
    probe.wait_for(lambda: NODE in probe.node.get_node_names(), 60, 'recorder up', rec)
    before = None
    for round_ in range(2):
        names = [f'/churn/r{round_}_t{i}' for i in range(n)]
        come_and_go(probe, rec, names)
        probe.wait_for(lambda: len(subscriptions(probe)) <= MAX_IDLE_SUBSCRIPTIONS, 30,
                       f'at most {MAX_IDLE_SUBSCRIPTIONS} idle subscriptions (has {len(subscriptions(probe))})',
                       rec)
        now = process_resources(rec.proc.pid)
        if before is not None:
            assert now['threads'] <= before['threads'] and now['fds'] <= before['fds'], (before, now)
        before = now
    pruned = sorted({f'/churn/r0_t{i}' for i in range(n)} - set(subscriptions(probe)))
    assert pruned, 'no subscription was pruned'
    come_and_go(probe, rec, [pruned[0]], n_msgs=4)   # comes back: subscribed again as the same bag topic
    assert rec.stop(60) == 0, rec.log()[-3000:]
    got = counts(tmp_path / 'bags')
    assert got[pruned[0]] == 3 + 4, (pruned[0], got.get(pruned[0]))
    assert all(got.get(f'/churn/r{r}_t{i}') == 3 for r in range(2) for i in range(n) if
               f'/churn/r{r}_t{i}' != pruned[0]), got


def test_splits_and_pause_resume_leave_no_threads_or_files_open(start_node, probe, tmp_path):
    """120 splits with a pause/resume each while messages flow: threads, open files and DDS entities stay
    flat after the first cycles (RSS grows ~2 kB per file: the bag's metadata of each closed file)."""
    rec = start(start_node, tmp_path, topics=['/steady'])
    pub = probe.node.create_publisher(String, '/steady', 10)
    services = ServiceCaller(probe, rec)
    for s in ('split', 'pause', 'resume'):
        services.client(Trigger, f'/{NODE}/{s}')
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 60, 'recorder subscribed', rec)

    def call(service):
        # an answer FastDDS dropped (the recorder logs it) was served: the request is not sent again
        answer = services.call(Trigger, f'/{NODE}/{service}', Trigger.Request(), lost_ok=True)
        assert answer is None or answer.success, answer.message

    samples = []
    for i in range(120):
        pub.publish(String(data=f'{i}'))
        call('split')
        call('pause')
        call('resume')
        if i in (10, 119):
            time.sleep(0.3)   # the writer closes the file the split asked for
            samples.append((process_resources(rec.proc.pid), node_entities(probe, NODE)))
    (r0, e0), (r1, e1) = samples
    assert (r1['threads'], r1['fds']) == (r0['threads'], r0['fds']), samples
    assert e1 == e0
    assert rec.stop(60) == 0, rec.log()[-3000:]
