"""The demo (`make demo`): video source -> segment node (-> recorder) on a real video, across processes.

Writes, under --out: overlay.mp4 (every segmented frame), contact_sheet.png (input | overlay pairs),
summary.json / summary.md (latency per stage, rates, drops, model), and the recorded bag when the
recorder is available. Prints what it did and where everything is.

A ROS-side executable (`python -m vidseg_ros.ros.demo --help`), not a `vidseg` command: it starts and
watches ROS processes, and the `vidseg` CLI stays ROS-free (tools and cli sit below ros/ in the layers).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.constants import EXIT_CANNOT_START, MAX_INPUT_PIXELS as MAX_PIXELS
from vidseg_ros.data.images import ImageError
from vidseg_ros.data.sample_video import SampleVideoError, fetch_opencv_sample
from vidseg_ros.files import cv_path
from vidseg_ros.ros.demo_report import legend_classes, legend_strip, report
from vidseg_ros.ros.startup import PROFILE_ENV, domain_id_problem, init_failure, transport_warnings
from vidseg_ros.text import clip, one_line

# The folder vidseg_ros is imported from: a source checkout, or site-packages when installed.
IMPORT_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = IMPORT_ROOT if (IMPORT_ROOT / 'package.xml').is_file() else None


STOP_WAIT_S = 70.0        # a node's exit after SIGINT: the recorder writes what is queued (record.launch.py: 65 s)
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class DemoError(Exception):
    """Bad input or a set-up the demo cannot run in: one line, exit 2."""


def package_file(*parts: str) -> Path | None:
    """A file the package ships (``config/fastdds_shm.xml``): in the checkout, or the installed share dir
    (``model_paths.package_roots``, those holding package.xml). No torch: seconds before the demo said a word."""
    from vidseg_ros.engine.model_paths import package_roots
    for root in package_roots():
        if (root / 'package.xml').is_file() and root.joinpath(*parts).is_file():
            return root.joinpath(*parts)
    return None


def choose_video(arg: str | None) -> tuple[str, str]:
    """(path, description) of the video the demo plays."""
    if arg:
        return arg, 'given with --video'
    # the shared data folder sits beside a checkout; an installed package has only $VIDSEG_DATA
    data = os.environ.get('VIDSEG_DATA') or (CHECKOUT and CHECKOUT.parent / 'shared' / 'data')
    camvid = Path(data) / 'camvid' / 'val' if data else None
    if camvid is not None and camvid.is_dir():
        return str(camvid), 'CamVid val drive 0016E5 (15 Hz, the shipped model\'s domain), read in place'
    try:
        return str(fetch_opencv_sample()), 'opencv-doc sample vtest.avi (pedestrians; outside the driving domain)'
    except SampleVideoError as e:
        raise DemoError(f'{e}; or pass one with --video PATH (make demo VIDEO=PATH)') from e


def choose_model(arg: str | None) -> tuple[str, bool]:
    """(model parameter, trained?) — the shipped default when it exists, else untrained weights."""
    if arg:
        return arg, True
    from vidseg_ros.engine.model_paths import DEFAULT_MODEL, model_dirs   # where the node will look; no torch
    if any((folder / f'{DEFAULT_MODEL}.pt').is_file() for folder in model_dirs()):
        return '', True
    return 'untrained:keyframe_fpn', False


def out_dir(arg: str) -> Path:
    """The output folder, created (relative to the current folder, as any command's output)."""
    out = Path(arg).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(f'cannot create the output folder {out}: {e.strerror or e}; pass --out DIR') from e
    return out


def ros_environment() -> None:
    """Discovery on loopback and the shipped FastDDS profile, unless the user set their own; then every
    problem that would stop ROS (bad domain) or lose frames (missing profile, /dev/shm full), said first."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    if not os.environ.get(PROFILE_ENV):
        profile = package_file('config', 'fastdds_shm.xml')
        if profile is None:
            print('demo: warning: config/fastdds_shm.xml of vidseg_ros not found (neither a checkout nor an '
                  'installed share/vidseg_ros): FastDDS keeps its 512 KB segment and large images will be lost',
                  file=sys.stderr, flush=True)
        else:
            os.environ[PROFILE_ENV] = str(profile)
    if (problem := domain_id_problem()) is not None:
        raise DemoError(problem)
    for warning in transport_warnings():
        print(f'demo: warning: {warning}', file=sys.stderr, flush=True)
    # the nodes run this very package (a checkout's, not another one installed)
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), os.environ.get('PYTHONPATH')]))


def init_ros():
    """rclpy, started before anything else: when ROS cannot start (no log folder: HOME unset or read-only)
    nothing is written and no node is left running. Returns rclpy."""
    import rclpy
    try:
        rclpy.init()
    except RuntimeError as e:   # rclpy's RCLError
        rclpy.try_shutdown()
        raise DemoError(init_failure(e)) from e
    return rclpy


class Collector:
    """Subscribes to the camera and the node's outputs; keeps what the report needs."""

    def __init__(self, node, out_dir: Path, fps: float):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from vidseg_ros.ros.camera_io import stamp_ns   # rclpy only once a demo runs: --help stays light
        from vidseg_ros.ros.conversions import image_msg_to_rgb8
        self.stamp_ns, self.to_rgb8 = stamp_ns, image_msg_to_rgb8
        self.refused: dict[str, int] = {}      # messages not used, by topic
        self.video_hw: tuple[int, int] | None = None
        self.inputs: dict[int, np.ndarray] = {}
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_in = self.n_out = 0
        self.class_hist = np.zeros(256, np.int64)
        self.last_status = None
        self.video_path = out_dir / 'overlay.mp4'
        self.writer = None
        self.fps = fps
        from rclpy.qos import DurabilityPolicy
        from std_msgs.msg import String
        self.classes: list[tuple[int, str, tuple[int, int, int]]] = []    # (published id, name, RGB)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(String, '/vidseg_segmenter/class_table', self._on_table, latched)
        node.create_subscription(Image, 'image', self._on_input, reliable)
        node.create_subscription(Image, '/vidseg_segmenter/overlay', self._on_overlay, reliable)
        node.create_subscription(Image, '/vidseg_segmenter/mask', self._on_mask, reliable)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)

    def _refused(self, topic: str, problem) -> None:
        """A message the demo cannot use (another publisher on its topics, in the user's domain): said once per
        topic, counted, and the demo goes on; a bad one ended the demo with a traceback and no summary."""
        self.refused[topic] = self.refused.get(topic, 0) + 1
        if self.refused[topic] == 1:
            print(f'demo: warning: a message on {topic} was not used: {clip(problem, 300)} (another publisher on '
                  'the demo\'s topics? further ones are counted in summary.json)', file=sys.stderr, flush=True)

    def _rgb(self, topic: str, msg) -> np.ndarray | None:
        try:
            return self.to_rgb8(msg, MAX_PIXELS)
        except ImageError as e:
            self._refused(topic, e)
            return None

    def _on_input(self, msg) -> None:
        if (rgb := self._rgb('/image', msg)) is None:
            return
        self.n_in += 1
        if len(self.inputs) < 200:
            self.inputs[self.stamp_ns(msg.header.stamp)] = rgb

    def _on_mask(self, msg) -> None:
        self.class_hist += np.bincount(np.frombuffer(bytes(msg.data), np.uint8), minlength=256)

    def _on_overlay(self, msg) -> None:
        if (rgb := self._rgb('/vidseg_segmenter/overlay', msg)) is None:
            return
        if self.writer is None:
            self.writer = cv2.VideoWriter(cv_path(self.video_path), cv2.VideoWriter_fourcc(*'mp4v'), self.fps,
                                          (rgb.shape[1], rgb.shape[0]))
            self.video_hw = rgb.shape[:2]
        if rgb.shape[:2] != self.video_hw:     # a video has one frame size
            self._refused('/vidseg_segmenter/overlay', f'{rgb.shape[1]}x{rgb.shape[0]}, the video is '
                                                        f'{self.video_hw[1]}x{self.video_hw[0]}')
            return
        self.n_out += 1
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        src = self.inputs.pop(self.stamp_ns(msg.header.stamp), None)
        if src is not None and src.shape == rgb.shape:     # side by side on the contact sheet
            self.pairs.append((src, rgb))

    def reported(self, key: str) -> int:
        """A counter from the segmenter's last /diagnostics status (0 before the first, or not a count)."""
        value = (self.last_status or {}).get(key, '')
        return int(value) if value.isdigit() else 0

    def segmenter_ready(self, node) -> bool:
        """Model loaded (the latched class table arrives after load) and our output subscriptions
        matched, so that no frame is published before the node can segment it and we can see it."""
        return bool(self.classes) and all(node.count_publishers(f'/vidseg_segmenter/{t}') > 0
                                          for t in ('overlay', 'mask'))

    def _on_table(self, msg) -> None:
        try:
            self.classes = legend_classes(msg.data)
        except ValueError as e:
            self._refused('/vidseg_segmenter/class_table', e)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.startswith('/vidseg_segmenter:'):   # the node's fully qualified name
                self.last_status = {kv.key: kv.value for kv in st.values}

    def contact_sheet(self, path: Path, n: int = 6) -> None:
        if not self.pairs:
            return
        picks = [self.pairs[int(i)] for i in np.linspace(0, len(self.pairs) - 1, min(n, len(self.pairs)))]
        rows = [np.hstack([a, b]) for a, b in picks]
        sheet = np.vstack([self._legend(rows[0].shape[1])] + rows)
        scale = min(1.0, 1600 / sheet.shape[1])
        sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imwrite(cv_path(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))

    def _legend(self, width: int) -> np.ndarray:
        """A strip naming each class colour seen in the masks (share of pixels after the name)."""
        total = max(int(self.class_hist.sum()), 1)
        entries = []
        for class_id, name, color in self.classes:
            share = self.class_hist[class_id] / total
            if share >= 0.001:
                entries.append((f'{clip(name, 40)} {100 * share:.0f}%', color))
        return legend_strip(entries, width)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def start(module: str, params: dict, log: Path) -> subprocess.Popen:
    args = [sys.executable, '-m', module, '--ros-args']
    for k, v in params.items():
        text = json.dumps(v) if isinstance(v, (bool, list)) else str(v)
        args += ['-p', f'{k}:={text or repr("")}']  # `-p x:=` does not parse: pass '' explicitly
    proc = subprocess.Popen(args, stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=os.environ.copy())
    proc.log_path = log
    return proc


