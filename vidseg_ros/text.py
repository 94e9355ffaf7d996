"""Untrusted text quoted in messages, cut so a 1 MB field cannot flood a log. Imports nothing from the
package, so every layer (the engine's device check included) may use it; ``data.images`` re-exports it."""
from __future__ import annotations

import hashlib
import re

SHORT_TEXT = 200  # untrusted strings (encodings, formats, frame ids, devices) are cut to this in messages
# C0 and C1 control characters and DEL: a terminal acts on them (ESC starts a title/erase/colour sequence,
# CR or LF forges a second log line), so quoted text shows them as \x1b, \n...
_CONTROL = re.compile('[\x00-\x1f\x7f-\x9f]')


def printable(text, keep: str = '') -> str:
    r"""``text`` with its control characters written as escapes (``\x1b``, ``\n``), as repr() writes them;
    those in ``keep`` (``'\n'`` for a document's lines) are left as they are."""
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else repr(m.group())[1:-1], str(text))


def control_character_problem(texts, what: str) -> str:
    """Why strings shown raw later (class names in logs, /diagnostics, plots) are refused: '' when none of
    ``texts`` holds a control character, else a message quoting the ones that do, escaped and clipped."""
    odd = [t for t in texts if isinstance(t, str) and printable(t) != t]
    return f'{what} hold control characters: {clip(", ".join(map(repr, odd)))}' if odd else ''


def long_text_problem(texts, what: str, limit: int = SHORT_TEXT) -> str:
    """Why names shown whole later (class names in `vidseg info`, plot labels, /diagnostics) are refused: ''
    when none of ``texts`` is over ``limit`` characters, else a message quoting the first one, cut. A 10 MB
    class name was 10 MB in every report and every plot."""
    long = [t for t in texts if isinstance(t, str) and len(t) > limit]
    return f'{what} over {limit} characters: {short(long[0], 40)}' if long else ''


def name_problem(texts, what: str) -> str:
    """Why names shown raw and whole later (class names: logs, /diagnostics, plots, cards) are refused: control
    characters, or over ``SHORT_TEXT`` characters; '' when neither."""
    return control_character_problem(texts, what) or long_text_problem(texts, what)


def clip(text, limit: int = SHORT_TEXT) -> str:
    """Text cut to ``limit`` characters, saying how long it was, so a 1 MB field cannot flood logs; its
    control characters escaped (``printable``), so it cannot drive a terminal or forge a log line."""
    text = str(text)
    shown = printable(text[:limit])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return _shown_start(text, limit) + f'... ({len(text)} characters)'


def _shown_start(text: str, limit: int) -> str:
    """The longest start of ``printable(text)`` of at most ``limit`` characters that cuts no escape in two (an
    escape is 2-4 characters: a field of ESCs cut to 200 characters showed 800)."""
    out, used = [], 0
    for char in text[:limit]:
        shown = printable(char)
        if used + len(shown) > limit:
            break
        out.append(shown)
        used += len(shown)
    return ''.join(out)


def bag_name(text, limit: int = SHORT_TEXT) -> str:
    r"""A name from someone else's file (a bag's topic) as this package keeps it: unchanged when printable and at
    most ``limit`` characters (every ROS name in practice), else escaped (``printable``) and cut to end in ``~``
    + 8 hex digits of the original within ``limit``: the same in every run, another for every other name, and
    unchanged when given again (a --topic copied from a message selects that topic). It
    goes into index.csv and sequence names: an ESC or a line break there drove the terminal of whoever read the
    index, and a 100 kB topic was 100 kB a row."""
    text = str(text)
    shown = printable(text)
    if shown == text and len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]
    return f'{shown[:limit - 9]}~{digest}'


def short(text, limit: int = SHORT_TEXT) -> str:
    """repr() of an untrusted string, cut to ``limit`` characters."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f'... ({len(text)} characters)'


def one_line(text, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters. An over-long one loses its middle (a long path, file
    contents quoted): the start says where, the end what failed or what to do (a cut end lost the advice).
    Line breaks become spaces; other control characters are escaped (``printable``)."""
    text = printable(' '.join(str(text).split()))
    if len(text) <= limit:
        return text
    if limit < 6:           # no room for ' ... ' and a character either side
        return text[:limit]
    head = (limit - 5) * 3 // 5
    return f'{text[:head]} ... {text[len(text) - (limit - 5 - head):]}'


def cut_fields(value, limit: int = 2000, items: int = 200):
    """A JSON-like value (a checkpoint's provenance) for display: each string ``clip``-ped to ``limit``, each
    list or mapping cut to its first ``items`` entries and one saying how many there were. `vidseg info`
    printed a downloaded model's 1 MB provenance field whole (a training run writes at most 2000 a field)."""
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        kept = {clip(k, SHORT_TEXT): cut_fields(v, limit, items) for k, v in list(value.items())[:items]}
        return {**kept, '...': f'{len(value)} entries'} if len(value) > items else kept
    if isinstance(value, (list, tuple)):
        kept = [cut_fields(v, limit, items) for v in value[:items]]
        return [*kept, f'... ({len(value)} items)'] if len(value) > items else kept
    return value
