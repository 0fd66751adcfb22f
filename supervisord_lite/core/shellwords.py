"""Splitting a command string into words the way ``shlex.split`` does, in linear time.

``shlex.split`` reads one character at a time and grows each word by ``+=`` on an
attribute, which is quadratic: one 500 KB word takes seconds. The same rules as
regular expressions run in C: words are separated by blanks (space, tab, CR, LF);
'single quotes' keep everything; "double quotes" let a backslash escape only ``"``
and ``\\``; outside quotes a backslash escapes any character. The results and error
messages are shlex's (a test compares them on random strings).
"""

from __future__ import annotations

import re

__all__ = ["split_like_shell"]

_WORD = r"""(?:[^ \t\r\n'"\\]++|\\[\s\S]|'[^']*+'|"(?:[^"\\]++|\\[\s\S])*+")++"""
_WORDS = re.compile(r"[ \t\r\n]*+(?:" + _WORD + r"[ \t\r\n]*+)*+")
_ONE_WORD = re.compile(_WORD)
_QUOTING = re.compile(r"""['"\\]""")
_PIECE = re.compile(r"""([^'"\\]++)|\\([\s\S])|'([^']*+)'|"((?:[^"\\]++|\\[\s\S])*+)\"""")
_ESCAPE_IN_DOUBLE = re.compile(r'\\([\\"])')
_OPEN_DOUBLE_ENDING_IN_ESCAPE = re.compile(r'"(?:[^"\\]++|\\[\s\S])*+\\\Z')


def split_like_shell(text: str) -> list[str]:
    """``shlex.split(text)``. :raises ValueError: "No closing quotation" or "No escaped character"."""
    match = _WORDS.match(text)
    assert match is not None  # the pattern matches the empty string
    stop = match.end()
    if stop < len(text):  # a quote left open, or a backslash at the very end
        if text[stop] == "\\" or _OPEN_DOUBLE_ENDING_IN_ESCAPE.match(text, stop):
            raise ValueError("No escaped character")
        raise ValueError("No closing quotation")
    return [_unquote(word) if _QUOTING.search(word) else word for word in _ONE_WORD.findall(text)]


def _unquote(word: str) -> str:
    """The word without its quotes and escapes (it is well formed: ``_WORDS`` matched it)."""
    if "\\" not in word:
        if '"' not in word:
            return word.replace("'", "")  # every ' is a delimiter
        if "'" not in word:
            return word.replace('"', "")  # every " is a delimiter, and nothing is escaped
    return "".join(
        plain + escaped + single + _ESCAPE_IN_DOUBLE.sub(r"\1", double)
        for plain, escaped, single, double in _PIECE.findall(word)
    )
