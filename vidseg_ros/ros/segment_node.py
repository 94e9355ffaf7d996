"""segment_node: video semantic segmentation of one or more cameras with one model.

Callbacks only park the newest message in a one-slot mailbox per camera (latest frame wins, the
executor never blocks); one inference worker thread serves the cameras round-robin, runs the stateful
engine and publishes every output with the input header. Bad messages are counted, logged (throttled)
and reported on /diagnostics; the node keeps serving the next good frame.
"""
from __future__ import annotations

import dataclasses
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String
from std_srvs.srv import Trigger

from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.outputs import ClassTable
from vidseg_ros.ros.camera_stream import CameraStream, qos_profile
from vidseg_ros.ros.params import declare_settings, read_settings, validate_changes
from vidseg_ros.ros.settings import SegmentNodeConfig

# Changing these rebuilds the engine (new weights/device); the others apply on the next frame.
RELOAD_KEYS = {'model', 'device', 'precision', 'channels_last', 'compile', 'input_hw'}
# Changing these needs new subscriptions/publishers: refused at run time, set them at start-up.
STARTUP_ONLY_KEYS = {'transport', 'cameras', 'input_reliability', 'input_depth', 'output_reliability',
                     'output_depth', 'use_camera_info'}


def load_engine(cfg: EngineConfig):
    """Build the StreamSegmenter (imported here so `--help`-style uses stay light)."""
    from vidseg_ros.engine.stream import StreamSegmenter
    return StreamSegmenter.from_checkpoint(cfg)


class SegmentNode(Node):
    """ROS adapter around the streaming engine; see the README for topics, parameters and services."""

    def __init__(self, node_name: str = 'vidseg_segmenter', **kwargs):
        super().__init__(node_name, **kwargs)
        declare_settings(self, EngineConfig, SegmentNodeConfig)
        self.engine_cfg: EngineConfig = read_settings(self, EngineConfig)
        self.cfg: SegmentNodeConfig = read_settings(self, SegmentNodeConfig)
        self._lock = threading.Condition()
        self._stop = False
        self._pending_engine_cfg: EngineConfig | None = None
        self._rr = 0
        self.engine = load_engine(self.engine_cfg)
        self.table = self._class_table(self.cfg)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_table = self.create_publisher(String, '~/class_table', latched)
        self.pub_table.publish(String(data=self.table.to_json()))
        names = self.cfg.cameras or ['']
        self.streams = [CameraStream(self, ns, self.engine if i == 0 else self.engine.fork())
                        for i, ns in enumerate(names)]
        from diagnostic_msgs.msg import DiagnosticArray
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', qos_profile('reliable', 10))
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.diag_timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics)
        self.worker = threading.Thread(target=self._work, name='vidseg_inference', daemon=True)
        self.worker.start()
        trained = getattr(self.engine, 'trained', True)
        self.get_logger().info(
            f'model {self.engine.model_name} on {self.engine.device} ({self.engine_cfg.precision}), '
            f'{len(self.table.names)} classes, cameras: {", ".join(n or "image" for n in names)}')
        if not trained:
            self.get_logger().warn('UNTRAINED weights: masks are meaningless until a trained model is loaded')

    # ---- configuration -------------------------------------------------------------------------
    def _class_table(self, cfg: SegmentNodeConfig) -> ClassTable:
        return ClassTable.build(self.engine.classes, self.engine.palette, name_override=cfg.class_names,
                                palette_override=cfg.palette, remap=cfg.class_remap,
                                ignore=cfg.ignore_classes, ignore_value=cfg.ignore_value)

    def _on_set_parameters(self, params):
        result, changes = validate_changes(self, params, EngineConfig, SegmentNodeConfig)
        if not result.successful:
            return result
        fixed = STARTUP_ONLY_KEYS & set(changes)
        if fixed:
            result.successful = False
            result.reason = f'{", ".join(sorted(fixed))} can only be set at start-up'
            return result
        node_changes = {k: v for k, v in changes.items() if k in SegmentNodeConfig.__dataclass_fields__}
        engine_changes = {k: v for k, v in changes.items() if k in EngineConfig.__dataclass_fields__}
        try:
            new_cfg = dataclasses.replace(self.cfg, **node_changes)
            new_table = self._class_table(new_cfg)
        except ValueError as e:
            result.successful = False
            result.reason = str(e)
            return result
        with self._lock:
            self.cfg, self.table = new_cfg, new_table
            if engine_changes:
                self._pending_engine_cfg = dataclasses.replace(self._pending_engine_cfg or self.engine_cfg,
                                                               **engine_changes)
        self.pub_table.publish(String(data=new_table.to_json()))
        return result

    def _apply_pending_engine_cfg(self) -> None:
        """Runs in the worker between frames, so the engine never changes under a running step."""
        with self._lock:
            new, self._pending_engine_cfg = self._pending_engine_cfg, None
        if new is None:
            return
        changed = {f for f in RELOAD_KEYS if getattr(new, f) != getattr(self.engine_cfg, f)}
        if changed:
            try:
                engine = load_engine(new)
            except Exception as e:  # noqa: BLE001 - any load failure keeps the old model serving
                self.get_logger().error(f'cannot load model {new.model!r}: {e}; keeping {self.engine.model_name}')
                for s in self.streams:
                    s.note_error('model_load', str(e))
                return
            self.engine, self.engine_cfg = engine, new
            for i, s in enumerate(self.streams):
                s.engine = engine if i == 0 else engine.fork()
            with self._lock:
                self.table = self._class_table(self.cfg)
            self.pub_table.publish(String(data=self.table.to_json()))
            self.get_logger().info(f'loaded model {engine.model_name} on {engine.device}')
        else:
            self.engine_cfg = new
            for s in self.streams:
                s.engine.update_config(new)

    # ---- worker --------------------------------------------------------------------------------
    def _next_job(self):
        with self._lock:
            while not self._stop:
                n = len(self.streams)
                for k in range(n):
                    stream = self.streams[(self._rr + k) % n]
                    job = stream.take()
                    if job is not None:
                        self._rr = (self._rr + k + 1) % n  # fair: next search starts after this camera
                        return stream, job
                self._lock.wait(timeout=0.5)
        return None

    def _work(self) -> None:
        while True:
            item = self._next_job()
            if item is None:
                return
            self._apply_pending_engine_cfg()
            stream, job = item
            with self._lock:
                cfg, table = self.cfg, self.table
            stream.process(job, cfg, table)

    # ---- services and diagnostics --------------------------------------------------------------
    def _on_reset(self, request, response):
        for s in self.streams:
            s.request_reset()
        response.success = True
        response.message = f'temporal state of {len(self.streams)} camera(s) will reset on the next frame'
        return response

    def _publish_diagnostics(self) -> None:
        from vidseg_ros.ros import diagnostics
        statuses = [s.diagnostic_status(self.engine_cfg) for s in self.streams]
        self.pub_diag.publish(diagnostics.array(self.get_clock().now().to_msg(), statuses))

    def destroy_node(self):
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        if self.worker.is_alive():
            self.worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SegmentNode()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # noqa: BLE001 - start-up failures (bad model, bad params) exit with a clear line
        print(f'segment_node: {type(e).__name__}: {e}', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
