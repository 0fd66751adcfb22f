"""Single values of a manifest: placeholders, commands, port ranges, paths, signals, env tables.

Each reports what is wrong with its value to the ``ProblemLog`` (or raises ValueError
for ``TableReader.read``), naming the value as the user wrote it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from supervisord_lite.core.limits import (
    MAX_ARGUMENT_BYTES,
    MAX_ITEMS,
    MAX_PATH_BYTES,
    MAX_PATH_PART_BYTES,
    MAX_UID,
)
from supervisord_lite.core.interpolate import interpolate, substitute
from supervisord_lite.core.locate import KeyPath, ProblemLog
from supervisord_lite.core.model import PortRange
from supervisord_lite.core.shellwords import split_like_shell
from supervisord_lite.core.tables import is_int
from supervisord_lite.core.wording import describe, did_you_mean, first_of, shorten

PLACEHOLDERS = ("name", "port", "state_dir")
REFERENCE_PREFIX = "services."  # {services.db.port}: no shell or compose variable is written so
REFERENCE_KEYS = ("port",)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
USER_NAME = re.compile(r"[^\x00-\x20:/\x7f]{0,256}")  # what passwd can hold ("" means none)
_NUL = "a NUL byte, which a process cannot be given"


class Placeholders:
    """Expands ``{port}``, ``{name}``, ``{state_dir}``, references to other services
    (``{services.NAME.port}``) and ``${VAR}`` variables (``core.interpolate``), in one
    pass so that no substituted value is read again; ``{{``, ``}}`` and ``$$`` are literal."""

    PATTERN = re.compile(r"\$\$\{[^{}]*\}|\$\$|\$\{([^{}]*)\}|\$\{|\{\{|\}\}|\{([^{}]*)\}|[{}]")

    def __init__(
        self,
        problems: ProblemLog,
        values: Mapping[str, str | None],
        variables: Mapping[str, str] | None = None,
        references: Mapping[str, str | None] | None = None,
    ) -> None:
        self.problems = problems
        self.values = values
        self.variables = variables if variables is not None else {}
        self.references = references if references is not None else {}

    def expand(self, path: KeyPath, text: str) -> str:
        """``text`` expanded; on a problem it is reported at ``path`` and ``text`` kept as is."""
        if "{" not in text and "}" not in text and "$$" not in text:
            return text
        unset: list[str] = []

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token.startswith("$${"):  # compose's escape: the shell gets ${...} as written
                return token[1:]
            if token[0] == "$":
                return substitute(match, self.variables, text, unset)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(2)
            if name is None:
                raise ValueError(f'unmatched "{token}" in "{text}"; write "{token * 2}" for a literal brace')
            if name.startswith(REFERENCE_PREFIX):
                return self._reference(name, text)
            if name not in self.values:
                hint = did_you_mean(name, PLACEHOLDERS)
                raise ValueError(
                    f'unknown placeholder "{{{name}}}" in "{text}"{hint} '
                    "(known: {name}, {port}, {state_dir}, {services.NAME.port}; write {{ and }} for literal braces)"
                )
            value = self.values[name]
            if value is None:
                raise ValueError(f'"{{{name}}}" is used in "{text}" but the service has no {name}')
            return value

        try:
            expanded = self.PATTERN.sub(replace, text)
        except ValueError as exc:
            self.problems.error(path, str(exc))
            return text
        for name in dict.fromkeys(unset):
            self.problems.warning(path, f"the variable {name} is not set (in the environment or .env): using \"\"")
        return expanded

    def interpolate(self, path: KeyPath, value: Any) -> Any:
        """``value`` with only ``${VAR}`` and ``$$`` replaced (for paths, which have no
        placeholders); a value that is not a string is returned for its reader to report."""
        if not isinstance(value, str):
            return value
        try:
            text, unset = interpolate(value, self.variables)
        except ValueError as exc:
            self.problems.error(path, str(exc))
            return value
        for name in dict.fromkeys(unset):
            self.problems.warning(path, f"the variable {name} is not set (in the environment or .env): using \"\"")
        return text

    def _reference(self, name: str, text: str) -> str:
        """``services.NAME.KEY``: a value of another service of this manifest."""
        service, _, key = name[len(REFERENCE_PREFIX) :].rpartition(".")
        if service not in self.references:
            hint = did_you_mean(service, self.references) or (
                f" (services: {first_of(self.references)})" if self.references else " (the manifest has no services)"
            )
            raise ValueError(f'"{{{name}}}" in "{text}": no service named "{service}"{hint}')
        if key not in REFERENCE_KEYS:
            hint = did_you_mean(key, REFERENCE_KEYS)
            known = ", ".join(REFERENCE_KEYS)
            raise ValueError(f'"{{{name}}}" in "{text}": unknown key "{key}"{hint} (a reference can name: {known})')
        value = self.references[service]
        if value is None:
            raise ValueError(f'"{{{name}}}" in "{text}": the service {service} has no port')
        return value


def split_command(problems: ProblemLog, path: KeyPath, value: Any) -> tuple[str, ...] | None:
    """A string split like a shell (never run by one) or an array of strings."""
    if isinstance(value, str):
        try:
            argv = tuple(split_like_shell(value))
        except ValueError as exc:
            problems.error(path, f'cannot split "{shorten(value)}" like a shell: {exc}')
            return None
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        argv = tuple(value)
    else:
        problems.error(path, f"expected a string or an array of strings, got {describe(value)}")
        return None
    if not argv or not argv[0].strip():
        problems.error(path, "the command is empty")
        return None
    if len(argv) > MAX_ITEMS:
        problems.error(path, f"a command of {len(argv):,} arguments: at most {MAX_ITEMS:,}")
        return None
    return argv


def check_arguments(problems: ProblemLog, path: KeyPath, argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` when the kernel can start it: no NUL byte, no argument over 128 KiB; else
    the problem is reported (once) and ``()`` returned."""
    for arg in argv:
        if "\0" in arg:
            problems.error(path, f'the argument "{shorten(arg)}" contains {_NUL}')
            return ()
        if _beyond_kernel_limit(arg):
            problems.error(path, f"an argument of {len(arg.encode()):,} bytes: the kernel takes at most 128 KiB")
            return ()
    return argv


