"""Option parsing of the `vidseg` commands: every value is checked before a command starts, so a bad
one is a usage error (exit 2) naming the option."""
from __future__ import annotations

import json
import math
from typing import Annotated, Literal, Optional

import typer

from vidseg_ros.constants import MAX_INPUT_PIXELS


def parse_set(values: list[str] | None) -> dict:
    """`--set key=value` overrides (the value parsed as JSON when it can be: numbers, lists, true).

    ``key=null`` is JSON null, checked like ``key: null`` in YAML: refused unless the setting allows it,
    never dropped; ``key=`` is the empty text and ``key=[]`` the empty list, which clear a setting."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise typer.BadParameter(f'{item!r}: expected key=value')
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except (ValueError, RecursionError) as e:   # 5000 digits (int limit), 10**5 nested brackets: no traceback
            raise typer.BadParameter(f'{key}: {"nested too deep" if isinstance(e, RecursionError) else e}') from None
    return out


def _check_set(values: list[str] | None) -> list[str] | None:
    parse_set(values)   # a malformed item fails before the command starts (typer keeps the list, not the dict)
    return values


def positive(value: float | None) -> float | None:
    """> 0; inf allowed (``--max-gap-s inf``: no gap starts a new sequence)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f'{value} must be > 0')
    return value


def positive_finite(value: float | None) -> float | None:
    """> 0 and finite: ``--rate-hz inf`` stamped every frame alike, ``--lr inf`` trained to NaN weights."""
    if value is not None and not 0 < value < math.inf:
        raise typer.BadParameter(f'{value} must be > 0 and finite')
    return value


def check_hw(text: str | None) -> str | None:
    """``HxW`` (e.g. 480x640), both positive, at most ``max_input_pixels`` in all (what the node and a
    checkpoint accept: ``vidseg bench --input-hw 5000x5000`` ran at 4 s a frame)."""
    if text:
        parts = text.lower().split('x')
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise typer.BadParameter(f'{text!r}: expected HxW with positive integers, e.g. 480x640')
        h, w = map(int, parts)
        if h * w > MAX_INPUT_PIXELS:
            raise typer.BadParameter(f'{text}: {h * w} pixels exceeds max_input_pixels {MAX_INPUT_PIXELS}')
    return text


def check_ints(text: str) -> str:
    """Comma-separated positive integers (key intervals)."""
    parts = [p.strip() for p in text.split(',')]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise typer.BadParameter(f'{text!r}: expected positive integers separated by commas, e.g. 1,2,5')
    return text


def to_hw(text: str | None) -> list[int] | None:
    return [int(v) for v in text.lower().split('x')] if text else None


Set = Annotated[Optional[list[str]], typer.Option('--set', callback=_check_set,
                                                  help='override a setting: key=value (JSON value)')]
Existing = dict(exists=True)
Model = Annotated[str, typer.Argument(help='checkpoint path or shipped model name')]
Workers = Annotated[int, typer.Option(min=1, help='worker processes (1 = in this process)')]
Executor = Annotated[Literal['local', 'dask'], typer.Option(
    help='where independent tasks run: local (a process pool of --workers) | dask (a Dask cluster; docs/scale.md)')]
Address = Annotated[str, typer.Option(help='Dask scheduler address, e.g. tcp://head:8786; empty = a local '
                                           'Dask cluster of --workers processes')]
