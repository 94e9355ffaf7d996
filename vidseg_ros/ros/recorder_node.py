"""recorder_node (``vidseg_recorder``): records topics to rosbag2 MCAP bags, every message, nothing lost.

A thin adapter around :class:`vidseg_ros.data.recorder.core.Recorder`: raw subscriptions (serialized
bytes, never decoded) hand each message to the recorder's byte-bounded queue; its writer thread does
all disk work. Topics that appear later are discovered by a timer. A new topic's type is fixed after a
settle time (``SETTLE_S``; its messages held meanwhile), so that publishers of several types on one topic
lead to one outcome (not recorded, a WARN naming the types) whatever order DDS reports them in.
Services ``~/pause``, ``~/resume``, ``~/split``, ``~/snapshot`` (std_srvs/Trigger); ``/diagnostics`` once per
``diagnostics_period_s``, with per-topic loss: dropped by the recorder and lost in transport (the
subscriptions' message-lost events, where the RMW reports them).

Parameters (:class:`RecorderSettings`) are read at start-up and declared read-only: they shape the bag
being written and the subscriptions made, so a change at run time is refused (with the reason) rather
than accepted and silently not applied; restart the node to change one.

Exit codes: 0 after SIGINT/SIGTERM (bag closed); 1 when recording stopped on its own (disk full,
write error), after an ERROR diagnostic naming the reason and the file; 2 when it cannot start.

Run: ``ros2 run vidseg_ros recorder_node --ros-args -p topics:="[/camera/image_raw]"``
or ``python -m vidseg_ros.ros.recorder_node --ros-args --params-file config/recorder.yaml``.
"""
from __future__ import annotations

if __name__ == '__main__':   # python -m: through entry, whose signal handlers cover the imports below
    from vidseg_ros.ros.entry import run_as_main
    run_as_main('vidseg_ros.ros.recorder_node')

import importlib
import re
import time
from dataclasses import dataclass, field

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSPolicyKind, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.qos_overriding_options import QoSOverridingOptions
from std_srvs.srv import Trigger

from vidseg_ros.config import ConfigError
from vidseg_ros.data.bags.writer import qos_yaml
from vidseg_ros.data.recorder.core import BagExistsError, Recorder, check_compression, new_bag_dir
from vidseg_ros.ros.diagnostics import ERROR, OK, STALE, WARN, array, status, steady_timer
from vidseg_ros.ros.params import declare_settings, keep_last_qos, read_settings, unmatched_publishers
from vidseg_ros.ros.recorder_params import RecorderSettings
from vidseg_ros.ros.spin import run
from vidseg_ros.text import clip

# A new topic's type is fixed once it has been seen this long and the ROS graph (nodes, topics and their
# types) has not changed for this long either: DDS reports the publishers of one topic in separate processes
# one after another, at start-up up to ~3 s apart (FastDDS announces a participant every 3 s; 2.9 s measured
# on a loaded machine), so without this wait the type a topic got, or whether it was recorded, depended on
# which one discovery reported first. Its messages are held meanwhile (none lost). A graph that never rests
# (nodes coming and going) holds a topic at most MAX_SETTLE_S.
SETTLE_S = 3.0
MAX_SETTLE_S = 10.0
# Subscriptions of recorded topics that lost their publishers are kept (a restarted camera's first messages
# reach a reader that is already there), but at most this many: topics of ever new names (regex recording of
# per-run or per-task topics) each kept a DDS reader (~100 kB) for good, without end. The longest idle go first
# and are subscribed again (same type, same bag topic) when a publisher returns.
MAX_IDLE_SUBSCRIPTIONS = 64
# At close, the messages DDS had delivered to our subscriptions but the executor not yet handed over are taken
# (``drain``): until DRAIN_IDLE_PASSES executor passes in a row bring none, DRAIN_S at most.
DRAIN_S = 1.0
DRAIN_IDLE_PASSES = 10

_INFINITE_NS = 9223372036854775807
# ROS's usual overridable policies plus durability: a volatile publisher joining a topic subscribed
# transient_local (all its publishers were when it was first seen) is not matched; the override lets it be.
_OVERRIDABLE = QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH,
                                                  QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY))


