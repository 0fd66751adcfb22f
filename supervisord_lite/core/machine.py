"""The machine's view of many manifests: what one manifest claims, and where claims collide.

A ``Claim`` is what the per-user registry (``host.registry``) keeps of one manifest:
its name, tier ranges and ports, each with the line that declares it, so that a
warning about another project can point at both files. Everything here is plain data
and pure functions; reading and writing the registry file is the host's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from supervisord_lite.core.locate import KeyLocator
from supervisord_lite.core.model import Manifest
from supervisord_lite.core.problems import Problem


@dataclass(frozen=True, slots=True)
class PortClaim:
    service: str
    port: int
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RangeClaim:
    tier: str
    start: int
    end: int  # inclusive
    line: int | None = None

    @property
    def text(self) -> str:
        return f"{self.start}-{self.end}" if self.start != self.end else str(self.start)


@dataclass(frozen=True, slots=True)
class Claim:
    """One manifest (one instance of it) as the registry records it."""

    manifest: str  # absolute path
    name: str
    instance: int = 0
    ranges: tuple[RangeClaim, ...] = ()
    ports: tuple[PortClaim, ...] = ()
    metrics: str = ""
    metrics_line: int | None = None
    state_dir: str = ""
    services: int = 0
    daemon_pid: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.manifest, self.instance

    @property
    def label(self) -> str:
        """How people are told which project this is: ``demo (/path/svc.toml)``, plus its instance."""
        inst = f", instance {self.instance}" if self.instance else ""
        return f"{self.name} ({self.manifest}{inst})"

    @property
    def metrics_port(self) -> int | None:
        if not self.metrics:
            return None
        try:
            return int(self.metrics.rpartition(":")[2])
        except ValueError:
            return None

    def place(self, line: int | None) -> str:
        return f"{self.manifest}:{line}" if line is not None else self.manifest

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "name": self.name,
            "instance": self.instance,
            "ranges": [{"tier": r.tier, "start": r.start, "end": r.end, "line": r.line} for r in self.ranges],
            "ports": [{"service": p.service, "port": p.port, "line": p.line} for p in self.ports],
            "metrics": self.metrics,
            "metrics_line": self.metrics_line,
            "state_dir": self.state_dir,
            "services": self.services,
            "daemon_pid": self.daemon_pid,
        }

    @classmethod
    def from_json(cls, data: Any) -> Claim:
        """Raises ValueError (or KeyError/TypeError, both turned into ValueError) on a malformed entry."""
        try:
            claim = cls(
                manifest=_str(data["manifest"]),
                name=_str(data["name"]),
                instance=_int(data.get("instance", 0)),
                ranges=tuple(
                    RangeClaim(_str(r["tier"]), _int(r["start"]), _int(r["end"]), _opt_int(r.get("line")))
                    for r in data.get("ranges", [])
                ),
                ports=tuple(
                    PortClaim(_str(p["service"]), _int(p["port"]), _opt_int(p.get("line"))) for p in data.get("ports", [])
                ),
                metrics=_str(data.get("metrics", "")),
                metrics_line=_opt_int(data.get("metrics_line")),
                state_dir=_str(data.get("state_dir", "")),
                services=_int(data.get("services", 0)),
                daemon_pid=_opt_int(data.get("daemon_pid")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed entry ({exc!r})") from None
        return claim


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def claim_of(manifest: Manifest, text: str | None, *, instance: int | None = None, daemon_pid: int | None = None) -> Claim:
    """What ``manifest`` claims on the machine; ``text`` (the file's text) gives the lines;
    ``instance`` defaults to the manifest's own (``[supervisor] instance`` or the one asked for)."""
    if instance is None:
        instance = manifest.supervisor.instance
    locator = KeyLocator(text) if text is not None else None

    def line(*path: str) -> int | None:
        return locator.find(path)[0] if locator is not None else None

    ranges = tuple(
        RangeClaim(tier.name, r.start, r.end, line("tiers", tier.name, "ports"))
        for tier in manifest.tiers.values()
        for r in tier.ports
    )
    ports = tuple(
        PortClaim(s.name, s.port, line("services", s.name, "port"))
        for s in manifest.services.values()
        if s.port is not None
    )
    return Claim(
        manifest=str(manifest.path.resolve()),
        name=manifest.supervisor.name,
        instance=instance,
        ranges=ranges,
        ports=ports,
        metrics=manifest.supervisor.metrics,
        metrics_line=line("supervisor", "metrics"),
        state_dir=str(manifest.supervisor.state_dir),
        services=len(manifest.services),
        daemon_pid=daemon_pid,
    )


@dataclass(frozen=True, slots=True)
class Overlap:
    """One claim of ``mine`` that collides with one of ``theirs``."""

    key: str  # the dotted key in my manifest
    line: int | None
    message: str


def overlaps(mine: Claim, theirs: Claim) -> list[Overlap]:
    """Where ``mine`` collides with ``theirs``: the same port, the same metrics port, or
    tier ranges that share a port. Each finding names the other side's file and line."""
    found: list[Overlap] = []
    other = theirs.label
    for r in mine.ranges:
        for t in theirs.ranges:
            if r.start <= t.end and t.start <= r.end:
                found.append(Overlap(
                    f"tiers.{r.tier}.ports", r.line,
                    f"tier range {r.text} overlaps tier {t.tier} ({t.text}) of {other} at {theirs.place(t.line)}",
                ))  # fmt: skip
    their_ports = {p.port: p for p in theirs.ports}
    for p in mine.ports:
        if (t := their_ports.get(p.port)) is not None:
            found.append(Overlap(
                f"services.{p.service}.port", p.line,
                f"port {p.port} is also service {t.service}'s of {other} at {theirs.place(t.line)}",
            ))  # fmt: skip
        elif p.port == theirs.metrics_port:
            found.append(Overlap(
                f"services.{p.service}.port", p.line,
                f"port {p.port} is the metrics port of {other} at {theirs.place(theirs.metrics_line)}",
            ))  # fmt: skip
    mp = mine.metrics_port
    if mp is not None:
        if mp == theirs.metrics_port:
            found.append(Overlap(
                "supervisor.metrics", mine.metrics_line,
                f"metrics port {mp} is also the metrics port of {other} at {theirs.place(theirs.metrics_line)}",
            ))  # fmt: skip
        elif (t := their_ports.get(mp)) is not None:
            found.append(Overlap(
                "supervisor.metrics", mine.metrics_line,
                f"metrics port {mp} is service {t.service}'s of {other} at {theirs.place(t.line)}",
            ))  # fmt: skip
    return found


def overlap_warnings(mine: Claim, others: Iterable[Claim], file: str | None = None) -> list[Problem]:
    """``svc check``'s warnings about every other registered project ``mine`` collides with
    (``file``: my manifest's name as the user gave it)."""
    problems = []
    for theirs in others:
        if theirs.key == mine.key:
            continue
        for o in overlaps(mine, theirs):
            problems.append(Problem("warning", file or mine.manifest, None, o.key, o.message, line=o.line))
    return problems


def owners_of_port(port: int, claims: Iterable[Claim]) -> list[tuple[Claim, str]]:
    """Every (claim, service name) that declares ``port``; the metrics port is named ``(metrics)``."""
    found = []
    for c in claims:
        for p in c.ports:
            if p.port == port:
                found.append((c, p.service))
        if c.metrics_port == port:
            found.append((c, "(metrics)"))
    return found
