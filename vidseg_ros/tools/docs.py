"""README tables generated from the settings dataclasses, so docs and code cannot drift.

`python -m vidseg_ros.tools.docs` rewrites the blocks between `<!-- BEGIN name -->` and
`<!-- END name -->` in README.md; `--check` exits 1 when the README is stale (a test runs it).
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from vidseg_ros.config import describe

ROOT = Path(__file__).resolve().parents[2]

# block name -> settings dataclasses listed in it ("module:Class")
BLOCKS = {
    'segment_params': ['vidseg_ros.engine.base:EngineConfig', 'vidseg_ros.ros.settings:SegmentNodeConfig'],
    'video_source_params': ['vidseg_ros.ros.settings:VideoSourceConfig'],
    'recorder_params': ['vidseg_ros.ros.recorder_params:RecorderSettings'],
}


def _load(spec: str):
    module, name = spec.split(':')
    return getattr(importlib.import_module(module), name)


def _fmt_default(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def table(specs: list[str]) -> str:
    rows = ['| parameter | type | default | description |', '|---|---|---|---|']
    for spec in specs:
        try:
            cls = _load(spec)
        except (ImportError, AttributeError):
            continue
        for r in describe(cls):
            doc = r['doc'] + (f' (one of: {", ".join(map(str, r["choices"]))})' if r['choices'] else '')
            doc += f' (range {r["range"][0]}..{r["range"][1]})' if r.get('range') else ''
            rows.append(f'| `{r["name"]}` | {r["type"]} | `{_fmt_default(r["default"])}` | {doc.replace("|", "/")} |')
    return '\n'.join(rows)


def render(text: str) -> str:
    for name, specs in BLOCKS.items():
        pattern = re.compile(rf'(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)', re.S)
        text = pattern.sub(lambda m, s=specs: m.group(1) + table(s) + '\n' + m.group(2), text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--check', action='store_true', help='exit 1 if README.md is out of date')
    parser.add_argument('--readme', default=str(ROOT / 'README.md'))
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f'{path} parameter tables are stale: run `python -m vidseg_ros.tools.docs`', file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == '__main__':
    sys.exit(main())