def message_class(msgtype: str):
    """``'sensor_msgs/msg/Image'`` -> the generated Python class (any installed interface package)."""
    pkg, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{pkg}.{kind}'), name)


def _duration(d) -> dict:
    ns = min(int(d.nanoseconds), _INFINITE_NS)
    return {'sec': ns // 1_000_000_000, 'nsec': ns % 1_000_000_000}


@dataclass
class Pending:
    """A topic subscribed for ``msgtype`` whose type is not fixed yet (``SETTLE_S``): its messages are held
    here, in order, and written once it is (nothing lost), or dropped when other types showed up."""
    msgtype: str
    infos: list
    since: float                                # monotonic time it was first seen
    types: set = field(default_factory=set)     # every type its publishers had since it was first seen
    held: list = field(default_factory=list)    # (data, log time ns, publish time ns)
    held_bytes: int = 0


def offered_qos(infos) -> list[dict]:
    """Publishers' QoS (TopicEndpointInfo list) in rosbag2's v9 ``offered_qos_profiles`` form."""
    out = []
    for info in infos:
        q = info.qos_profile
        out.append({'history': q.history.name.lower(), 'depth': int(q.depth),
                    'reliability': q.reliability.name.lower(), 'durability': q.durability.name.lower(),
                    'deadline': _duration(q.deadline), 'lifespan': _duration(q.lifespan),
                    'liveliness': q.liveliness.name.lower(),
                    'liveliness_lease_duration': _duration(q.liveliness_lease_duration),
                    'avoid_ros_namespace_conventions': bool(q.avoid_ros_namespace_conventions)})
    return out


class RecorderNode(Node):
    """Subscribes the configured topics raw and feeds a :class:`Recorder`."""

    def __init__(self, **kwargs):
        super().__init__('vidseg_recorder', **kwargs)
        declare_settings(self, RecorderSettings, read_only=True)  # nothing is applied at run time
        self.cfg: RecorderSettings = read_settings(self, RecorderSettings)
        cfg = self.cfg
        check_compression(cfg.compression)   # a missing codec: exit 2 before output_dir is made
        if not cfg.topics and not cfg.topic_regex:   # an empty bag, recording nothing, said nothing about it
            raise ConfigError('nothing to record: topics is empty and topic_regex is off; list topics or set '
                              'topic_regex')
        self.wanted = {self.resolve_topic_name(t) for t in cfg.topics}
        self.include = re.compile(cfg.topic_regex) if cfg.topic_regex else None
        self.exclude = re.compile(cfg.exclude_regex) if cfg.exclude_regex else None
        # Set from the writer thread when recording stops on its own: wakes the executor at once.
        self._stopped = self.create_guard_condition(lambda: None)
        for attempt in range(5):  # another recorder may take the same name in the same second
            self.bag_dir = new_bag_dir(cfg.output_dir, cfg.bag_prefix)
            try:
                self.recorder = Recorder(
                    self.bag_dir, compression=cfg.compression, chunk_size_bytes=cfg.chunk_size_bytes,
                    max_bag_size_bytes=cfg.max_bag_size_bytes, max_bag_duration_s=cfg.max_bag_duration_s,
                    queue_max_bytes=cfg.queue_max_bytes, min_free_disk_bytes=cfg.min_free_disk_bytes,
                    fsync_bytes=cfg.fsync_bytes, start_paused=cfg.start_paused, direct_io=cfg.direct_io,
                    snapshot_mode=cfg.snapshot_mode, snapshot_max_bytes=cfg.snapshot_max_bytes,
                    snapshot_max_duration_s=cfg.snapshot_max_duration_s, next_output_dirs=cfg.next_output_dirs,
                    on_error=self._on_recorder_error)
                break
            except BagExistsError:
                if attempt == 4:
                    raise
        self.subs = {}
        self.idle_since: dict[str, float] = {}     # subscribed topic -> when it was first seen without publishers
        self.pending: dict[str, Pending] = {}       # topic -> subscribed, type not fixed yet (SETTLE_S)
        self._graph, self._graph_changed = None, time.monotonic()   # for settle_pending: when it last changed
        self.types: dict[str, str] = {}             # topic -> the type recorded
        self.unrecorded: dict[str, set[str]] = {}   # topic -> types offered but not recorded (later, or several)
        self.unloadable: dict[str, str] = {}        # topic -> its type, whose message package is not installed
        self._close_result: bool | None = None
        self.taken = 0                  # messages our subscriptions have handed over (``drain`` watches it)
        self._said_no_clock = False
        self._last_log_ns = 0           # the last log time given: a smaller one is the node clock going back
        self.clock_jumps_back, self.clock_jump_back_s_max = 0, 0.0
        self.lost: dict[str, int] = {}
        self.incompatible: dict[str, str] = {}   # topic -> QoS policy of the last publisher reported incompatible
        self._last = (time.monotonic(), {})  # previous diagnostics snapshot, for rates
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_service(Trigger, '~/pause', self._on_pause)
        self.create_service(Trigger, '~/resume', self._on_resume)
        self.create_service(Trigger, '~/split', self._on_split)
        self.create_service(Trigger, '~/snapshot', self._on_snapshot)
        # steady-clock timers: with use_sim_time and no /clock yet, ROS-clock timers never fire (nothing was
        # subscribed, recorded or said on /diagnostics)
        steady_timer(self, cfg.discovery_period_s, self.discover)
        steady_timer(self, cfg.diagnostics_period_s, self.publish_diagnostics)
        steady_timer(self, SETTLE_S / 4, self.settle_pending)
        mode = 'paused' if cfg.start_paused else 'buffering for ~/snapshot' if cfg.snapshot_mode else 'recording'
        self.get_logger().info(
            f'recording to {self.bag_dir} ({mode}); topics '
            f'{sorted(self.wanted)}{" + /" + cfg.topic_regex + "/" if cfg.topic_regex else ""}')
        self.discover()

    def _on_recorder_error(self, text: str) -> None:
        self._stopped.trigger()  # main() then closes, publishes the ERROR diagnostic and exits 1

    def matches(self, topic: str) -> bool:
        if self.exclude is not None and self.exclude.search(topic):
            return False
        return topic in self.wanted or (self.include is not None and self.include.search(topic) is not None)

    def discover(self) -> None:
        """Subscribe every matching topic that has a publisher (its QoS and type are then known)."""
        self.prune_idle()
        for topic, types in self.get_topic_names_and_types():
            if not self.matches(topic):
                continue
            if topic in self.types and topic not in self.subs:   # recorded, its subscription pruned: back
                self.resubscribe(topic, types)
                continue
            if topic in self.pending:      # a publisher of another type within the settle time: settle() decides
                self._note_types(topic)
                continue
            if topic in self.subs:
                if topic in self.types and set(types) != {self.types[topic]}:   # a publisher of another type?
                    self.check_type(topic)
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            if len(types) != 1:
                self.several_types(topic, types)
                continue
            try:
                self.subscribe(topic, types[0], infos)
            except (ImportError, AttributeError, ValueError) as e:
                self.subs[topic] = None  # not retried every period
                self.unloadable[topic] = types[0]   # on /diagnostics for good: it said OK, recording nothing of it
                self.get_logger().error(f'cannot record {topic} [{types[0]}]: {clip(e)} (message package missing?)')

    def prune_idle(self) -> None:
        """Keep at most MAX_IDLE_SUBSCRIPTIONS subscriptions without publishers: destroy the longest idle."""
        now = time.monotonic()
        for topic, sub in self.subs.items():
            if sub is None or topic in self.pending or sub.get_publisher_count():
                self.idle_since.pop(topic, None)
            else:
                self.idle_since.setdefault(topic, now)
        excess = len(self.idle_since) - MAX_IDLE_SUBSCRIPTIONS
        for topic in sorted(self.idle_since, key=self.idle_since.get)[:max(excess, 0)]:
            del self.idle_since[topic]
            self.destroy_subscription(self.subs.pop(topic))

    def resubscribe(self, topic: str, types) -> None:
        """A recorded topic whose subscription was pruned has publishers again: subscribed as the type it has
        in the bag, no settle time (its type is fixed); publishers of another type only are not recorded."""
        recorded = self.types[topic]
        infos = [i for i in self.get_publishers_info_by_topic(topic) if i.topic_type == recorded]
        if recorded in types and infos:
            self.subscribe(topic, recorded, infos, settled=True)
        if set(types) - {recorded}:
            self.check_type(topic)

    def several_types(self, topic: str, types, held: int = 0) -> None:
        """A matching topic offered in several types (seen together, or before its type was settled) is not
        recorded, as with ros2 bag record (one type per topic in a bag), whatever order DDS discovery
        reported them in; said once per topic and new type (a once-per-process log hid every topic after the
        first) and on the recorder's /diagnostics status until one type is left and it is recorded."""
        seen = self.unrecorded.setdefault(topic, set())
        if set(types) <= seen:
            return
        seen.update(types)
        dropped = f'; its {held} message(s) received meanwhile are dropped' if held else ''
        self.get_logger().warning(f'{clip(topic)} has several types ({clip(", ".join(sorted(types)))}): NOT recorded '
                                  f'(one type per topic in a bag, as with ros2 bag record, whichever DDS reports '
                                  f'first){dropped}; it is recorded once publishers of one type are left')

    def check_type(self, topic: str) -> None:
        """Publishers of another type on a recorded topic: their messages cannot be recorded (a topic has one
        type in a bag, as with ros2 bag record, and our subscription does not match them). Said once per new
        type, in the log and (for good) on /diagnostics, never lost silently."""
        recorded = self.types[topic]
        seen = self.unrecorded.setdefault(topic, set())
        new = {i.topic_type for i in self.get_publishers_info_by_topic(topic)} - {recorded} - seen
        if not new:
            return
        seen.update(new)
        self.get_logger().warning(
            f'{clip(topic)}: publisher(s) of type {clip(", ".join(sorted(new)))} appeared; {clip(topic)} is recorded '
            f'as {clip(recorded)} only, so their messages are NOT recorded (one type per topic in a bag); restart '
            f'the recorder (a new bag) to record the new type')

    def subscribe(self, topic: str, msgtype: str, infos, settled: bool = False) -> None:
        """Subscribe ``topic`` as ``msgtype`` at once (no message missed), holding its messages until its type
        is settled (``settle``, after ``SETTLE_S``; at once when ``settled``: recorded before)."""
        cfg = self.cfg
        reliability = 'reliable'
        if cfg.input_reliability == 'best_effort' or (
                cfg.input_reliability == 'auto'
                and any(i.qos_profile.reliability != ReliabilityPolicy.RELIABLE for i in infos)):
            reliability = 'best_effort'
        qos = keep_last_qos(reliability, cfg.input_depth)
        # Latched topics (/tf_static, a map, robot_description): their publishers send what they already
        # published only to a transient_local reader, so a volatile one (as before) joining after them
        # recorded the topic with no message at all, and a replay lacked every static transform. As ros2 bag
        # record: transient_local when every publisher offers it (a volatile publisher cannot match it).
        if infos and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos):
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
        pending = Pending(msgtype, list(infos), time.monotonic(), {msgtype})
        self.lost.setdefault(topic, 0)   # a topic subscribed again keeps its count
        events = SubscriptionEventCallbacks(message_lost=lambda e, t=topic: self._on_lost(t, e),
                                            incompatible_qos=lambda e, t=topic: self._on_incompatible(t, e))
        put, log_time, held = self.recorder.put, self._log_time, self.pending

        def on_message(data: bytes, info) -> None:
            self.taken += 1
            if held:   # (an empty dict is false: one test per message while nothing is pending)
                p = held.get(topic)
                if p is not None:
                    self._hold(topic, p, data, log_time(), info.get('source_timestamp') or 0)
                    return
            put(topic, data, log_time(), info.get('source_timestamp') or 0)

        def subscribe(callbacks):
            return self.create_subscription(message_class(msgtype), topic, on_message, qos, raw=True,
                                            event_callbacks=callbacks,
                                            qos_overriding_options=_OVERRIDABLE)
        try:
            self.subs[topic] = subscribe(events)
        except UnsupportedEventTypeError:   # an RMW that cannot report lost messages: record all the same
            events.message_lost = None
            self.subs[topic] = subscribe(events)
        if not settled:
            self.pending[topic] = pending

    def settle_pending(self) -> None:
        """Settle the topics seen SETTLE_S ago once the graph has rested SETTLE_S (or after MAX_SETTLE_S)."""
        if not self.pending:
            return
        now = time.monotonic()
        graph = (sorted((t, sorted(types)) for t, types in self.get_topic_names_and_types()),
                 sorted(self.get_node_names_and_namespaces()))
        if graph != self._graph:
            self._graph, self._graph_changed = graph, now
        for topic, p in list(self.pending.items()):
            self._note_types(topic)
            if now - p.since >= MAX_SETTLE_S or (now - p.since >= SETTLE_S and now - self._graph_changed >= SETTLE_S):
                self.settle(topic)

    def _note_types(self, topic: str) -> None:
        """Add the types of ``topic``'s publishers now to the types its pending entry has seen (a publisher of
        another type seen at any time before the type is fixed means several types, whatever came first)."""
        self.pending[topic].types.update(i.topic_type for i in self.get_publishers_info_by_topic(topic))

    def _hold(self, topic: str, p: Pending, data: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        p.held.append((data, log_time_ns, publish_time_ns))
        p.held_bytes += len(data)
        if p.held_bytes > self.cfg.queue_max_bytes // 4:   # a fast camera: settle now rather than hold more
            self.settle(topic)

    def settle(self, topic: str, closing: bool = False) -> None:
        """Fix the type of a pending topic: one type among all its publishers seen since it was first seen
        (and now) -> recorded, held messages first; several -> not recorded (``several_types``), the
        subscription removed so that discovery takes the topic again once one type is left (``close`` removes
        it when ``closing``)."""
        if topic not in self.pending:
            return
        if not closing:   # after a signal the graph is gone with the context: the types seen decide
            self._note_types(topic)
        p = self.pending.pop(topic)
        if len(p.types) > 1:
            if not closing:
                self.destroy_subscription(self.subs.pop(topic))
            self.lost.pop(topic, None)
            self.several_types(topic, p.types, len(p.held))
            return
        type_hash = str(p.infos[0].topic_type_hash)
        self.recorder.add_topic(topic, p.msgtype, qos_yaml(offered_qos(p.infos)),
                                type_hash if type_hash.startswith('RIHS01_') else '')
        self.types[topic] = p.msgtype
        self.unrecorded.get(topic, set()).discard(p.msgtype)   # several types before, one now: it is recorded
        for data, log_time_ns, publish_time_ns in p.held:
            self.recorder.put(topic, data, log_time_ns, publish_time_ns)
        self.get_logger().info(f'recording {clip(topic)} [{clip(p.msgtype)}]')

    def _log_time(self) -> int:
        """The node clock's time for a message's log time; with use_sim_time it is 0 until the first /clock,
        said once (the bag's start time then reads 1970). Log time is the receive time on the node clock, as
        with ros2 bag record --use-sim-time, even when that clock goes back (``_clock_went_back``)."""
        now = self.get_clock().now().nanoseconds
        if not now and not self._said_no_clock:
            self._said_no_clock = True
            self.get_logger().warning('use_sim_time is set and no /clock has arrived: messages are logged at '
                                      'time 0 until it does (start the clock source, e.g. the bag player, first)')
        if now < self._last_log_ns:
            self._clock_went_back(self._last_log_ns - now)
        self._last_log_ns = now
        return now

    def _clock_went_back(self, back_ns: int) -> None:
        """The node clock went back (a looping bag player restarting /clock, a simulator reset, the system
        clock set back): the bag's log times go back with it, silently before. Counted on /diagnostics
        (clock_jumps_back) and said in one line per jump, at most every 10 s (rclpy throttles on the system
        clock, so a looping or paused /clock cannot stretch or freeze the throttle)."""
        self.clock_jumps_back += 1
        self.clock_jump_back_s_max = max(self.clock_jump_back_s_max, back_ns / 1e9)
        source = '/clock (use_sim_time)' if self.get_clock().ros_time_is_active else 'system clock'
        self.get_logger().warning(
            f'the node clock ({source}) went back {back_ns / 1e9:.3f} s: messages are logged at the new time, so '
            f'log times in {self.bag_dir.name} go back too ({self.clock_jumps_back} jump(s) back so far)',
            throttle_duration_sec=10.0)

    def _on_incompatible(self, topic: str, event) -> None:
        """A publisher DDS will not match with our subscription (a best-effort camera and our default reliable):
        none of its messages is recorded. Said in the log, and on /diagnostics (WARN) while it is unmatched:
        the topic's status said OK with 0 messages, the recorder's 'recording'."""
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self.incompatible[topic] = policy
        self.get_logger().error(f'{topic}: a publisher offers QoS incompatible with ours ({policy}): its messages '
                                f'are NOT recorded; {self._qos_fix(topic, policy)}')

    def _qos_fix(self, topic: str, policy: str) -> str:
        """What lets an incompatible publisher be recorded: per policy (a volatile publisher of a latched topic
        was told to change input_reliability, which changes nothing)."""
        if policy == 'DURABILITY':
            return (f'it is volatile and {topic} is subscribed transient_local (every publisher was when it was first '
                    f'seen): set qos_overrides.{topic}.subscription.durability:=volatile')
        return (f'input_reliability is {self.cfg.input_reliability}: set input_reliability:=auto or '
                f'qos_overrides.{topic}.subscription.reliability:=best_effort')

    def _unmatched(self, topic: str) -> int:
        """Publishers of ``topic``'s recorded type that DDS did not match with our subscription, where one was
        reported incompatible (graph and matching are not updated at the same instant)."""
        sub = self.subs.get(topic)
        if sub is None or topic not in self.incompatible or topic not in self.types:
            return 0
        return unmatched_publishers(self, sub, self.types[topic])

    def _on_lost(self, topic: str, event) -> None:
        self.lost[topic] += int(event.total_count_change)
        self.get_logger().warning(f'{topic}: DDS reports {event.total_count_change} message(s) lost before '
                               f'reaching the recorder ({event.total_count} in total)')

    def settle_all(self, closing: bool = False) -> None:
        """Settle every pending topic now: before a pause, resume or snapshot (the held messages are then
        written, skipped or buffered as the state they came in says) and at close."""
        for topic in list(self.pending):
            self.settle(topic, closing)

    def _on_pause(self, request, response):
        self.settle_all()
        self.recorder.pause()
        response.success, response.message = True, 'paused'
        return response

    def _on_resume(self, request, response):
        self.settle_all()
        self.recorder.resume()
        response.success, response.message = self.recorder.error is None, self.recorder.error or 'recording'
        return response

    def _on_split(self, request, response):
        self.recorder.split()
        response.success, response.message = True, f'closing {self.recorder.current_file or "(no file yet)"}'
        return response

    def _on_snapshot(self, request, response):
        self.settle_all()
        path, response.message = self.recorder.trigger_snapshot()
        response.success = path is not None
        return response

    def publish_diagnostics(self, final: bool = False) -> None:
        """One status for the recorder plus one per topic; drops are logged, never silent. ``final``: the last
        ones, at exit (``_last_word``)."""
        rec = self.recorder
        now = time.monotonic()
        snap = rec.snapshot()
        t0, prev = self._last
        dt = max(now - t0, 1e-6)
        self._last = (now, snap)
        statuses = []
        total_bytes = sum(c.bytes_written for c in snap.values())
        total_rate = (total_bytes - sum(c.bytes_written for c in prev.values())) / dt / 1e6
        new_drops = 0
        me = self.get_fully_qualified_name()  # never a fixed name: two recorders (rec1, rec2) shared one
        unmatched = {t: n for t in self.incompatible if (n := self._unmatched(t))}
        for topic, c in sorted(snap.items()):
            p = prev.get(topic)
            d_msgs = c.written - (p.written if p else 0)
            d_drop = c.dropped - (p.dropped if p else 0)
            new_drops += d_drop
            if d_drop:
                why = ('recording has stopped' if rec.state in ('error', 'stopped') else
                       f'write queue full ({rec.queued_bytes / 1e6:.0f}/{rec.queue_max_bytes / 1e6:.0f} MB)')
                self.get_logger().warning(f'{topic}: dropped {d_drop} message(s) in {dt:.1f} s, {why}')
            lost = c.dropped + self.lost.get(topic, 0)
            unrecorded = ', '.join(sorted(self.unrecorded.get(topic, ())))
            level = WARN if lost or unrecorded or topic in unmatched else OK
            message = c.msgtype + (f'; NOT recorded (type changed): {unrecorded}' if unrecorded else '') + (
                f'; {unmatched[topic]} publisher(s) NOT recorded: QoS incompatible ({self.incompatible[topic]}), see '
                f'{"qos_overrides (durability)" if self.incompatible[topic] == "DURABILITY" else "input_reliability"}'
                if topic in unmatched else '')
            statuses.append(status(f'{me}: {topic}', self.get_name(), level, message, {
                'messages_received': c.received, 'messages_written': c.written, 'bytes_written': c.bytes_written,
                'rate_hz': d_msgs / dt, 'MB_per_s': (c.bytes_written - (p.bytes_written if p else 0)) / dt / 1e6,
                'lost': lost, 'dropped': c.dropped, 'lost_in_dds': self.lost.get(topic, 0),
                'skipped_paused': c.skipped, 'expired_snapshot': c.expired, 'unrecorded_types': unrecorded,
                'incompatible_publishers': unmatched.get(topic, 0)}))
        fill = rec.queued_bytes / max(rec.queue_max_bytes, 1)
        changed = sorted(t for t, types in self.unrecorded.items() if types)
        unloadable = ', '.join(f'{t} [{m}]' for t, m in sorted(self.unloadable.items()))
        level = ERROR if rec.error else WARN if (new_drops or fill > 0.5 or changed or unmatched or unloadable) else OK
        message = rec.error or f'{rec.state}, {total_rate:.1f} MB/s' + (
            f'; messages of another type NOT recorded on {", ".join(changed)}' if changed else '') + (
            f'; NOT recorded, message package not installed: {clip(unloadable)}' if unloadable else '') + (
            f'; publishers of incompatible QoS NOT recorded on {", ".join(sorted(unmatched))}' if unmatched else '')
        files = rec.files
        statuses.insert(0, status(me, self.get_name(), level, message, {
            'state': rec.state, 'bag': str(rec.snapshots[-1] if rec.snapshots else rec.bag_dir),
            'current_file': rec.current_file, 'last_file': str(files[-1]) if files else '',
            'files': len(files), 'MB_per_s': total_rate, 'bytes_written': total_bytes,
            'messages_written': sum(c.written for c in snap.values()),
            'lost': sum(c.dropped for c in snap.values()) + sum(self.lost.values()),
            'dropped': sum(c.dropped for c in snap.values()), 'lost_in_dds': sum(self.lost.values()),
            'queue_bytes': rec.queued_bytes, 'queue_fill': fill, 'queue_peak_bytes': rec.peak_queued_bytes,
            'snapshot_buffer_bytes': rec.ring_bytes, 'snapshots': len(rec.snapshots),
            'free_disk_GB': rec.free_disk_bytes / 1e9, 'reserved_disk_MB': rec.reserved_bytes / 1e6,
            'topics': len(snap), 'clock_jumps_back': self.clock_jumps_back,
            'clock_jump_back_s_max': self.clock_jump_back_s_max}))
        if final:
            self._last_word(statuses)
        self.pub_diag.publish(array(self.get_clock().now().to_msg(), statuses))

    def _last_word(self, statuses) -> None:
        """At exit every status turns STALE 'stopped: ...' (monitors kept 'recording, 12.3 MB/s' for good after the
        recorder was gone); an ERROR (why recording stopped) stays, and a bag the writer could not close is one."""
        for st in statuses:
            if st.level != ERROR:
                st.level, st.message = STALE, f'stopped: {st.message}'
        top = statuses[0]
        if top.level == ERROR:
            return
        if not self._close_result:
            top.level, top.message = ERROR, 'stopped: the writer did not finish; the bag is NOT closed'
        elif self.cfg.snapshot_mode:
            top.message = f'stopped: {len(self.recorder.snapshots)} snapshot bag(s) written'
        else:
            top.message = 'stopped: bag closed'

    def done(self) -> bool:
        """Recording stopped on its own (disk full, write error): stop spinning (``spin.run``)."""
        return self.recorder.error is not None

    def finish(self, code: int) -> int:
        """Close the bag and say so on /diagnostics (STALE 'stopped: bag closed'); after an unplanned stop say why
        (and which file): ERROR, exit 1."""
        ok = self.close()
        try:
            self.publish_diagnostics(final=True)
            self.pub_diag.wait_for_all_acked(Duration(seconds=2.0))
        except Exception as e:  # noqa: BLE001 - the context gone (an external shutdown): the log said it all
            self.get_logger().debug(f'last /diagnostics status not sent: {e}')
        return code if ok else (code or 1)

    def drain(self) -> None:
        """Take the messages DDS delivered before the stop that the executor had not handed over yet: the spin loop
        ends at the signal, and close() destroyed the subscriptions with them (20 images published in a burst
        just before a SIGHUP: 1 recorded, the rest lost without a count). A camera that keeps publishing cannot
        hold the close: DRAIN_S at most."""
        executor = self.executor
        if executor is None or not self.context.ok() or self.recorder.error:
            return
        deadline, idle = time.monotonic() + DRAIN_S, 0
        while idle < DRAIN_IDLE_PASSES and time.monotonic() < deadline:
            before = self.taken
            try:
                executor.spin_once(timeout_sec=0.0)
            except Exception as e:  # noqa: BLE001 - a callback failing now ends the drain, not the close
                self.get_logger().warning(f'stopped taking the last messages: {clip(e)}')
                return
            idle = idle + 1 if self.taken == before else 0

    def close(self) -> bool:
        """Take what DDS delivered (``drain``), stop subscribing, write what is queued, close the bag (once). False on
        a timeout or an error."""
        if self._close_result is not None:
            return self._close_result
        self.drain()
        self.settle_all(closing=True)   # what a topic of one type received before its settle time is kept
        for sub in filter(None, self.subs.values()):
            try:
                self.destroy_subscription(sub)
            except Exception:  # noqa: BLE001 - the context may already be shut down by the signal
                pass
        self.subs.clear()
        ok = self.recorder.stop(timeout=60.0)
        snap = self.recorder.snapshot()
        # After a signal the context is gone and the node logger's /rosout publisher with it.
        logger = self.get_logger() if self.context.ok() else rclpy.logging.get_logger('vidseg_recorder_exit')
        counts = (f'{sum(c.written for c in snap.values())} messages written, '
                  f'{sum(c.dropped for c in snap.values())} dropped, {sum(self.lost.values())} lost in transport')
        if not ok:
            logger.error(f'{self.bag_dir}: the writer did not finish within 60 s; the bag is NOT closed ({counts})')
        elif self.recorder.error:
            logger.error(f'{clip(self.recorder.error, 1000)} ({counts})')
        else:
            what = (f'{len(self.recorder.snapshots)} snapshot bag(s) {[str(p) for p in self.recorder.snapshots]}'
                    if self.cfg.snapshot_mode else f'bag closed: {", ".join(map(str, self.recorder.bags))}')
            logger.info(f'{what} ({counts})')
        for topic, types in sorted(self.unrecorded.items()):
            if types:
                recorded = f'only {clip(self.types[topic])} is' if topic in self.types else 'the topic is not in the bag'
                logger.warning(f'{clip(topic)}: messages of type {clip(", ".join(sorted(types)))} were NOT recorded '
                               f'({recorded})')
        self._close_result = ok and self.recorder.error is None
        return self._close_result


def main(args=None) -> int:
    """Run the recorder until SIGINT/SIGTERM (exit 0, bag closed) or a recording error (exit 1)."""
    return run(RecorderNode, args)

