"""The manifest as systemd units: a service unit per active service, a target per
tier and one for the platform.

``Requires=``/``After=`` come from ``depends_on``; each unit is also ordered after
the previous tier's target, so tiers start in order. ``Restart=`` from the restart
policy, ``RestartSec=`` from the first backoff delay, ``KillSignal=`` and
``TimeoutStopSec=`` from the stop signal and timeout, the start limit as
``StartLimitBurst=``/``StartLimitIntervalSec=``. A oneshot is ``Type=oneshot`` with
``RemainAfterExit=yes``, so its dependents start once it has exited 0.

The units run the manifest's own command (the ``export`` table is for containers),
with the executable resolved to an absolute path on this machine. Pure: the caller
passes the resolver; returns file name -> text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from supervisord_lite.core.problems import Problem
from supervisord_lite.core.model import Kind, Manifest, RestartPolicy, ServiceSpec, Tier
from supervisord_lite.export.common import (
    ExportError,
    ExportOptions,
    Target,
    header,
    inactive_note,
    left_out_lines,
    seconds_text,
    start_order,
)

UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
SYSTEMD_SEARCH_PATH = "/usr/local/sbin, /usr/local/bin, /usr/sbin and /usr/bin"

NOTES = (
    "Install: copy these files to /etc/systemd/system/, then `systemctl daemon-reload`",
    "and `systemctl enable --now {platform}`. Check them with `systemd-analyze verify`.",
    "systemd orders by start, not readiness: a Type=exec service counts as started once its",
    "command runs, so ready probes, health probes and the exponential backoff do not carry over",
    "(RestartSec= is the first backoff delay).",
)

Section = list[tuple[str, str]]


# --------------------------------------------------------------------------- quoting


def _escape(text: str) -> str:
    """C-style escapes for a double-quoted systemd string; ``%`` doubled (specifiers)."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "%":
            out.append("%%")
        elif not char.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in char.encode()))
        else:
            out.append(char)
    return "".join(out)


def quote_arg(arg: str) -> str:
    """One ExecStart= word that systemd reads back as exactly ``arg``.

    ``$`` is doubled (systemd expands ``$VAR`` there) and ``%`` too (specifiers); a
    lone ``;`` would separate commands, so it is written ``\\;``.
    """
    if arg == ";":
        return "\\;"
    if arg and _PLAIN_WORD.fullmatch(arg):
        return arg
    return '"' + _escape(arg).replace("$", "$$") + '"'


def exec_line(argv: Iterable[str]) -> str:
    return " ".join(quote_arg(arg) for arg in argv)


def environment_value(key: str, value: str) -> str:
    """``"KEY=value"`` for Environment= (no ``$`` expansion there, specifiers only)."""
    return '"' + _escape(f"{key}={value}") + '"'


def plain_value(text: str) -> str:
    """A one-line free-text value (Description=, paths): specifiers escaped, lines joined."""
    return " ".join(text.split("\n")).replace("%", "%%")


# --------------------------------------------------------------------------- units


def unit_prefix(m: Manifest) -> str:
    return m.supervisor.name


def service_unit(m: Manifest, name: str) -> str:
    return f"{unit_prefix(m)}-{name}.service"


def tier_target(m: Manifest, tier: str) -> str:
    return f"{unit_prefix(m)}-{tier}.target"


def platform_target(m: Manifest) -> str:
    return f"{unit_prefix(m)}.target"


def previous_tiers(m: Manifest, tier: str) -> list[Tier]:
    """The tiers of the highest order below ``tier``'s (several when they share it)."""
    own = m.tiers[tier].order if tier in m.tiers else 0
    lower = [t.order for t in m.tiers.values() if t.order < own]
    if not lower:
        return []
    return [t for t in m.tiers.values() if t.order == max(lower)]


def _name_problems(m: Manifest) -> list[Problem]:
    file = str(m.path)
    problems = []
    if not UNIT_NAME.fullmatch(unit_prefix(m)):
        problems.append(
            Problem(
                "error", file, None, "supervisor.name",
                f'"{m.supervisor.name}" cannot start a systemd unit name: use letters, digits, ":", "_", "." and "-"',
            )  # fmt: skip
        )
    for tier in m.tiers:
        if not UNIT_NAME.fullmatch(tier):
            problems.append(
                Problem(
                    "error", file, None, f"tiers.{tier}",
                    f'tier name "{tier}" cannot be part of a systemd unit name: use letters, digits, ":", "_", "." '
                    'and "-"',
                )  # fmt: skip
            )
    return problems


def executable(spec: ServiceSpec, options: ExportOptions) -> tuple[str, str | None]:
    """The absolute path of the command's program, and a note when it cannot be found.

    systemd does not use the exporting user's PATH, so a bare name is resolved here,
    the way the daemon finds it; a relative path is taken from the service's cwd.
    """
    program = spec.command[0]
    if os.path.isabs(program):
        return program, None
    if "/" in program:
        return os.path.normpath(Path(spec.cwd) / program), None
    found = options.resolve_executable(program)
    if found:
        return found, None
    return program, f"{program} was not found on PATH when exported; systemd looks in {SYSTEMD_SEARCH_PATH}"


