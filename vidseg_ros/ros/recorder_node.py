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

The node's parts are in modules of their own: topic discovery and type settling (``recorder_topics``), QoS
choice and events (``recorder_qos``), services (``recorder_services``) and /diagnostics
(``recorder_diagnostics``); this module builds the recorder, subscribes, gives log times and closes the bag.

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

import rclpy
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from std_srvs.srv import Trigger

from vidseg_ros.config import ConfigError
from vidseg_ros.data.recorder.core import BagExistsError, Recorder, check_compression, new_bag_dir
from vidseg_ros.ros import diagnostics
from vidseg_ros.ros.core_logging import adopt
from vidseg_ros.ros.diagnostics import last_word, steady_timer
from vidseg_ros.ros.params import declare_settings, read_settings
from vidseg_ros.ros.recorder_diagnostics import RecorderDiagnostics
from vidseg_ros.ros.recorder_params import RecorderSettings
from vidseg_ros.ros.recorder_qos import OVERRIDABLE, QosEvents, subscription_qos
from vidseg_ros.ros.recorder_services import RecorderServices
from vidseg_ros.ros.recorder_topics import SETTLE_S, Pending, TopicDiscovery
from vidseg_ros.ros.spin import run
from vidseg_ros.text import clip

# At close, the messages DDS had delivered to our subscriptions but the executor not yet handed over are taken
# (``drain``): until DRAIN_IDLE_PASSES executor passes in a row bring none, DRAIN_S at most.
DRAIN_S = 1.0
LAST_STATUS_ACK_S = 2.0   # the last (STALE) /diagnostics status waits this long for reliable readers to take it
DRAIN_IDLE_PASSES = 10


def message_class(msgtype: str):
    """``'sensor_msgs/msg/Image'`` -> the generated Python class (any installed interface package)."""
    pkg, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{pkg}.{kind}'), name)


class RecorderNode(TopicDiscovery, QosEvents, RecorderServices, RecorderDiagnostics, Node):
    """Subscribes the configured topics raw and feeds a :class:`Recorder`."""

    def __init__(self, **kwargs):
        super().__init__('vidseg_recorder', **kwargs)
        adopt(self)   # the core's log lines (the bag writer's 'recording to', 'closed') come as this node's
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
            try:
                self.bag_dir = new_bag_dir(cfg.output_dir, cfg.bag_prefix)
            except OSError as e:   # it said "[Errno 2] No such file or directory: '/proc/nope'", no setting named
                raise ConfigError(f'output_dir: cannot make {clip(cfg.output_dir)!r} ({e.strerror or e}); give a '
                                  'folder this user can write') from None
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
        self.pub_diag = diagnostics.publisher(self)
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

    def subscribe(self, topic: str, msgtype: str, infos, settled: bool = False) -> None:
        """Subscribe ``topic`` as ``msgtype`` at once (no message missed), holding its messages until its type
        is settled (``settle``, after ``SETTLE_S``; at once when ``settled``: recorded before)."""
        qos = subscription_qos(self.cfg.input_reliability, self.cfg.input_depth, infos)
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
                                            qos_overriding_options=OVERRIDABLE)
        try:
            self.subs[topic] = subscribe(events)
        except UnsupportedEventTypeError:   # an RMW that cannot report lost messages: record all the same
            events.message_lost = None
            self.subs[topic] = subscribe(events)
        if not settled:
            self.pending[topic] = pending

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

    def done(self) -> bool:
        """Recording stopped on its own (disk full, write error): stop spinning (``spin.run``)."""
        return self.recorder.error is not None

    def finish(self, code: int) -> int:
        """Close the bag and say so on /diagnostics (STALE 'stopped: bag closed'); after an unplanned stop say why
        (and which file): ERROR, exit 1."""
        ok = self.close()
        last_word(self.pub_diag, lambda: self.diagnostics_array(final=True), LAST_STATUS_ACK_S, self.get_logger())
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
