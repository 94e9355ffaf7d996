"""segment_node's run-time parameter changes: check them, take them, and bring the engine to them.

``ParameterChanges`` is a part of :class:`vidseg_ros.ros.segment_node.SegmentNodeCore` (it works on the core's
``_lock``, ``_params_lock``, ``_wanted``, ``cfg``, ``engine``, ``table`` and ``streams``). The parameter
callback only checks and takes a change (``_on_set_parameters``); the engine follows it between frames
(``_apply_wanted``, in the worker or in ``start``), so it never changes under a running step. A model that does
not load keeps the old one serving and sets the parameters back (``_roll_back``).
"""
from __future__ import annotations

import dataclasses
import threading
import time

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from vidseg_ros.config import fields_with
from vidseg_ros.engine.base import EngineConfig
from vidseg_ros.engine.stream import REBUILD_FIELDS
from vidseg_ros.ros.guards import check_device_for_model, check_model_spec
from vidseg_ros.ros.params import validate_changes
from vidseg_ros.ros.settings import SegmentNodeConfig
from vidseg_ros.text import SHORT_TEXT, clip, short

# Changing these needs new subscriptions/publishers: refused at run time, set them at start-up.
STARTUP_ONLY_KEYS = set(fields_with(SegmentNodeConfig, 'startup'))
# a load error names the file, then what to do about it: room for a long path and the advice after it
LOAD_ERROR_TEXT = 2 * SHORT_TEXT


class ParameterChanges:
    """The parameter callback, and the engine following the parameters (model swaps and their roll-back)."""

    def _on_set_parameters(self, params):
        if self._rolling_back is threading.current_thread():   # restoring what is serving
            return SetParametersResult(successful=True)
        with self._params_lock:
            return self._check_and_take(params)

    def _check_and_take(self, params) -> SetParametersResult:
        """The parameter callback's work: refuse what cannot apply, else take the changes."""
        result, changes = validate_changes(self.node, params, EngineConfig, SegmentNodeConfig)
        if not result.successful:
            return result
        try:  # a model or device change must at least resolve here; the load runs in the worker (or activate)
            if 'model' in changes:
                check_model_spec(changes['model'])
            if 'device' in changes or 'model' in changes:   # by the runner that will serve: ONNX or torch
                check_device_for_model(changes.get('device', self._wanted.device),
                                       changes.get('model', self._wanted.model))
        except ValueError as e:
            result.successful = False
            result.reason = str(e)
            return result
        serving = bool(self.streams)
        fixed = STARTUP_ONLY_KEYS & set(changes)
        if fixed and serving:
            result.successful = False
            result.reason = f'{", ".join(sorted(fixed))} can only be set at start-up (or while inactive)'
            return result
        node_changes = {k: v for k, v in changes.items() if k in SegmentNodeConfig.__dataclass_fields__}
        engine_changes = {k: v for k, v in changes.items() if k in EngineConfig.__dataclass_fields__}
        new_table = None
        with self._lock:   # the engine checked is the one serving: the worker swaps it under this lock
            new_cfg = dataclasses.replace(self.cfg, **node_changes)
            if self.engine is not None:
                try:
                    self._check_classes(new_cfg, self.engine)
                    new_table = self._class_table(new_cfg)
                except ValueError as e:
                    result.successful = False
                    result.reason = str(e)
                    return result
            self.cfg = new_cfg
            self.table = new_table or self.table
            self._wanted = dataclasses.replace(self._wanted, **engine_changes)
        if new_table is not None:
            self._latch_table()
        return result

    def _apply_wanted(self, stopping: threading.Event) -> None:
        """Bring the engine to the parameters: in the worker between frames, or in start() before it runs.
        A model that does not load keeps the old one serving (README: run-time changes roll back)."""
        with self._lock:
            new = self._wanted
        serving = {f: getattr(self.engine_cfg, f) for f in REBUILD_FIELDS}
        if any(getattr(new, f) != v for f, v in serving.items()):
            if self._swap_engine(new, stopping):
                return
            new = dataclasses.replace(new, **serving)   # the run-time settings that came with it still apply
        with self._lock:   # the stop check under the lock stop() sets it with: a stopped worker changes nothing
            if new != self.engine_cfg and not stopping.is_set():
                for s in self.streams:
                    s.engine.update_config(new)
                self.engine_cfg = new

    def _swap_engine(self, new: EngineConfig, stopping: threading.Event) -> bool:
        """Load the model of ``new`` and serve it; False (ERROR log, parameters rolled back) when it fails.
        True also when serving stopped during the load: the next start() loads the parameters' model."""
        try:
            with self._lock:
                cfg = self.cfg
            self._loading = (time.monotonic(), new.model)
            try:
                engine, table = self._build(new, cfg)
            finally:
                self._loading = None
            with self._lock:
                if stopping.is_set():
                    return True
                if self.cfg is not cfg:   # class names, palette... set during the load: its table follows them
                    self._check_classes(self.cfg, engine)
                    table = self._class_table(self.cfg, engine)
                self.engine, self.engine_cfg, self.table = engine, new, table
        except Exception as e:  # noqa: BLE001 - any load failure keeps the old model serving
            if stopping.is_set():
                return True
            self.node.get_logger().error(f'cannot load model {short(new.model)} on {short(new.device)}: {clip(e, LOAD_ERROR_TEXT)}; '
                                         f'keeping {self.engine.model_name}')
            for s in self.streams:
                s.note_error('model_load', str(e))
            self._roll_back(new)
            return False
        for i, s in enumerate(self.streams):
            s.engine = engine if i == 0 else engine.fork()
        self._announce()
        return True

    def _roll_back(self, failed: EngineConfig) -> None:
        """After a failed load: the parameters go back to the model that is serving (so `ros2 param get`
        tells the truth), except those set again while it loaded (the newer value is tried next)."""
        with self._params_lock:
            with self._lock:
                restore = {f: getattr(self.engine_cfg, f) for f in REBUILD_FIELDS
                           if getattr(failed, f) != getattr(self.engine_cfg, f)
                           and getattr(self._wanted, f) == getattr(failed, f)}
                self._wanted = dataclasses.replace(self._wanted, **restore)
            if not restore:
                return
            self._rolling_back = threading.current_thread()
            try:
                self.node.set_parameters([Parameter(f, value=v) for f, v in restore.items()])
            finally:
                self._rolling_back = None
