"""The env_file format: ``KEY=VALUE`` lines, parsed without touching the disk.

Reading the file (and turning its problems into errors naming the service) is the
runtime's job (``runtime.environment.load_env_file``).
"""

from __future__ import annotations

__all__ = ["parse_env_file"]

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(text: str, source: str = "env file") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines: ``#`` comments, blank lines, ``export KEY=...``,
    single quotes (literal), double quotes (``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes),
    and `` # comment`` after an unquoted value. No ``$VAR`` expansion.

    :raises ValueError: naming ``source`` and the line number of a malformed line
    """
    result: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or not (key.replace("_", "a").isalnum() and not key[0].isdigit()):
            raise ValueError(f"{source}, line {lineno}: expected KEY=VALUE, got {raw.strip()!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = _closing_quote(value, quote)
            if end < 0:
                raise ValueError(f"{source}, line {lineno}: {key}: the {quote} quote is never closed")
            body = value[1:end]
            rest = value[end + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"{source}, line {lineno}: {key}: unexpected text after the closing quote: {rest!r}")
            if quote == '"':
                body = _unescape(body)
            value = body
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        result[key] = value
    return result


def _closing_quote(value: str, quote: str) -> int:
    """Index of the quote closing ``value[0]``, or -1; a backslash escapes inside double quotes."""
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return -1


def _unescape(body: str) -> str:
    """Resolve the backslash escapes of a double-quoted value; unknown ones stay as written."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)
