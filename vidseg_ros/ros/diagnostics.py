"""DiagnosticStatus builders shared by the nodes."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from vidseg_ros.data.images import SHORT_TEXT

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
STALE = DiagnosticStatus.STALE   # the last status of a source that stops reporting (deactivate, exit)
LEVELS = {'OK': OK, 'WARN': WARN, 'ERROR': ERROR}   # health.assess levels -> DiagnosticStatus levels


def key_values(values: dict) -> list[KeyValue]:
    """Flat {key: value} -> KeyValue list; floats get 3 decimals so dashboards stay readable."""
    out = []
    for key, value in values.items():
        text = f'{value:.3f}' if isinstance(value, float) else str(value)
        out.append(KeyValue(key=str(key), value=text))
    return out


def latency_values(summary: dict[str, dict[str, float]]) -> dict[str, float]:
    """LatencyStats.summary() -> {'<stage>_ms_p50': .., '<stage>_ms_p95': .., '_p99', '_max'}."""
    out = {}
    for stage in sorted(summary):
        for q in ('p50', 'p95', 'p99', 'max'):
            out[f'{stage}_ms_{q}'] = summary[stage][q]
    return out


def status(name: str, hardware_id: str, level, message: str, values: dict) -> DiagnosticStatus:
    if len(message) > 2 * SHORT_TEXT:  # messages quote inputs: never a 1 MB frame_id in every status
        message = message[:2 * SHORT_TEXT] + '...'
    return DiagnosticStatus(level=level, name=name, hardware_id=hardware_id, message=message,
                            values=key_values(values))


def array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg


def steady_timer(node, period_s: float, callback):
    """A timer for /diagnostics on the steady clock: with use_sim_time and no /clock publisher a ROS-clock
    timer never fires, and monitors took the silent node for dead (the stamps stay the node clock's)."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


def publisher(node):
    """The node's /diagnostics publisher: reliable, KEEP_LAST 1 (diagnostic_updater's depth too; every array holds
    all of the node's statuses, only the newest matters). Depth 1 is also what lets ``last_word`` end at once: a
    FastDDS reader acknowledges only in answer to a writer's HEARTBEAT, which the writer sends with a sample only
    when that fills its history (or a send buffer's worth of bytes went out), else every heartbeat period (3 s).
    At depth 10 the last status waited its whole ``wait_s`` almost every time, though the reader had it."""
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    return node.create_publisher(DiagnosticArray, '/diagnostics', qos)


def last_word(publisher, build, wait_s: float, logger) -> bool:
    """A node's last /diagnostics array (``build()``), published as it stops serving, then up to ``wait_s`` for
    reliable readers to take it: the process may end next, and monitors keep the status before for good. True when
    every reliable reader acknowledged it (a reader gone without a word never does: the wait ends at ``wait_s``).
    Never raises: with the context already shut down (an external shutdown) there is nobody to tell."""
    try:
        publisher.publish(build())
        return publisher.wait_for_all_acked(Duration(seconds=wait_s))
    except Exception as e:  # noqa: BLE001 - see above
        logger.debug(f'last /diagnostics status not sent: {e}')
        return False
