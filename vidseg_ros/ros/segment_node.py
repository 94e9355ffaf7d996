"""segment_node: video semantic segmentation of one or more cameras with one model.

Callbacks only park the newest message in a one-slot mailbox per camera (latest frame wins, the
executor never blocks); one inference worker thread serves the cameras round-robin, runs the stateful
engine and publishes every output with the input header. Bad messages are counted, logged (throttled)
and reported on /diagnostics; the node keeps serving the next good frame. Should the worker thread
itself end (a bug), /diagnostics goes ERROR and the process exits with status 1, so `respawn` restarts it.

Two front-ends share the `SegmentNodeCore`: `SegmentNode` (starts at once) and `SegmentLifecycleNode`
(in `segment_lifecycle_node`: configure loads the model, activate starts topics, deactivate stops them,
cleanup releases the model and its GPU memory).
"""
from __future__ import annotations

if __name__ == '__main__':   # python -m: through entry, whose signal handlers cover the imports below
    from vidseg_ros.ros.entry import run_as_main
    run_as_main('vidseg_ros.ros.segment_node')

import gc
import threading
import time

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String
from std_srvs.srv import Trigger

from vidseg_ros.config import ConfigError
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import StreamSegmenter
from vidseg_ros.engine.outputs import ClassTable
from vidseg_ros.ros import diagnostics, health
from vidseg_ros.ros.camera_stats import ClockStep
from vidseg_ros.ros.camera_stream import CameraStream
from vidseg_ros.ros.core_logging import adopt
from vidseg_ros.ros.params import declare_settings, read_settings
from vidseg_ros.ros.segment_diagnostics import SegmentReports
from vidseg_ros.ros.segment_param_changes import ParameterChanges
from vidseg_ros.ros.segment_worker import InferenceWorker
from vidseg_ros.ros.settings import SegmentNodeConfig
from vidseg_ros.ros.spin import Interrupted, interruptible, join_unless_stopped, run
from vidseg_ros.text import short

STOP_WAIT_S = 10.0   # deactivate waits this long for the frame in inference, then leaves the worker to it
# The process ends (destroy_node): ros2 launch sends SIGTERM 5 s after its SIGINT, SIGKILL 5 s after that, and a
# worker stuck on a frame held the exit for STOP_WAIT_S. At exit it is waited for this long, then left.
EXIT_WAIT_S = 2.0


def load_engine(cfg: EngineConfig) -> StreamSegmenter:
    """Build the StreamSegmenter; changing REBUILD_FIELDS at run time goes through here again."""
    return StreamSegmenter.from_checkpoint(cfg)


