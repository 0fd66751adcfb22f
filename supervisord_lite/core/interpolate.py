"""``${VAR}`` interpolation with docker compose's semantics, and the variables it reads.

Forms (``VAR`` is letters, digits and ``_``, not starting with a digit):

    ${VAR}           the value; unset gives "" and a warning
    ${VAR:-default}  default when VAR is unset or empty     ${VAR-default}  only when unset
    ${VAR:?message}  an error when VAR is unset or empty    ${VAR?message}  only when unset
    ${VAR:+other}    other when VAR is set and not empty    ${VAR+other}    when set
    $$               a literal "$"

A bare ``$NAME`` is left as written (unlike compose): commands such as
``sh -c 'echo $HOME'`` kept their meaning before interpolation existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from supervisord_lite.core.envfiles import parse_env_file

VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPRESSION = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?", re.S)
TOKEN = re.compile(r"\$\$|\$\{([^{}]*)\}|\$\{")


class Unset(Exception):
    """``${VAR}`` of a variable that is not set: the empty string stands in, with a warning."""


def resolve(expression: str, variables: Mapping[str, str], text: str) -> str:
    """The value of the inside of one ``${...}``.

    :raises ValueError: a malformed expression or a ``:?``/``?`` variable missing, with the message to report.
    :raises Unset: ``${VAR}`` of an unset variable.
    """
    match = _EXPRESSION.fullmatch(expression)
    if match is None:
        raise ValueError(
            f'"${{{expression}}}" in "{text}" is not ${{VAR}}, ${{VAR:-default}} or ${{VAR:?message}} '
            '(write "$$" for a literal "$")'
        )
    name, op, arg = match.group("name"), match.group("op"), match.group("arg")
    value = variables.get(name)
    if op is None:
        if value is None:
            raise Unset(name)
        return value
    empty_counts = op.startswith(":")
    missing = value is None or (empty_counts and value == "")
    if op in (":-", "-"):
        return arg if missing else value  # type: ignore[return-value]
    if op in (":?", "?"):
        if missing:
            why = "is not set" if value is None else "is empty"
            raise ValueError(f"{name} {why}: {arg}" if arg else f"{name} {why} (required by \"{text}\")")
        return value  # type: ignore[return-value]
    return "" if missing else arg  # ":+" and "+"


def interpolate(text: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with every ``${...}`` and ``$$`` replaced, and the names of unset variables used.

    :raises ValueError: naming the expression, the text and what is wrong.
    """
    if "$" not in text:
        return text, []
    unset: list[str] = []

    def replace(match: re.Match[str]) -> str:
        return substitute(match, variables, text, unset)

    return TOKEN.sub(replace, text), unset


def substitute(match: re.Match[str], variables: Mapping[str, str], text: str, unset: list[str]) -> str:
    """The replacement of one ``TOKEN`` match (shared with the placeholder expander)."""
    token = match.group(0)
    if token == "$$":
        return "$"
    if token == "${":
        raise ValueError(f'"${{" without its closing "}}" in "{text}" (write "$${{" for a literal "${{")')
    try:
        return resolve(match.group(1), variables, text)
    except Unset as exc:
        unset.append(str(exc))
        return ""


def manifest_variables(environ: Mapping[str, str], dotenv_text: str | None, source: str) -> dict[str, str]:
    """What interpolation reads: the project ``.env`` under the loading process's
    environment (a variable set in the environment wins, as in compose).

    :raises ValueError: a malformed line of the ``.env`` file, naming ``source`` and the line.
    """
    variables = parse_env_file(dotenv_text, source=source) if dotenv_text is not None else {}
    variables.update(environ)
    return variables
