"""Untrusted text quoted in messages, cut so a 1 MB field cannot flood a log. Imports nothing from the
package, so every layer (the engine's device check included) may use it; ``data.images`` re-exports it."""
from __future__ import annotations

SHORT_TEXT = 200  # untrusted strings (encodings, formats, frame ids, devices) are cut to this in messages


def clip(text, limit: int = SHORT_TEXT) -> str:
    """Text cut to ``limit`` characters, saying how long it was, so a 1 MB field cannot flood logs."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f'... ({len(text)} characters)'


def short(text, limit: int = SHORT_TEXT) -> str:
    """repr() of an untrusted string, cut to ``limit`` characters."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f'... ({len(text)} characters)'


def one_line(text, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters. An over-long one loses its middle (a long path, file
    contents quoted): the start says where, the end what failed or what to do (a cut end lost the advice)."""
    text = ' '.join(str(text).split())
    if len(text) <= limit:
        return text
    head = (limit - 5) * 3 // 5
    return f'{text[:head]} ... {text[len(text) - (limit - 5 - head):]}'
