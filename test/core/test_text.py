"""Untrusted text in messages (vidseg_ros.text): cut, and unable to drive a terminal or forge a log line.

A class name, file name, frame id or licence from someone else's checkpoint, bag or folder can hold ESC
sequences (set the window title, clear the screen, colour), CR/LF (a fake second log line) or NUL."""
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vidseg_ros.cli import app
from vidseg_ros.text import clip, cut_fields, one_line, short

HOSTILE = '\x1b]0;owned\x07Sky\r\n[ERROR] [launch]: fake\x1b[2J\x1b[31m\x00\x9b\x7f'
CONTROL = [chr(c) for c in (*range(0x20), *range(0x7f, 0xa0))]


@pytest.mark.parametrize('show', [clip, lambda t: clip(t, 10), short, lambda t: one_line(t, 400),
                                  lambda t: one_line(t, 20)])
def test_no_control_character_survives(show):
    shown = show(HOSTILE * 3)
    assert not any(c in shown for c in CONTROL), repr(shown)


def test_clip_shows_escapes_where_the_characters_were_and_keeps_plain_text():
    assert clip('a\x1b[2Jb\nc') == 'a\\x1b[2Jb\\nc'
    assert clip('Sky / Building, ünïcode 天') == 'Sky / Building, ünïcode 天'
    assert clip('\x1b' * 300).endswith('... (300 characters)')


@pytest.mark.parametrize('limit', [1, 4, 10, 200])
def test_clip_shows_at_most_its_limit_and_cuts_no_escape_in_two(limit):
    """Escapes are 2-4 characters: a field of 1000 ESCs clipped to 200 showed 800 characters before the '...'."""
    for text in ('\x1b' * 1000, HOSTILE * 50, 'a\x00' * 1000):
        start = clip(text, limit).rsplit('... (', 1)[0]
        assert len(start) <= limit and (start == '' or limit - len(start) < 4), (limit, start)
    assert clip('\x1b' * 3, 12) == '\\x1b' * 3       # within the limit once shown: whole, nothing said
    assert clip('\x1b' * 3, 11) == '\\x1b' * 2 + '... (3 characters)'


@pytest.mark.parametrize('limit', range(1, 8))
def test_one_line_is_never_longer_than_its_limit(limit):
    assert len(one_line('abcdefghijklmnop', limit)) == limit


def test_one_line_turns_breaks_into_spaces_and_escapes_the_rest():
    assert one_line('x\n[ERROR] fake\r\x1b]0;t\x07', 100) == 'x [ERROR] fake \\x1b]0;t\\x07'


def test_a_cli_error_quoting_a_hostile_argument_is_one_clean_line():
    """`vidseg info <name with ESC>`: the error line wrote the raw ESC ] 0 ; ... BEL (the terminal's title)."""
    r = CliRunner().invoke(app, ['info', '/nonexistent/m' + HOSTILE + '.pt'])
    assert r.exit_code == 2
    assert r.output.count('\n') == 1 and not any(c in r.output.rstrip('\n') for c in CONTROL), repr(r.output)
    assert 'm\\x1b]0;owned\\x07Sky' in r.output


def test_the_cli_log_lines_escape_what_a_bag_or_folder_put_in_them():
    """extract/bag-recover/propagate/train log topic names, file names and bag warnings with %s: a topic
    named '\\x1b]0;owned\\x07' in someone's bag set the terminal title, a '\\n[ERROR] ...' forged a line."""
    code = ('from vidseg_ros.cli import setup_logging; setup_logging(); import logging; '
            'logging.getLogger("vidseg_ros.data.datasets.extract").warning("extract: %s has no frames", '
            + repr('/cam\x1b]0;owned\x07\n[ERROR] [launch]: fake') + ')')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert p.stderr == ('WARNING vidseg_ros.data.datasets.extract: extract: /cam\\x1b]0;owned\\x07\\n[ERROR] '
                        '[launch]: fake has no frames\n'), repr(p.stderr)


@pytest.mark.parametrize('show,quoted', [(clip, str), (short, repr)])
def test_a_text_of_exactly_the_limit_is_whole_and_one_more_is_cut(show, quoted):
    assert show('a' * 10, 10) == quoted('a' * 10)
    assert show('a' * 11, 10) == quoted('a' * 10) + '... (11 characters)'


def test_one_line_keeps_a_line_of_the_limit_whole_and_cuts_a_longer_one_to_the_limit():
    assert one_line('x' * 40, 40) == 'x' * 40
    for n in (41, 1000):
        text = 'where/' + 'x' * (n - 12) + 'advice'
        cut = one_line(text, 40)
        assert len(cut) == 40 and cut.startswith('where/x') and cut.endswith('xadvice') and ' ... ' in cut, cut


def test_cut_fields_keeps_a_value_of_exactly_the_limits_whole():
    """A list or mapping of exactly ``items`` entries got no '... (N items)' entry: nothing was cut."""
    mapping, items = {str(i): 'v' * 5 for i in range(3)}, ['v' * 5] * 3
    assert cut_fields(mapping, limit=5, items=3) == mapping
    assert cut_fields(items, limit=5, items=3) == items
    assert cut_fields({**mapping, '3': 'v' * 6}, limit=5, items=3) == {**mapping, '...': '4 entries'}
    assert cut_fields([*items, 'v'], limit=5, items=3) == [*items, '... (4 items)']
    assert cut_fields({'k': ['v' * 6]}, limit=5) == {'k': ['vvvvv... (6 characters)']}
