"""README tables generated from the settings dataclasses, so docs and code cannot drift.

`vidseg docs` rewrites the blocks between `<!-- BEGIN name -->` and
`<!-- END name -->` in README.md; `--check` exits 1 when the README is stale (a test runs it).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

from vidseg_ros.config import describe
from vidseg_ros.files import read_regular_text

ROOT = Path(__file__).resolve().parents[2]

# block name -> settings dataclasses listed in it ("module:Class")
BLOCKS = {
    'segment_params': ['vidseg_ros.engine.base:EngineConfig', 'vidseg_ros.ros.settings:SegmentNodeConfig'],
    'video_source_params': ['vidseg_ros.ros.settings:VideoSourceConfig'],
    'recorder_params': ['vidseg_ros.ros.recorder_params:RecorderSettings'],
}

ESCAPED_PIPE = '\\|'   # a | in a setting's text would end the markdown table cell


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
        except (ImportError, AttributeError) as e:
            # skipped, a renamed class's rows left the table: `vidseg docs` then wrote the README without them
            raise ValueError(f'docs.BLOCKS names {spec}, which cannot be loaded ({e}): correct the name') from None
        for r in describe(cls):
            doc = r['doc'] + (f' (one of: {", ".join(map(str, r["choices"]))})' if r['choices'] else '')
            doc += f' (range {r["range"][0]}..{r["range"][1]})' if r.get('range') else ''
            doc += {'startup': '. Start-up only', 'rebuild': '. Changing it reloads the model'}.get(r.get('change'), '')
            cell = doc.replace('|', ESCAPED_PIPE)
            rows.append(f'| `{r["name"]}` | {r["type"]} | `{_fmt_default(r["default"])}` | {cell} |')
    return '\n'.join(rows)


def launch_table(root: Path = ROOT) -> str | None:
    """Arguments declared by <root>/launch/*.launch.py; None where launch_ros or the launch files are
    absent (the block is kept as it is)."""
    if importlib.util.find_spec('launch_ros') is None or not (root / 'launch').is_dir():
        return None
    rows = ['| launch file | argument | default | description |', '|---|---|---|---|']
    for path in sorted((root / 'launch').glob('*.launch.py')):
        rows += [f'| {path.name} | `{name}` | `{_fmt_default(default) if default == "" else default}` | '
                 f'{doc.replace("|", ESCAPED_PIPE)} |'
                 for name, default, doc in launch_arguments(path)]
    return '\n'.join(rows)


def launch_arguments(path: Path) -> list[tuple[str, str, str]]:
    """(name, default, description) of each argument a launch file declares itself (not its includes)."""
    from launch.actions import DeclareLaunchArgument
    from launch.launch_description_sources import get_launch_description_from_python_launch_file
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    def text(sub) -> str:
        """A readable default: '$(find-pkg-share vidseg_ros)/config/x.yaml' for a path in the package."""
        if isinstance(sub, PathJoinSubstitution):
            return '/'.join(text(s) for s in sub.substitutions)
        if isinstance(sub, FindPackageShare):
            return f'$(find-pkg-share {"".join(text(s) for s in sub.package)})'
        return sub.text if hasattr(sub, 'text') else sub.describe()

    description = get_launch_description_from_python_launch_file(str(path))
    return [(e.name, ''.join(text(s) for s in e.default_value or []), e.description)
            for e in description.entities if isinstance(e, DeclareLaunchArgument)]


def _replace(text: str, name: str, body: str) -> str:
    """The block's lines replaced by ``body``'s, which end as its BEGIN line does (CRLF in a README checked
    out on Windows or with git's autocrlf: written with LF, every line of it showed as changed)."""
    pattern = re.compile(rf'(<!-- BEGIN {name} -->(\r?\n))(?:.*?\n)?(<!-- END {name} -->)', re.S)
    return pattern.sub(lambda m: m.group(1) + body.replace('\n', m.group(2)) + m.group(2) + m.group(3), text)


def render(text: str, root: Path = ROOT) -> str:
    for name, specs in BLOCKS.items():
        text = _replace(text, name, table(specs))
    launch = launch_table(root)
    return text if launch is None else _replace(text, 'launch_args', launch)


def update(check: bool = False, readme: str | Path = ROOT / 'README.md') -> int:
    """Rewrite the tables in ``readme`` (``vidseg docs``); with ``check``, return 1 if they are stale."""
    path = Path(readme)
    # newline='': the file's own line endings, compared and written as they are (read_text() folded CRLF to
    # LF, so --check passed a CRLF README that the write then changed whole)
    try:
        text = read_regular_text(path, encoding='utf-8', newline='')
    except UnicodeDecodeError as e:     # the line named no file: "'utf-8' codec can't decode byte 0xe9 in ..."
        raise ValueError(f'{path} is not UTF-8 text (byte {e.start}: {e.reason}); a README is UTF-8') from None
    new = render(text, path.resolve().parent)   # the launch files of the checkout the README belongs to
    if check:
        if new != text:
            print(f'{path} parameter tables are stale: run `vidseg docs`', file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding='utf-8', newline='')
    return 0
