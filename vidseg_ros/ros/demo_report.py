"""What the demo leaves behind: summary.json / summary.md from the segmenter's last /diagnostics status and the
collector's counts, and the legend of the contact sheet (class colours from the node's ~/class_table)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from vidseg_ros.text import clip


def legend_classes(text: str) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(published id, name, RGB colour) of each class in a ~/class_table message (``ClassTable.to_json``);
    ValueError when the text is not such a table."""
    try:
        classes = json.loads(text)['classes']
        table = [(c['id'], c['name'], tuple(c['color'])) for c in classes]
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise ValueError(f'not a class table ({type(e).__name__}: {e})') from None
    for class_id, name, color in table:
        if not (type(class_id) is int and 0 <= class_id <= 255 and isinstance(name, str) and len(color) == 3
                and all(type(v) is int and 0 <= v <= 255 for v in color)):
            raise ValueError(f'not a class table: class {clip(repr((class_id, name, color)), 100)} is not '
                             '(id 0..255, name, 3 colour values 0..255)')
    if not table:
        raise ValueError('not a class table: no classes')
    return table


LEGEND_FONT, LEGEND_SCALE, LEGEND_ROW = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 28


def legend_strip(entries: list[tuple[str, tuple[int, int, int]]], width: int) -> np.ndarray:
    """White strip of (label, RGB colour) swatches, ``width`` wide, wrapped onto as many rows as they need
    (one row cut the last classes off: with CamVid's 11 classes Bicyclist never showed at 960 px)."""
    rows, x = [[]], 6
    for label, color in entries:
        step = 20 + cv2.getTextSize(label, LEGEND_FONT, LEGEND_SCALE, 1)[0][0] + 14
        if x > 6 and x + step > width:
            rows.append([])
            x = 6
        rows[-1].append((x, label, color))
        x += step
    strip = np.full((LEGEND_ROW * len(rows), width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = r * LEGEND_ROW
        for x, label, color in row:
            cv2.rectangle(strip, (x, y + 6), (x + 16, y + 22), color, -1)
            cv2.putText(strip, label, (x + 20, y + 20), LEGEND_FONT, LEGEND_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _number(value) -> float:
    """A value of the segmenter's /diagnostics status as a number; nan where absent or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float('nan')


def report(c, out: Path, video: str, model: str, trained: bool, wall_s: float, bag) -> dict:
    """summary.json and summary.md in ``out`` from the demo's ``Collector`` ``c``, printed; the summary."""
    s = c.last_status or {}
    stages = ['convert', 'preprocess', 'model', 'postprocess', 'publish', 'end_to_end']
    latency = {st: {q: _number(s.get(f'{st}_ms_{q}')) for q in ('p50', 'p95', 'max')} for st in stages}
    summary = {'video': video, 'model': s.get('model', model), 'trained': trained, 'device': s.get('device'),
               'frames_published_by_source': c.n_in, 'frames_received_by_node': c.reported('frames_in'),
               'frames_segmented': c.reported('frames_out'), 'overlays_received': c.n_out,
               # every frame published but not segmented, split by where it was lost
               'dropped_before_node': max(c.n_in - c.reported('frames_in'), 0),
               'dropped_by_latest_frame_wins': c.reported('dropped_frames'),
               'key_frame_ratio': _number(s.get('key_frame_ratio')), 'latency_ms': latency,
               'messages_not_used': c.refused,
               'wall_s': round(wall_s, 1), 'outputs': {'overlay_video': str(c.video_path),
                                                        'contact_sheet': str(out / 'contact_sheet.png'),
                                                        'bag': str(bag) if bag else None}}
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    lines = ['| stage | p50 ms | p95 ms | max ms |', '|---|---|---|---|']
    lines += [f'| {st} | {v["p50"]:.1f} | {v["p95"]:.1f} | {v["max"]:.1f} |' for st, v in latency.items()]
    md = '\n'.join([f'# vidseg demo{"" if trained else " (UNTRAINED WEIGHTS)"}', '',
                    f'- video: {video}', f'- model: {summary["model"]} on {summary["device"]}',
                    f'- frames: {c.n_in} published, {summary["frames_segmented"]} segmented, '
                    f'{c.n_in - summary["frames_segmented"]} dropped ({summary["dropped_before_node"]} before '
                    f'the node: input queue depth 1 overwritten; {summary["dropped_by_latest_frame_wins"]} in the '
                    f'node: latest frame wins); {c.n_out} overlays received by the demo',
                    f'- key-frame ratio: {summary["key_frame_ratio"]:.2f}', ''] + lines)
    (out / 'summary.md').write_text(md + '\n')
    print('\n' + md)
    print(f'\nOutputs:\n  overlay video : {c.video_path}\n  contact sheet : {out / "contact_sheet.png"}\n'
          f'  summary       : {out / "summary.md"} (+ summary.json)\n  node logs     : {out}/*.log'
          + (f'\n  bag           : {bag}' if bag else ''))
    if not trained:
        print('\n*** These masks come from UNTRAINED weights. ***')
    return summary
