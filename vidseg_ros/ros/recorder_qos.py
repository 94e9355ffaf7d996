"""recorder_node's QoS: the profile a recorded topic is subscribed with, its overrides, and the subscriptions'
QoS events (messages lost in transport, publishers of incompatible QoS).

``QosEvents`` is a part of :class:`vidseg_ros.ros.recorder_node.RecorderNode` (it works on the node's ``lost``,
``incompatible``, ``subs``, ``types`` and ``cfg``).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSPolicyKind, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.qos_overriding_options import QoSOverridingOptions

from vidseg_ros.ros.params import keep_last_qos, unmatched_publishers

# ROS's usual overridable policies plus durability: a volatile publisher joining a topic subscribed
# transient_local (all its publishers were when it was first seen) is not matched; the override lets it be.
OVERRIDABLE = QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH,
                                                 QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY))


def subscription_qos(input_reliability: str, depth: int, infos):
    """The QoS a topic is subscribed with, for its publishers' QoS (``infos``, TopicEndpointInfo list):
    reliable unless ``input_reliability`` is best_effort (or auto and a publisher is best effort), keep-last
    ``depth``, transient_local when every publisher is."""
    reliability = 'reliable'
    if input_reliability == 'best_effort' or (
            input_reliability == 'auto'
            and any(i.qos_profile.reliability != ReliabilityPolicy.RELIABLE for i in infos)):
        reliability = 'best_effort'
    qos = keep_last_qos(reliability, depth)
    # Latched topics (/tf_static, a map, robot_description): their publishers send what they already
    # published only to a transient_local reader, so a volatile one (as before) joining after them
    # recorded the topic with no message at all, and a replay lacked every static transform. As ros2 bag
    # record: transient_local when every publisher offers it (a volatile publisher cannot match it).
    if infos and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos):
        qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos


class QosEvents:
    """The subscriptions' QoS events: messages lost in transport (``_on_lost``), publishers DDS will not match
    (``_on_incompatible``), and how many of those are unmatched now (``_unmatched``, for /diagnostics)."""

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