def parse_ports(problems: ProblemLog, path: KeyPath, value: Any) -> tuple[PortRange, ...]:
    """An array of port ranges ("3000-3099") and single ports (8080 or "8080")."""
    if not isinstance(value, list):
        problems.error(path, f'expected an array of ranges such as ["3000-3099", "8080"], got {describe(value)}')
        return ()
    ranges = []
    for item in value:
        text = str(item) if is_int(item) else item
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text) if isinstance(text, str) else None
        if not match:
            problems.error(path, f'expected a port range such as "3000-3099" or a port, got {describe(item)}')
            continue
        start, end = (int(n) if len(n) <= 6 else 1 << 20 for n in (match.group(1), match.group(2) or match.group(1)))
        if not (1 <= start <= end <= 65535):
            problems.error(path, f'port range "{shorten(str(item))}" must go upwards within 1-65535')
            continue
        ranges.append(PortRange(start, end))
    return tuple(ranges)


def _beyond_kernel_limit(text: str) -> bool:
    """More bytes than execve takes for one argument or variable (the length is checked first)."""
    return len(text) * 4 > MAX_ARGUMENT_BYTES and len(text.encode()) > MAX_ARGUMENT_BYTES


def resolve_path(base: Path, value: str) -> Path:
    """``value`` against the manifest's folder ``base``, normalised (an absolute value stays)."""
    return Path(os.path.normpath(base / value))


def path_in(base: Path) -> Callable[[Any], Path]:
    """A converter for ``TableReader.read``: a path string resolved against ``base``,
    refused when no system call could take it (a NUL byte, too long).

    :raises ValueError: with the message to report.
    """

    def convert(value: Any) -> Path:
        if not isinstance(value, str):
            raise ValueError(f"expected a path, got {describe(value)}")
        if "\0" in value:
            raise ValueError(f'the path "{shorten(value)}" contains a NUL byte')
        resolved = resolve_path(base, value)
        encoded = os.fsencode(resolved)
        if len(encoded) > MAX_PATH_BYTES:
            raise ValueError(f"the path is {len(encoded):,} bytes long once resolved; at most {MAX_PATH_BYTES:,}")
        if any(len(part) > MAX_PATH_PART_BYTES for part in encoded.split(b"/")):
            raise ValueError(f'the path "{shorten(value)}" has a name of more than {MAX_PATH_PART_BYTES} bytes')
        return resolved

    return convert


def user_name(value: Any) -> str:
    """A user name or uid to drop privileges to. :raises ValueError: with the message to report."""
    if not isinstance(value, str):
        raise ValueError(f"expected a user name or uid, got {describe(value)}")
    if not USER_NAME.fullmatch(value):
        raise ValueError(
            f'"{shorten(value)}" is not a user name or uid '
            '(at most 256 characters, no blanks, control characters, ":" or "/")'
        )
    if value.isascii() and value.isdigit() and int(value) > MAX_UID:
        raise ValueError(f"uid {value} is beyond {MAX_UID}, the largest uid")
    return value


def parse_signal(value: Any) -> signal.Signals:
    """A signal by name ("TERM", "SIGTERM") or number. :raises ValueError: with the message to report."""
    if is_int(value):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{value} is not a signal number") from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return signal.Signals[name]
        except KeyError:
            hint = did_you_mean(name, [s.name for s in signal.Signals])
            raise ValueError(f'"{value}" is not a signal name{hint}') from None
    raise ValueError(f'expected a signal name such as "SIGTERM" or a number, got {describe(value)}')


def env_table(
    problems: ProblemLog, path: KeyPath, value: Any, expand: Callable[[KeyPath, str], str] | None = None
) -> dict[str, str]:
    """NAME = string, number or boolean (a boolean as "true"/"false"); anything else is reported.

    ``expand`` (placeholder expansion) runs on each value as it is read.
    """
    if not isinstance(value, dict):
        problems.error(path, f"expected a table of NAME = value, got {describe(value)}")
        return {}
    env = {}
    for key, item in value.items():
        if not ENV_NAME.fullmatch(key):
            problems.error(
                (*path, key),
                f'"{shorten(key)}" is not an environment variable name: use letters, digits and "_", '
                "not starting with a digit",
            )
        elif isinstance(item, (str, int, float)):
            text = str(item).lower() if isinstance(item, bool) else str(item)
            text = expand((*path, key), text) if expand is not None else text
            if "\0" in text:
                problems.error((*path, key), f"the value contains {_NUL}")
            elif _beyond_kernel_limit(f"{key}={text}"):
                problems.error((*path, key), "the variable is longer than 128 KiB, the most the kernel takes")
            else:
                env[key] = text
        else:
            problems.error((*path, key), f"expected a string or a number, got {describe(item)}")
    return env
