"""Helpers for ROS tests: start real nodes in processes, probe them, build messages."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
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

    def get_parameters(self, node_name: str, names: list[str], timeout: float = 10.0,
                       proc: NodeProcess | None = None) -> dict:
        """Another node's parameter values through its GetParameters service (what `ros2 param get` does); asked
        again when no answer came and ``proc``'s log shows FastDDS dropped it (see call_service)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        answer = call_service(self, proc, GetParameters, f'{node_name}/get_parameters',
                              GetParameters.Request(names=list(names)), answer_s=timeout)
        return dict(zip(names, (parameter_value_to_python(v) for v in answer.values)))

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


# --- Service calls that survive a lost answer ---------------------------------------------------------------------
# A node serves a request and sends its answer, but FastDDS drops the answer while discovery has not yet matched the
# node's response writer with a new client's reader: the node logs 'failed to send response (timeout): client will
# not receive response' and the client waits in vain (CI: test_segment_params' set_parameters after 30 s,
# test_leaks_segment's first configure after 60 s, nothing wrong in the node). A request whose service changes nothing
# when asked again (IDEMPOTENT) is then sent again; change_state is looked up with get_state (Lifecycle); any other
# (std_srvs Trigger: split, snapshot, reset, pause, resume) is served already: the caller says whether its effect,
# which the test checks, is enough (lost_ok) or the test needs the answer (a clear failure saying it was dropped).
DROPPED = 'failed to send response'
IDEMPOTENT = frozenset({'get_parameters', 'set_parameters', 'describe_parameters', 'list_parameters',
                        'get_parameter_types', 'get_state', 'get_available_states', 'get_available_transitions'})
ANSWER_S = 30.0      # one answer, a model load on a busy machine included (normally well under 1 s)
DEADLINE_S = 120.0   # one transition or state query, all tries together
TRIES = 3            # an idempotent request, sent at most this often while its answers are dropped
# (state before, state after) of each transition Lifecycle asks for
STATES = {Transition.TRANSITION_CONFIGURE: ('unconfigured', 'inactive'),
          Transition.TRANSITION_ACTIVATE: ('inactive', 'active'),
          Transition.TRANSITION_DEACTIVATE: ('active', 'inactive'),
          Transition.TRANSITION_CLEANUP: ('inactive', 'unconfigured')}
PRIMARY = {'unconfigured', 'inactive', 'active', 'finalized'}

_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # rclpy node -> {(type, service): client}


