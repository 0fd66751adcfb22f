"""The manifest as Kubernetes objects and a kustomization listing them.

Per active service, one file ``NAME.yaml``: a Deployment (startup, readiness and
liveness probes from ``ready``, ``health``, ``ready_timeout``, the probe interval
and the unhealthy threshold) and, when it has a port, a Service. Dependencies are
waited for by init containers that poll the dependency's Service, which only
accepts connections once a pod behind it is ready. A oneshot (a migration) runs as
an init container of each service that depends on it, after its own dependencies;
one that nothing depends on becomes a Job. Labels name the service, its tier
(``app.kubernetes.io/component``) and the platform. Resources are left to the user.
Pure: returns file name -> text.
"""

from __future__ import annotations

import re
import signal
from typing import Any

from supervisord_lite.core.problems import Problem
from supervisord_lite.core.model import Manifest, ProbeSpec, RestartPolicy, ServiceSpec
from supervisord_lite.export.common import (
    ExportError,
    ExportOptions,
    Selection,
    Target,
    container_command,
    container_env,
    dollars_escaped,
    header,
    is_oneshot,
    left_out_lines,
    probe_check,
    select,
    to_yaml,
    unexpressed_readiness,
    whole_seconds,
)

KUSTOMIZATION = "kustomization.yaml"
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1035: Service names
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")

NOTES = (
    "Apply with `kubectl apply -k .`. Resources (CPU, memory) are left to you.",
    "Inside the cluster, services reach each other by Service name, not localhost.",
)


def _name_problems(m: Manifest, selection: Selection) -> list[Problem]:
    """Names Kubernetes would refuse: service names become object names, tier and platform
    names label values. Never renamed silently: a renamed Service breaks its callers."""
    file = str(m.path)
    problems = []
    for spec in selection.services:
        if not DNS_LABEL.fullmatch(spec.name):
            problems.append(
                Problem(
                    "error", file, spec.name, None,
                    f'"{spec.name}" cannot name a Kubernetes Deployment and Service: use lowercase letters, '
                    'digits and "-", starting with a letter, at most 63 characters; rename the service',
                )  # fmt: skip
            )
    if not LABEL_VALUE.fullmatch(m.supervisor.name):
        problems.append(
            Problem(
                "error", file, None, "supervisor.name",
                f'"{m.supervisor.name}" cannot be a Kubernetes label value: use letters, digits, "-", "_", "." '
                "(starting and ending with a letter or digit), at most 63 characters",
            )  # fmt: skip
        )
    for tier in sorted({spec.tier for spec in selection.services}):
        if not LABEL_VALUE.fullmatch(tier):
            problems.append(
                Problem(
                    "error", file, None, f"tiers.{tier}",
                    f'tier name "{tier}" cannot be a Kubernetes label value: use letters, digits, "-", "_", "." '
                    "(starting and ending with a letter or digit), at most 63 characters",
                )  # fmt: skip
            )
    return problems