class SegmentNodeCore(ParameterChanges, InferenceWorker, SegmentReports):
    """The node's behaviour, independent of plain or lifecycle node: load, start, stop, release. Its parameter
    changes (``segment_param_changes``), inference worker (``segment_worker``), ~/reset and /diagnostics
    (``segment_diagnostics``) are in modules of their own."""

    def __init__(self, node: Node):
        self.node = node
        declare_settings(node, EngineConfig, SegmentNodeConfig)
        self.engine_cfg: EngineConfig = read_settings(node, EngineConfig)   # what the engine runs
        # What the parameters say: applied by load(), by start() and by the worker between frames, never
        # by the parameter callback, so the engine never changes under a running step.
        self._wanted: EngineConfig = self.engine_cfg
        self.cfg: SegmentNodeConfig = read_settings(node, SegmentNodeConfig)
        self._lock = threading.Condition()
        # Each worker has its own stop event: one that deactivate gave up waiting for ends after its frame
        # and, seeing its event set, never touches the engine or the parameters again.
        self._stopping = threading.Event()
        self._stopping.set()
        self._rolling_back = None    # the thread setting the parameters back to the serving model
        # Held by a rollback from its choice of values until rclpy has stored them, and by the parameter
        # callback: a `ros2 param set` landing in between was overwritten by the rollback (then served unnamed).
        self._params_lock = threading.RLock()
        self.fatal = ''              # why the worker ended, when it did while serving
        # (monotonic start, its CameraStream) of the frame in the worker, None when idle: one tuple, so the
        # diagnostics timer never reads one frame's start with another camera's name
        self._busy: tuple[float, CameraStream] | None = None
        self._loading: tuple[float, str] | None = None   # (monotonic start, model) of a load in the worker
        self.worker_left = False      # destroy_node left the worker on its frame (EXIT_WAIT_S): spin.run exits hard
        self.loader: threading.Thread | None = None   # a model load a stop signal interrupted the wait for
        self._rr = 0
        self.engine = None
        self.table: ClassTable | None = None
        self.streams: list[CameraStream] = []
        self.worker: threading.Thread | None = None
        self.diag_timer = None
        self.clock_step = ClockStep(node.get_clock())   # one per node: every camera's stamps meet this clock
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_table = node.create_publisher(String, '~/class_table', latched)
        self.pub_diag = diagnostics.publisher(node)
        # The worker thread signals its own end through this; the executor thread reports it and exits.
        self._worker_died = node.create_guard_condition(self._on_worker_died)
        node.create_service(Trigger, '~/reset', self._on_reset)
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # ---- lifecycle -----------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model the parameters name and build the class table (raises with a clear message)."""
        with self._lock:
            wanted, cfg = self._wanted, self.cfg
        self.engine, self.table = self._build(wanted, cfg)
        self.engine_cfg = wanted
        self._announce()

    def start(self) -> bool:
        """Create the camera subscriptions/publishers and start the inference worker; False (ERROR log)
        while the worker of the last activation is still on a frame: it alone may touch the engine."""
        if self.worker is not None and self.worker.is_alive():
            self.node.get_logger().error(f'cannot start serving: the inference worker is still {self.worker_doing()}; '
                                         f'it ends after that, try again then')
            return False
        self.streams = []
        try:
            for i, ns in enumerate(self.cfg.cameras or ['']):
                self.streams.append(CameraStream(self.node, ns, self.engine if i == 0 else self.engine.fork(),
                                                 self._lock, self.cfg, self.clock_step))
        except BaseException:   # the cameras before the one that failed go too (activate fails: stop() ends none)
            for s in self.streams:
                s.destroy()
            self.streams = []
            raise
        stopping = threading.Event()
        self._apply_wanted(stopping)   # changed while inactive: as in the worker, a failed load rolls back
        self._stopping = stopping
        self.fatal = ''
        self.worker = threading.Thread(target=self._work, args=(stopping,), name='vidseg_inference', daemon=True)
        self.worker.start()
        self.diag_timer = diagnostics.steady_timer(self.node, self.cfg.diagnostics_period_s, self._publish_diagnostics)
        self.node.get_logger().info(f'serving camera(s): {", ".join(s.name for s in self.streams)}')
        return True

    def stop(self, exiting: bool = False, why: str = '') -> bool:
        """Stop the worker and remove the camera topics (the model stays loaded); each camera's last /diagnostics
        status is STALE, 'inactive: ``why``' (default: deactivated, node stopped). A worker still on its frame
        after STOP_WAIT_S (EXIT_WAIT_S when ``exiting``: the process ends) is left to end after it; with the topics
        gone it publishes nothing. False when the worker was left so."""
        wait_s = EXIT_WAIT_S if exiting else STOP_WAIT_S
        with self._lock:
            self._stopping.set()
            self._lock.notify_all()
        left = self.worker is not None and self.worker.is_alive()
        if left:
            # a deactivate waiting for a stuck frame gives up at a stop signal: the exit waits EXIT_WAIT_S itself
            join_unless_stopped(self.worker, wait_s)
            left = self.worker.is_alive()
        if left and exiting:
            self.worker_left = True
            # WARN, not ERROR: a model swap set just before the signal loads for seconds on a CPU, and a stuck frame
            # is an ERROR on /diagnostics already
            self.node.get_logger().warning(f'exiting without waiting longer for the inference worker, still '
                                           f'{self.worker_doing()}')
        elif left:
            self.node.get_logger().warning(f'stopped serving with the inference worker still {self.worker_doing()} '
                                           f'after {wait_s:.0f} s; it ends after that')
        if self.diag_timer is not None:
            self.node.destroy_timer(self.diag_timer)
            self.diag_timer = None
        self._publish_last_status(f'inactive: {why or ("node stopped" if exiting else "deactivated")}')
        for s in self.streams:
            s.destroy()
        self.streams = []
        return not left

    def left_running(self) -> bool:
        """A thread of ours still runs after destroy: the worker left on its frame, or an interrupted model load."""
        return self.worker_left or (self.loader is not None and self.loader.is_alive())

    def worker_doing(self) -> str:
        """What the worker is on, for logs (``health.worker_activity``)."""
        busy = self._busy
        return health.worker_activity(busy and (busy[0], busy[1].name, busy[1].stage), self._loading, time.monotonic())

    def release(self) -> None:
        """Drop the model and give its (GPU) memory back."""
        self.engine = None
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # ---- configuration -------------------------------------------------------------------------
    def _build(self, engine_cfg: EngineConfig, cfg: SegmentNodeConfig):
        """(engine, class table) for these settings, warmed up (raises with a clear message on failure). In the
        main thread (start-up, configure, activate) a SIGINT/SIGTERM interrupts the wait for it (``interruptible``:
        Interrupted, after one log line; the load is left to its thread)."""
        def build():
            engine = load_engine(engine_cfg)
            self._check_classes(cfg, engine)
            table = self._class_table(cfg, engine)
            if all(engine.net_hw):
                engine.warmup()   # the first camera frame should not pay for allocation/kernel choice
            return engine, table
        try:
            return interruptible(build, 'vidseg_model_load')
        except Interrupted as e:
            self.loader = e.thread
            self.node.get_logger().warning(f'stopping while loading model {short(engine_cfg.model or "(default)")}: '
                                           f'not waiting for the load')
            raise

    def _announce(self) -> None:
        """Latch the class table and log the model now serving."""
        self._latch_table()
        log = self.node.get_logger()
        log.info(f'model {self.engine.model_name} on {self.engine.device} ({self.engine_cfg.precision}), '
                 f'{len(self.table.names)} classes')
        if not self.engine.trained:
            log.warning('UNTRAINED weights: masks are meaningless until a trained model is loaded')

    def _latch_table(self) -> None:
        """Publish the table serving now on ~/class_table. Under the lock: a table the parameter callback built
        for the model the worker was replacing never goes out after the new model's."""
        with self._lock:
            self.pub_table.publish(String(data=self.table.to_json()))

    def _class_table(self, cfg: SegmentNodeConfig, engine=None) -> ClassTable:
        engine = engine or self.engine
        return ClassTable.build(engine.classes, engine.palette, name_override=cfg.class_names,
                                palette_override=cfg.palette, remap=cfg.class_remap,
                                ignore=cfg.ignore_classes, ignore_value=cfg.ignore_value)

    @staticmethod
    def _check_classes(cfg: SegmentNodeConfig, engine) -> None:
        """Settings that depend on the model's classes (re-checked whenever the model changes)."""
        n = len(engine.classes)
        if cfg.class_prob_index >= n:
            raise ConfigError(f'class_prob_index {cfg.class_prob_index} is out of range for model '
                              f'{engine.model_name} ({n} classes: 0..{n - 1}, or -1 = off)')


class CoreEnds:
    """How a node holding a ``SegmentNodeCore`` as ``self.core`` ends: the plain and the lifecycle node alike."""

    def destroy_node(self):
        self.core.stop(exiting=True)
        return super().destroy_node()

    def abandoned(self) -> bool:
        """The worker was left on its frame, or a model load, at exit (``spin.run`` then ends the process without
        waiting on it)."""
        return self.core.left_running()


class SegmentNode(CoreEnds, Node):
    """Plain node: loads the model and starts serving at construction."""

    def __init__(self, node_name: str = 'vidseg_segmenter', **kwargs):
        super().__init__(node_name, **kwargs)
        adopt(self)   # the core's log lines (model load, bag files) come as this node's
        self.core = SegmentNodeCore(self)
        try:
            self.core.load()
        except Interrupted:   # stopped while loading: constructed, not serving; the spin loop ends at once
            return
        self.core.start()


def main(args=None) -> int:
    return run(SegmentNode, args, end_process=True)   # no finalization of torch's modules: see spin.end_now

