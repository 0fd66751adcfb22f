"""Side-by-side instances of one manifest: every port moved by one offset per instance.

Instance 0 is the manifest as written. Instance N moves every declared port, every tier
range and the metrics port by ``N * step``, and gets its own state_dir (``STATE_DIR-N``),
hence its own control socket, state file and logs.

The rule for ``step``: the smallest multiple of 100 such that the manifest's claims (its
ports, tier ranges and metrics port) moved by any multiple of it that stays below 65536
never meet the claims unmoved. Then no two instances ever overlap: instances i and j
differ by ``|i - j| * step``, one of the moves checked. A manifest whose claims are one
block of width W gets ``step`` = W rounded up to 100; the demo (43000-48099 with a gap,
plus 9108) gets 5100. An instance whose moved claims leave 1-65535 is refused, naming
the key that would leave it.

Numbers in a service's command, url and env values (and its exec probes and export env)
that equal a declared port of the manifest follow the shift: ``{port}`` is expanded when
the manifest is read, and another service's port is written as a number.

Pure: the caller says which instance (``svc up --instance N``, ``$SVC_INSTANCE_NUMBER``,
``[supervisor] instance``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from supervisord_lite.core.model import Manifest, PortRange, ProbeSpec, ServiceSpec
from supervisord_lite.core.paths import INSTANCE_ENV_VAR as ENV_VAR
from supervisord_lite.core.paths import instance_state_dir
from supervisord_lite.core.problems import ManifestError, Problem

STEP_UNIT = 100
MAX_PORT = 65535
MAX_INSTANCE = 650  # 65535 / 100: no manifest fits more
_NUMBER = re.compile(r"(?<![0-9])[0-9]{1,5}(?![0-9])")


class InstanceError(ValueError):
    """This instance cannot be run; the message says why."""


def requested_instance(environ: Mapping[str, str], configured: int = 0) -> int:
    """The instance asked for: ``$SVC_INSTANCE_NUMBER`` when set, else ``configured``.
    :raises InstanceError: for a value that is not a whole number in 0-650."""
    text = environ.get(ENV_VAR, "").strip()
    if not text:
        return configured
    if not text.isdigit() or int(text) > MAX_INSTANCE:
        raise InstanceError(f"${ENV_VAR}={text!r} is not an instance number (0-{MAX_INSTANCE})")
    return int(text)


def _claims(m: Manifest) -> list[tuple[int, int]]:
    spans = [(r.start, r.end) for t in m.tiers.values() for r in t.ports]
    spans += [(s.port, s.port) for s in m.services.values() if s.port is not None]
    address = m.supervisor.metrics_address
    if address is not None:
        spans.append((address[1], address[1]))
    return spans


def instance_step(m: Manifest) -> int:
    """The offset between two consecutive instances (see the module's docstring); 0 when the
    manifest claims no port at all (its instances differ only by their state_dir)."""
    spans = _claims(m)
    if not spans:
        return 0
    low = min(a for a, _ in spans)
    for step in range(STEP_UNIT, MAX_PORT + STEP_UNIT, STEP_UNIT):
        if all(_disjoint(spans, shift) for shift in range(step, MAX_PORT - low + 1, step)):
            return step
    return MAX_PORT + 1  # unreachable for valid ports: one step past the port space always fits


def _disjoint(spans: list[tuple[int, int]], shift: int) -> bool:
    return not any(a + shift <= d and c <= b + shift for a, b in spans for c, d in spans)


def shift_manifest(m: Manifest, instance: int) -> Manifest:
    """Instance ``instance`` of ``m``. :raises InstanceError: when a port would leave 1-65535."""
    if instance == 0:
        return m
    if instance < 0:
        raise InstanceError(f"instance {instance} is negative")
    offset = instance * instance_step(m)
    _refuse_out_of_range(m, instance, offset)
    ports = {s.port for s in m.services.values() if s.port is not None}
    address = m.supervisor.metrics_address
    if address is not None:
        ports.add(address[1])
    old_dir, new_dir = str(m.supervisor.state_dir), str(instance_state_dir(m.supervisor.state_dir, instance))

    def text(value: str) -> str:
        if old_dir in value:
            value = value.replace(old_dir, new_dir)
        return _NUMBER.sub(lambda match: str(int(match[0]) + offset) if int(match[0]) in ports else match[0], value)

    sup = m.supervisor
    metrics = sup.metrics
    if address is not None:
        host = sup.metrics.rpartition(":")[0]
        metrics = f"{host}:{address[1] + offset}"
    return replace(
        m,
        supervisor=replace(sup, state_dir=Path(new_dir), metrics=metrics, instance=instance),
        tiers=MappingProxyType({
            name: replace(t, ports=tuple(PortRange(r.start + offset, r.end + offset) for r in t.ports))
            for name, t in m.tiers.items()
        }),  # fmt: skip
        services=MappingProxyType({name: _shift_service(s, offset, text) for name, s in m.services.items()}),
    )


def _shift_service(s: ServiceSpec, offset: int, fix: Callable[[str], str]) -> ServiceSpec:
    def probe(p: ProbeSpec | None) -> ProbeSpec | None:
        if p is None or p.exec is None:
            return p
        return replace(p, exec=tuple(fix(a) for a in p.exec))

    return replace(
        s,
        port=None if s.port is None else s.port + offset,
        command=tuple(fix(a) for a in s.command),
        url=fix(s.url),
        env=MappingProxyType({k: fix(v) for k, v in s.env.items()}),
        ready=probe(s.ready),
        health=probe(s.health),
        export=replace(s.export, env=MappingProxyType({k: fix(v) for k, v in s.export.env.items()})),
    )


def _refuse_out_of_range(m: Manifest, instance: int, offset: int) -> None:
    def check(value: int, key: str) -> None:
        if value + offset > MAX_PORT:
            raise InstanceError(
                f"instance {instance} moves every port by {offset} ({instance} x {instance_step(m)}): "
                f"{key} {value} would become {value + offset}, past {MAX_PORT}"
            )

    for t in m.tiers.values():
        for r in t.ports:
            check(r.end, f"tiers.{t.name}.ports {r}:")
    for s in m.services.values():
        if s.port is not None:
            check(s.port, f"services.{s.name}.port")
    address = m.supervisor.metrics_address
    if address is not None:
        check(address[1], "supervisor.metrics port")


def apply_instance(m: Manifest, environ: Mapping[str, str]) -> Manifest:
    """The instance the environment (else ``[supervisor] instance``) asks for, as ManifestError
    naming the file when it cannot be run."""
    try:
        return shift_manifest(m, requested_instance(environ, m.supervisor.instance))
    except InstanceError as exc:
        raise ManifestError([Problem("error", str(m.path), None, "supervisor.instance", str(exc))]) from None