def render_unit(sections: list[tuple[str, Section]], comments: Iterable[str]) -> str:
    lines = list(comments)
    for name, items in sections:
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{key}={value}" for key, value in items]
    return "\n".join(lines) + "\n"


def service_file(m: Manifest, spec: ServiceSpec, options: ExportOptions) -> str:
    program, note = executable(spec, options)
    about = spec.title or spec.description
    notes = [f"{spec.name}: tier {spec.tier}" + (f", {about}" if about else "")]
    if note:
        notes.append(note)
    title = spec.title or spec.name
    description = f"{m.supervisor.name}: {title}" + (f" ({spec.description})" if spec.description else "")
    after = [service_unit(m, dep) for dep in spec.depends_on]
    after += [tier_target(m, t.name) for t in previous_tiers(m, spec.tier)]
    unit: Section = [("Description", plain_value(description)), ("PartOf", platform_target(m))]
    if spec.depends_on:
        unit.append(("Requires", " ".join(service_unit(m, dep) for dep in spec.depends_on)))
    if after:
        unit.append(("After", " ".join(after)))
    unit += [
        ("StartLimitIntervalSec", seconds_text(spec.start_limit_window)),
        ("StartLimitBurst", str(spec.start_limit + 1)),  # start_limit counts restarts, systemd counts starts
    ]

    restart = spec.restart
    service: Section = []
    if spec.kind is Kind.ONESHOT:
        service += [("Type", "oneshot"), ("RemainAfterExit", "yes")]
        service.append(("TimeoutStartSec", seconds_text(spec.ready_timeout)))
        if restart is RestartPolicy.ALWAYS:
            notes.append('restart = "always": systemd refuses it for Type=oneshot, so on-failure')
            restart = RestartPolicy.ON_FAILURE
    else:
        service.append(("Type", "exec"))
    service.append(("ExecStart", exec_line([program, *spec.command[1:]])))
    service.append(("WorkingDirectory", plain_value(str(spec.cwd))))
    env = dict(spec.env)
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    env["SVC_SERVICE"] = spec.name
    service += [("Environment", environment_value(key, value)) for key, value in env.items()]
    for env_file in spec.env_files:
        service.append(("EnvironmentFile", plain_value(str(env_file))))
    if spec.user:
        service.append(("User", spec.user))
    service += [
        ("Restart", restart.value),
        ("RestartSec", seconds_text(spec.backoff.first)),
        ("KillSignal", spec.stop_signal.name),
        ("TimeoutStopSec", seconds_text(spec.stop_timeout)),
    ]
    comments = header(m, Target.SYSTEMD, notes)
    return render_unit([("Unit", unit), ("Service", service)], comments)


def tier_file(m: Manifest, tier: Tier, members: list[ServiceSpec]) -> str:
    label = f"{tier.name} tier" + (f" ({tier.description})" if tier.description else "")
    units = [service_unit(m, s.name) for s in members]
    unit: Section = [("Description", plain_value(f"{m.supervisor.name}: {label}")), ("PartOf", platform_target(m))]
    if units:
        unit.append(("Wants", " ".join(units)))
    after = units + [tier_target(m, t.name) for t in previous_tiers(m, tier.name)]
    if after:
        unit.append(("After", " ".join(after)))
    notes = [f"Reached once every service of the {tier.name} tier has started."]
    if not members:
        notes.append("No active service in this tier; the target keeps the tiers in order.")
    return render_unit([("Unit", unit)], header(m, Target.SYSTEMD, notes))


def platform_file(m: Manifest, left_out: list[str]) -> str:
    tiers = [tier_target(m, t) for t in m.tiers]
    unit: Section = [("Description", plain_value(f"{m.supervisor.name} platform ({m.path.name})"))]
    if tiers:
        unit += [("Wants", " ".join(tiers)), ("After", " ".join(tiers))]
    notes = [line.format(platform=platform_target(m)) for line in NOTES] + left_out_lines(left_out)
    return render_unit(
        [("Unit", unit), ("Install", [("WantedBy", "multi-user.target")])], header(m, Target.SYSTEMD, notes)
    )


def render(m: Manifest, options: ExportOptions) -> dict[str, str]:
    """Unit file name -> text.

    :raises ExportError: the platform or a tier name cannot be part of a unit name.
    """
    if problems := _name_problems(m):
        raise ExportError(problems)
    active = start_order(m)
    files = {service_unit(m, spec.name): service_file(m, spec, options) for spec in active}
    for tier in m.tiers.values():
        files[tier_target(m, tier.name)] = tier_file(m, tier, [s for s in active if s.tier == tier.name])
    left_out = [inactive_note(s) for s in m.services.values() if not s.is_active]
    files[platform_target(m)] = platform_file(m, left_out)
    return files
