"""Helpers for ROS tests: start real nodes in processes, probe them, build messages."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from support.paths import ROOT

from vidseg_ros.ros.camera_io import stamp_ns



def ros_arg(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(ros_arg(v) if not isinstance(v, str) else repr(v) for v in value) + ']'
    return str(value) if value != '' else "''"


def spin_until_shutdown(context, executor) -> None:
    """Spin ``executor`` until ``context`` shuts down: the body of every in-test spin thread."""
    while context.ok():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - shutting down
            return


# The name of in-process segmenters: not the node processes' vidseg_segmenter, whose services (change_state,
# set_parameters) later tests call. A destroyed in-process node stays in the graph while anything references
# it, and a client that matched that ghost first sent its request there (test_segment_params timed out on
# change_state after test_segment_lifecycle_races, on set_parameters after test_segment_multi_camera).
IN_PROCESS = 'vidseg_segmenter_in_process'


@contextlib.contextmanager
def spun(make_node):
    """The node ``make_node(context)`` builds, on an rclpy.Context of its own, spun by a SingleThreadedExecutor
    in a thread (an in-process node: tests can patch it and read its state). Afterwards the executor stops,
    the node is destroyed and the context shut down."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = make_node(context)
    except BaseException:
        rclpy.try_shutdown(context=context)
        raise
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=spin_until_shutdown, args=(context, executor), daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        thread.join(5)


class NodeProcess:
    """A node started as `python -m module --ros-args ...`; logs to a file shown on failure."""

    def __init__(self, module: str, params: dict | None = None, remaps: dict | None = None,
                 log_dir: Path | None = None, name: str | None = None):
        args = [sys.executable, '-m', module, '--ros-args']
        for k, v in (params or {}).items():
            args += ['-p', f'{k}:={ros_arg(v)}']
        for k, v in (remaps or {}).items():
            args += ['-r', f'{k}:={v}']
        if name:
            args += ['-r', f'__node:={name}']
        self.log_path = (log_dir or Path('/tmp')) / f'{module.rsplit(".", 1)[-1]}_{os.getpid()}_{time.time_ns()}.log'
        self._log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                     cwd=str(ROOT))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Probe:
    """An in-test rclpy node spun in a background thread, with message collectors."""

    def __init__(self, name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=spin_until_shutdown, args=(self.context, self.executor), daemon=True)
        self._thread.start()

    def get_parameters(self, node_name: str, names: list[str], timeout: float = 10.0) -> dict:
        """Another node's parameter values through its GetParameters service (what `ros2 param get` does)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        client = self.node.create_client(GetParameters, f'{node_name}/get_parameters')
        try:
            assert client.wait_for_service(timeout_sec=timeout), f'{node_name} offers no parameter services'
            future = client.call_async(GetParameters.Request(names=list(names)))
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert future.done(), f'{node_name}/get_parameters did not answer within {timeout} s'
            return dict(zip(names, (parameter_value_to_python(v) for v in future.result().values)))
        finally:
            self.node.destroy_client(client)

    def collect(self, msg_type, topic: str, qos=10, stamp_received=False) -> list:
        """Subscribe and return the list messages are appended to ((msg, wall-clock ns received) when asked)."""
        out: list = []

        def cb(msg):
            with self.lock:
                out.append((msg, time.time_ns()) if stamp_received else msg)
        self.node.create_subscription(msg_type, topic, cb, qos)
        return out

    def wait_for(self, predicate, timeout: float, what: str = 'condition', proc: NodeProcess | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            if proc is not None and not proc.alive():
                raise AssertionError(f'node died while waiting for {what}:\n{proc.log()[-3000:]}')
            time.sleep(0.05)
        log = f'\nnode log:\n{proc.log()[-3000:]}' if proc is not None else ''
        raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}{log}')

    def wait_for_subscribers(self, publisher, count=1, timeout=20.0, proc=None):
        self.wait_for(lambda: publisher.get_subscription_count() >= count, timeout,
                      f'{count} subscriber(s) on {publisher.topic_name}', proc)

    def publishers(self, proc: NodeProcess, *topics, msg_type=None, settle_s: float = 1.0, timeout=60.0):
        """Reliable publishers on ``topics`` ((type, topic) pairs or topics of ``msg_type``), returned
        once the node under test subscribes to each and its output publishers have seen ours."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pubs = []
        for t in topics:
            mtype, topic = t if isinstance(t, tuple) else (msg_type, t)
            pub = self.node.create_publisher(mtype, topic, qos)
            self.wait_for_subscribers(pub, proc=proc, timeout=timeout)
            pubs.append(pub)
        time.sleep(settle_s)  # the node's output publishers discover our subscriptions
        return pubs

    def close(self):
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)


def image_msg(rgb, stamp_ns: int, frame_id='camera', encoding='rgb8'):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from vidseg_ros.ros.conversions import array_to_image_msg
    header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                    frame_id=frame_id)
    return array_to_image_msg(rgb, encoding, header)


def stamp_of(msg) -> int:
    return stamp_ns(msg.header.stamp)


def diag_values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def process_resources(pid: int) -> dict:
    """{'rss_kb', 'threads', 'fds'} of a live process, from /proc (for leak checks under repetition)."""
    fields = dict(line.split(':', 1) for line in Path(f'/proc/{pid}/status').read_text().splitlines() if ':' in line)
    return {'rss_kb': int(fields['VmRSS'].split()[0]), 'threads': int(fields['Threads']),
            'fds': len(os.listdir(f'/proc/{pid}/fd'))}


def node_entities(probe: Probe, name: str, namespace: str = '/') -> dict:
    """{'publishers', 'subscriptions', 'services'}: the topic and service names a node has in the ROS graph."""
    n = probe.node
    return {'publishers': sorted(t for t, _ in n.get_publisher_names_and_types_by_node(name, namespace)),
            'subscriptions': sorted(t for t, _ in n.get_subscriber_names_and_types_by_node(name, namespace)),
            'services': sorted(t for t, _ in n.get_service_names_and_types_by_node(name, namespace))}