def ended(procs: list[subprocess.Popen], what: str, out: Path):
    """The error for a node of ``procs`` that exited: its last log line, which says why (``spin.run``). A node
    that could not start (a --model that does not load: status 2) is the user's input, one line and exit 2; the
    demo said only 'did not come up; see the logs' and exited 1."""
    proc = next(p for p in procs if p.poll() is not None)
    try:
        lines = [ln for ln in proc.log_path.read_text(errors='replace').splitlines() if ln.strip()]
    except OSError:
        lines = []
    why = f'{what}: {one_line(lines[-1], 400) if lines else "(nothing in its log)"} ' \
          f'(exit status {proc.returncode}; logs in {out})'
    return DemoError(why) if proc.returncode == EXIT_CANNOT_START else SystemExit(f'demo: {why}')


def stop(proc: subprocess.Popen) -> None:
    """SIGINT, then its exit; a second Ctrl-C meanwhile does not leave it running (the recorder closes its bag)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_S
    while proc.poll() is None:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            proc.kill()
        except KeyboardInterrupt:
            continue


def run(args) -> dict:
    import rclpy
    out = out_dir(args.out)
    video, video_desc = choose_video(args.video)
    model, trained = choose_model(args.model)
    banner = '' if trained else ('\n*** UNTRAINED WEIGHTS: no trained checkpoint found, masks are meaningless; '
                                 'this run only demonstrates the pipeline ***\n')
    print(f'vidseg demo\n  video : {video}\n          ({video_desc})\n  model : {model or "camvid_keyframe_fpn (default)"}'
          f'\n  output: {out}{banner}', flush=True)
    procs = [start('vidseg_ros.ros.segment_node',
                   {'model': model, 'diagnostics_period_s': 1.0, 'input_reliability': 'reliable',
                    'input_depth': 1}, out / 'segment_node.log')]
    bag = None
    if args.record:
        procs.append(start('vidseg_ros.ros.recorder_node',
                           {'topics': ['/image', '/camera_info', '/vidseg_segmenter/mask'], 'output_dir': str(out),
                            'bag_prefix': 'drive'}, out / 'recorder_node.log'))
    node = rclpy.create_node('vidseg_demo_collector')
    collector = Collector(node, out, args.rate)
    source = None
    t0 = time.monotonic()
    try:
        while not collector.segmenter_ready(node):
            rclpy.spin_once(node, timeout_sec=0.05)
            if any(p.poll() is not None for p in procs):
                raise ended(procs, 'the segmenter did not come up', out)
            if time.monotonic() - t0 > 180:
                raise SystemExit(f'demo: the segmenter did not come up in 180 s; see the logs in {out}')
        # The source still waits for the segmenter, the collector (and the recorder) to subscribe.
        source = start('vidseg_ros.ros.video_source_node',
                       {'source': video, 'rate_hz': float(args.rate), 'max_frames': args.max_frames,
                        'wait_for_subscribers': 2 + int(args.record), 'wait_timeout_s': 120.0},
                       out / 'video_source.log')
        procs.append(source)
        while source.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
            if any(p.poll() is not None for p in procs if p is not source):
                raise ended([p for p in procs if p is not source], 'a node exited early', out)
        drain = time.monotonic()
        while time.monotonic() - drain < 3.0 or (collector.n_out < collector.reported('frames_out')
                                                  and time.monotonic() - drain < 20):
            rclpy.spin_once(node, timeout_sec=0.05)  # until every mask the node made has arrived
    finally:
        for p in procs:
            stop(p)
        collector.close()
        node.destroy_node()
        rclpy.try_shutdown()
    collector.contact_sheet(out / 'contact_sheet.png')
    if args.record:
        bags = sorted(out.glob('drive_*'), key=lambda p: p.stat().st_mtime)
        bag = bags[-1] if bags else None
    return report(collector, out, video, model, trained, time.monotonic() - t0, bag)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m vidseg_ros.ros.demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--video', help='video file or image folder (default: CamVid val if present, '
                                        'else the opencv-doc sample)')
    parser.add_argument('--model', help="checkpoint name or path (default: the shipped camvid_keyframe_fpn)")
    parser.add_argument('--out', default='demo_out', help='output folder (default: demo_out in the current folder)')
    parser.add_argument('--rate', type=float, default=15.0, help='camera rate in Hz')
    parser.add_argument('--max-frames', type=int, default=150, help='frames to play (0 = all)')
    parser.add_argument('--no-record', dest='record', action='store_false', help='do not start the recorder')
    args = parser.parse_args(argv)
    # SIGTERM as Ctrl-C: the nodes are stopped (bag closed) either way; a kill ended the demo with them running
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ros_environment()
        rclpy = init_ros()
        try:
            summary = run(args)
        finally:
            rclpy.try_shutdown()   # also when the demo stopped before its nodes started
    except DemoError as e:
        print(f'demo: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # run() stopped its nodes on the way out; a traceback and status -2 said nothing
        print(f'demo: interrupted; node logs and what was recorded are in {args.out}', file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if summary['overlays_received'] > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
