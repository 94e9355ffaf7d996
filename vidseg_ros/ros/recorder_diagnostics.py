"""recorder_node's /diagnostics: one status for the recorder plus one per topic, each with its losses, and the
last word at exit (STALE 'stopped: ...', or the ERROR that stopped recording).

``RecorderDiagnostics`` is a part of :class:`vidseg_ros.ros.recorder_node.RecorderNode` (it reads the node's
``recorder``, ``lost``, ``incompatible``, ``unrecorded``, ``unloadable``, clock-jump counts and ``_close_result``,
and publishes on its ``pub_diag``).
"""
from __future__ import annotations

import time

from vidseg_ros.ros.diagnostics import ERROR, OK, STALE, WARN, array, status
from vidseg_ros.text import clip


class RecorderDiagnostics:
    """``publish_diagnostics`` (on a steady timer) and ``diagnostics_array`` (also at exit, ``final``)."""

    def publish_diagnostics(self) -> None:
        self.pub_diag.publish(self.diagnostics_array())

    def diagnostics_array(self, final: bool = False):
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
        return array(self.get_clock().now().to_msg(), statuses)

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