class ProcessLog:
    """alive() and log() of a node started with subprocess.Popen writing to ``log_path`` (as NodeProcess has)."""

    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.proc, self.log_path = popen, Path(log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ''


def _tail(proc) -> str:
    return f'\nnode log:\n{proc.log()[-3000:]}' if proc is not None else ''


class ServiceCaller:
    """Calls to the services of one node process (``proc``: alive() and log(), or None where there is no log) from
    ``probe``: a Probe (spun in its thread) or an rclpy node that ``spin(timeout_s)`` spins while an answer is awaited.
    One client per service and caller node, kept: discovery of a new client takes seconds on a busy machine."""

    def __init__(self, probe, proc, spin=None):
        self.node = getattr(probe, 'node', probe)
        self.proc, self.spin = proc, spin
        self.unanswered = 0   # requests whose answer did not come

    def client(self, srv_type, service: str, wait: bool = True):
        """The client of ``service`` (made once: discovery starts then), ready when ``wait`` (up to 60 s)."""
        clients = _clients.setdefault(self.node, {})
        key = (srv_type, service)
        if key not in clients:
            clients[key] = self.node.create_client(srv_type, service)
        client = clients[key]
        deadline = time.monotonic() + 60
        while wait and not client.service_is_ready():
            assert self.proc is None or self.proc.alive(), f'node died waiting for {service}{_tail(self.proc)}'
            assert time.monotonic() < deadline, f'no {service} service within 60 s{_tail(self.proc)}'
            time.sleep(0.05)
        return client

    def _send(self, client, request):
        return client.call_async(request)

    def drops(self) -> int:
        """How often the node's log says an answer was dropped."""
        return self.proc.log().count(DROPPED) if self.proc is not None else 0

    def answer(self, client, request, answer_s: float = ANSWER_S):
        """The answer to ``request`` sent once, or None when none came within ``answer_s`` (the node must stay
        alive)."""
        future = self._send(client, request)
        deadline = time.monotonic() + answer_s
        while not future.done() and time.monotonic() < deadline:
            assert self.proc is None or self.proc.alive(), \
                f'node died waiting for {client.srv_name}{_tail(self.proc)}'
            if self.spin is not None:
                self.spin(0.05)
            else:
                time.sleep(0.02)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
        self.unanswered += 1
        return None

    def call(self, srv_type, service: str, request, answer_s: float = ANSWER_S, lost_ok: bool = False):
        """The answer of ``service`` (a full name) to ``request``. No answer within ``answer_s``: an IDEMPOTENT
        request is sent again (up to TRIES in all) when the node's log shows the answer dropped (or there is no log
        to look at); another returns None when the log shows the drop and ``lost_ok`` (the request was served; the
        test checks its effect). Anything else fails: no answer and no drop, or a dropped answer the test needs."""
        client = self.client(srv_type, service)
        idempotent = service.rsplit('/', 1)[-1] in IDEMPOTENT
        for _ in range(TRIES if idempotent else 1):
            drops = self.drops()
            answer = self.answer(client, request, answer_s)
            if answer is not None:
                return answer
            dropped = self.drops() > drops
            if not (dropped or (idempotent and self.proc is None)):
                raise AssertionError(f'{service} did not answer within {answer_s:.0f} s (and the node did not '
                                     f'log a dropped answer){_tail(self.proc)}')
            if not idempotent:
                if lost_ok:
                    return None
                raise AssertionError(f'{service}: the node served the request but FastDDS dropped its answer '
                                     f"('{DROPPED}' in its log), which this test needs{_tail(self.proc)}")
        raise AssertionError(f'{service}: {TRIES} answers dropped in a row{_tail(self.proc)}')


def call_service(probe, proc, srv_type, service: str, request, answer_s: float = ANSWER_S, lost_ok: bool = False,
                 spin=None):
    """ServiceCaller(probe, proc, spin).call(srv_type, service, request, answer_s, lost_ok): see there."""
    return ServiceCaller(probe, proc, spin).call(srv_type, service, request, answer_s, lost_ok)


class Lifecycle(ServiceCaller):
    """change_state / get_state calls to the lifecycle node ``name`` that survive a lost answer.

    An answer not there after ``answer_s`` is looked up with get_state (which changes nothing, so it is simply asked
    again): the transition done -> go on; the node still in the state before -> the request is sent again (it may
    have been lost too); anything else, or nothing within DEADLINE_S, fails. A transition the node refuses (success
    false) fails at once."""

    def __init__(self, probe, proc, name: str = 'vidseg_segmenter', answer_s: float = ANSWER_S, spin=None):
        super().__init__(probe, proc, spin)
        self.answer_s = answer_s
        name = name if name.startswith('/') else f'/{name}'
        self.change = self.client(ChangeState, f'{name}/change_state')
        self.get = self.client(GetState, f'{name}/get_state')
        self.sent = 0         # change_state requests sent

    def state(self, deadline: float | None = None) -> str:
        """The node's lifecycle state label (asked again while the answer is lost)."""
        deadline = deadline or time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            answer = self.answer(self.get, GetState.Request(), self.answer_s)
            if answer is not None:
                return answer.current_state.label
        raise AssertionError(f'no get_state answer within {DEADLINE_S:.0f} s ({self.unanswered} request(s) '
                             f'unanswered){_tail(self.proc)}')

    def transition(self, tid: int) -> None:
        """Ask for transition ``tid`` (Transition.TRANSITION_*, one of STATES) and see it done (success, or the
        node in the state after it)."""
        before, after = STATES[tid]
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            self.sent += 1
            answer = self.answer(self.change, ChangeState.Request(transition=Transition(id=tid)), self.answer_s)
            if answer is not None:
                assert answer.success, f'transition {tid} refused{_tail(self.proc)}'
                return
            state = self.state(deadline)
            while state not in PRIMARY and time.monotonic() < deadline:   # still configuring, cleaning up...
                time.sleep(0.2)
                state = self.state(deadline)
            if state == after:    # served; only its answer was lost
                return
            assert state == before, f'transition {tid}: the node is {state}, not {after}{_tail(self.proc)}'
        raise AssertionError(f'transition {tid} ({before} -> {after}) not done within {DEADLINE_S:.0f} s '
                             f'({self.unanswered} request(s) unanswered){_tail(self.proc)}')


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