def selector(m: Manifest, spec: ServiceSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": m.supervisor.name}


def labels(m: Manifest, spec: ServiceSpec) -> dict[str, str]:
    return {**selector(m, spec), "app.kubernetes.io/component": spec.tier}


def _handler(probe: ProbeSpec, port: int | None) -> dict[str, Any] | None:
    check = probe_check(probe)
    if check is None:
        return None
    kind, value = check
    if kind == "http":
        return {"httpGet": {"path": value, "port": port}}
    if kind == "exec":
        return {"exec": {"command": list(value)}}
    return {"tcpSocket": {"port": port}}


def probes(spec: ServiceSpec) -> dict[str, dict[str, Any]]:
    """startupProbe (ready within ready_timeout), readinessProbe (ready), livenessProbe (health)."""
    period = whole_seconds(spec.probe_interval)
    out: dict[str, dict[str, Any]] = {}
    ready = _handler(spec.ready, spec.port)
    if ready is not None:
        timeout = whole_seconds(spec.ready.timeout)
        out["startupProbe"] = {
            **ready,
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": max(1, whole_seconds(spec.ready_timeout / period)),
        }
        out["readinessProbe"] = {
            **ready,
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": spec.unhealthy_threshold,
        }
    live = _handler(spec.liveness, spec.port)
    if live is not None:
        out["livenessProbe"] = {
            **live,
            "periodSeconds": period,
            "timeoutSeconds": whole_seconds(spec.liveness.timeout),
            "failureThreshold": spec.unhealthy_threshold,
        }
    return out


def container(spec: ServiceSpec) -> dict[str, Any]:
    """The container that runs ``spec`` (without probes): image, args, env, port."""
    body: dict[str, Any] = {"name": spec.name, "image": spec.export.image}
    command = container_command(spec)
    if command is not None:
        # args, not command: like Compose's command, it keeps the image's entrypoint.
        body["args"] = list(command)
    body["env"] = [{"name": key, "value": value} for key, value in container_env(spec).items()]
    if spec.port is not None:
        body["ports"] = [{"containerPort": spec.port, "protocol": "TCP"}]
    return body


def _wait_container(dep: ServiceSpec, options: ExportOptions) -> dict[str, Any]:
    name = f"wait-for-{dep.name}"
    script = f"until nc -z -w 2 {dep.name} {dep.port}; do echo waiting for {dep.name}; sleep 2; done"
    return {"name": name if len(name) <= 63 else "wait-for-dependency", "image": options.wait_image,
            "command": ["sh", "-c", script]}  # fmt: skip


def init_containers(
    m: Manifest, spec: ServiceSpec, selection: Selection, options: ExportOptions
) -> tuple[list[dict[str, Any]], list[str]]:
    """Init containers that hold ``spec`` until its dependencies are ready, and comments.

    Dependencies with a port are waited for through their Service; a oneshot
    dependency runs here, after its own dependencies.
    """
    steps: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[str] = set()

    def visit(name: str, for_whom: str) -> None:
        if name in seen:
            return
        seen.add(name)
        dep = m.services[name]
        if name not in selection.names:
            notes.append(f"{for_whom} needs {name}, which is left out of this export")
        elif is_oneshot(dep):
            for inner in dep.depends_on:
                visit(inner, name)
            steps.append(container(dep))
            notes.append(
                f"{name} (kind = oneshot) runs as an init container here, after its own dependencies; "
                "it runs in every pod that needs it, so it must be safe to run more than once"
            )
        elif dep.port is None:
            notes.append(f"{for_whom} needs {name}, which has no port and so no Service to wait for")
        else:
            steps.append(_wait_container(dep, options))

    for dep_name in spec.depends_on:
        visit(dep_name, spec.name)
    for i, step in enumerate(steps):  # names must be unique within the pod
        if step["name"] == "wait-for-dependency":
            step["name"] = f"wait-for-dependency-{i}"
    return steps, notes


def _restart_note(spec: ServiceSpec) -> str | None:
    if spec.restart is RestartPolicy.ALWAYS:
        return None
    return f'restart = "{spec.restart.value}": a Deployment always restarts its pods'


def _stop_note(spec: ServiceSpec) -> str | None:
    if spec.stop_signal is signal.SIGTERM:
        return None
    return f"stop_signal = {spec.stop_signal.name}: Kubernetes sends SIGTERM (or the image's STOPSIGNAL)"


def pod_spec(
    m: Manifest, spec: ServiceSpec, selection: Selection, options: ExportOptions
) -> tuple[dict[str, Any], list[str]]:
    inits, notes = init_containers(m, spec, selection, options)
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": whole_seconds(spec.stop_timeout)}
    if inits:
        pod["initContainers"] = inits
    main = container(spec)
    if not is_oneshot(spec):
        main |= probes(spec)
    pod["containers"] = [main]
    if (unexpressed := unexpressed_readiness(spec)) is not None:
        notes.append(unexpressed)
    elif "readinessProbe" not in main and not is_oneshot(spec):
        notes.append("no readiness probe: it counts as ready once its container runs")
    for env_file in spec.env_files:
        notes.append(f"env_file {env_file} is not exported: put it in a Secret or ConfigMap and add envFrom")
    if spec.user:
        notes.append(f"user = {spec.user!r} is not carried over: set securityContext.runAsUser")
    return pod, notes


def deployment(m: Manifest, spec: ServiceSpec, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "labels": labels(m, spec)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector(m, spec)},
            "template": {"metadata": {"labels": labels(m, spec)}, "spec": pod},
        },
    }


def job(m: Manifest, spec: ServiceSpec, pod: dict[str, Any]) -> dict[str, Any]:
    restart = "Never" if spec.restart is RestartPolicy.NO else "OnFailure"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "labels": labels(m, spec)},
        "spec": {
            "backoffLimit": spec.start_limit,
            "template": {"metadata": {"labels": labels(m, spec)}, "spec": {**pod, "restartPolicy": restart}},
        },
    }


def service(m: Manifest, spec: ServiceSpec) -> dict[str, Any]:
    assert spec.port is not None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "labels": labels(m, spec)},
        "spec": {
            "selector": selector(m, spec),
            "ports": [{"port": spec.port, "targetPort": spec.port, "protocol": "TCP"}],
        },
    }


def render_service(m: Manifest, spec: ServiceSpec, selection: Selection, options: ExportOptions) -> str | None:
    """``NAME.yaml``: Deployment (+ Service), or a Job for a oneshot nothing depends on;
    None for a oneshot that runs inside its dependents."""
    users = [s.name for s in selection.services if spec.name in s.depends_on]
    if is_oneshot(spec) and users:
        return None
    pod, notes = pod_spec(m, spec, selection, options)
    title = spec.title or spec.description
    lines = [f"{spec.name}: tier {spec.tier}" + (f", {title}" if title else "")]
    docs = []
    if is_oneshot(spec):
        lines.append("kind = oneshot and nothing depends on it: a Job")
        docs.append(job(m, spec, pod))
    else:
        docs.append(deployment(m, spec, pod))
        if spec.port is not None:
            docs.append(service(m, spec))
        else:
            lines.append("no port: no Service")
        lines += [note for note in (_restart_note(spec), _stop_note(spec)) if note]
    text = "\n".join(header(m, Target.KUBERNETES, [*lines, *notes])) + "\n"
    return text + "---\n".join(to_yaml(dollars_escaped(doc)) for doc in docs)


def render(m: Manifest, options: ExportOptions) -> dict[str, str]:
    """``{"NAME.yaml": ..., "kustomization.yaml": ...}``.

    :raises ExportError: names Kubernetes refuses, or services without an image (unless allowed).
    """
    selection = select(m, Target.KUBERNETES, options.allow_missing_images)
    if problems := _name_problems(m, selection):
        raise ExportError(problems)
    files: dict[str, str] = {}
    inlined = []
    for spec in selection.services:
        text = render_service(m, spec, selection, options)
        if text is None:
            inlined.append(spec.name)
        else:
            files[f"{spec.name}.yaml"] = text
    notes = [*NOTES, *left_out_lines(selection.left_out)]
    if inlined:
        notes.append("Run as init containers of their dependents (kind = oneshot): " + ", ".join(inlined) + ".")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    text = "\n".join(header(m, Target.KUBERNETES, notes)) + "\n" + to_yaml(kustomization)
    return {**files, KUSTOMIZATION: text}

