"""What manifest validation finds: one ``Problem`` per finding, and ``ManifestError``
when the manifest cannot be used."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


def _quote_key(part: str) -> str:
    """One part of a dotted key as TOML writes it; a very long one is cut short for people."""
    shown = part if len(part) <= 80 else part[:77] + "..."
    return shown if re.fullmatch(r"[A-Za-z0-9_-]+", part) else '"' + shown.replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of validation. ``key`` is relative to the service table when
    ``service`` is set (``"ready.http"``), else the full dotted path (``"supervisor.metrics"``)."""

    severity: Severity
    file: str
    service: str | None
    key: str | None
    message: str
    line: int | None = None
    col: int | None = None

    @property
    def where(self) -> str:
        """The dotted key as written in TOML: ``services.api.ready.http``."""
        if self.service is None:
            return self.key or ""
        head = f"services.{_quote_key(self.service)}"
        return f"{head}.{self.key}" if self.key else head

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        place = self.file
        if self.line is not None:
            place += f":{self.line}" + (f":{self.col}" if self.col is not None else "")
        parts = [place, self.severity, self.where, self.message]
        return ": ".join(p for p in parts if p)


class ManifestError(Exception):
    """The manifest cannot be used. ``problems`` lists every finding (errors first)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: not p.is_error)
        super().__init__(str(self))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
