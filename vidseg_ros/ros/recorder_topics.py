"""recorder_node's topics: which are subscribed (discovery), when a new topic's type is fixed (settling, its
messages held meanwhile), topics offered in several types, and idle subscriptions pruned.

``TopicDiscovery`` is a part of :class:`vidseg_ros.ros.recorder_node.RecorderNode` (it works on the node's
``subs``, ``pending``, ``types``, ``unrecorded``, ``unloadable``, ``idle_since``, ``lost``, ``recorder`` and
``cfg``, and subscribes through the node's ``subscribe``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from vidseg_ros.data.bags.writer import qos_yaml
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

_INFINITE_NS = 9223372036854775807


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


class TopicDiscovery:
    """Discovery (``discover``, on a timer), the settle time of a new topic's type (``settle_pending``,
    ``settle``) and the pruning of idle subscriptions (``prune_idle``)."""

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
            if topic in self.unloadable and set(types) != {self.unloadable[topic]}:
                # its publishers of the type that could not be loaded are gone and others came: try those
                del self.subs[topic], self.unloadable[topic]
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

    def settle_all(self, closing: bool = False) -> None:
        """Settle every pending topic now: before a pause, resume or snapshot (the held messages are then
        written, skipped or buffered as the state they came in says) and at close."""
        for topic in list(self.pending):
            self.settle(topic, closing)
