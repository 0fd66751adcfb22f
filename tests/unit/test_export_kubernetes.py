"""The Kubernetes renderer, read back as YAML: objects, probes, init containers, labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisord_lite.export import ExportError, ExportOptions, Target, render
from supervisord_lite.core.model import Manifest
from tests.unit.test_export_compose import FILE, PLATFORM, manifest

K8S_PLATFORM = PLATFORM.replace('export = { build = "api",', 'export = { image = "team/api:2",')


def k8s(m: Manifest, **options: Any) -> dict[str, str]:
    return render(m, Target.KUBERNETES, ExportOptions(out_dir=Path("/srv/app/deploy/k8s"), **options))


def docs(text: str) -> dict[str, dict[str, Any]]:
    """kind -> object of one file."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text)}


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def test_one_file_per_service_and_a_kustomization_listing_them_in_start_order() -> None:
    files = k8s(manifest(K8S_PLATFORM))
    # migrate (a oneshot that api needs) runs inside api's pod: no file of its own
    assert list(files) == ["db.yaml", "cache.yaml", "worker.yaml", "api.yaml", "web.yaml", "kustomization.yaml"]
    kustomization = files["kustomization.yaml"]
    assert yaml.safe_load(kustomization) == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["db.yaml", "cache.yaml", "worker.yaml", "api.yaml", "web.yaml"],
    }
    assert "# Left out: old-web (deprecated, replaced by web), lab (disabled)." in kustomization.splitlines()
    assert "# Run as init containers of their dependents (kind = oneshot): migrate." in kustomization.splitlines()


def test_deployment_and_service_with_labels_naming_the_tier() -> None:
    objects = docs(k8s(manifest(K8S_PLATFORM))["db.yaml"])
    assert set(objects) == {"Deployment", "Service"}
    labels = {
        "app.kubernetes.io/name": "db",
        "app.kubernetes.io/part-of": "svc",
        "app.kubernetes.io/component": "infra",
    }
    deployment, service = objects["Deployment"], objects["Service"]
    assert deployment["metadata"] == {"name": "db", "labels": labels}
    assert deployment["spec"]["template"]["metadata"]["labels"] == labels
    selector = {"app.kubernetes.io/name": "db", "app.kubernetes.io/part-of": "svc"}
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    assert service["spec"] == {"selector": selector, "ports": [{"port": 5432, "targetPort": 5432, "protocol": "TCP"}]}
    container = pod(deployment)["containers"][0]
    assert container["image"] == "postgres:16"
    assert container["args"] == ["postgres", "-p", "5432"]
    assert container["ports"] == [{"containerPort": 5432, "protocol": "TCP"}]
    assert "resources" not in container
    assert pod(deployment)["terminationGracePeriodSeconds"] == 30


def test_probes_carry_intervals_thresholds_and_the_ready_timeout() -> None:
    files = k8s(manifest(K8S_PLATFORM))
    api = pod(docs(files["api.yaml"])["Deployment"])["containers"][0]
    http = {"httpGet": {"path": "/health", "port": 8000}}
    assert api["startupProbe"] == {**http, "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 6}
    assert api["readinessProbe"] == {**http, "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 4}
    assert api["livenessProbe"] == {**http, "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 4}
    db = pod(docs(files["db.yaml"])["Deployment"])["containers"][0]
    assert db["readinessProbe"]["exec"] == {"command": ["pg_isready", "-p", "5432"]}
    assert db["startupProbe"]["failureThreshold"] == 30  # 60s ready_timeout / 2s
    cache = pod(docs(files["cache.yaml"])["Deployment"])["containers"][0]
    assert cache["livenessProbe"]["tcpSocket"] == {"port": 6379}


def test_a_separate_health_probe_becomes_the_liveness_probe() -> None:
    text = (
        '[export]\nimage = "x"\n'
        '[services.a]\ncommand = "a"\nport = 80\nready = { http = "/ready" }\nhealth = { exec = "check" }\n'
    )
    container = pod(docs(k8s(manifest(text))["a.yaml"])["Deployment"])["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 80}
    assert container["livenessProbe"]["exec"] == {"command": ["check"]}


def test_init_containers_wait_for_dependencies_and_run_oneshots_in_order() -> None:
    files = k8s(manifest(K8S_PLATFORM), wait_image="example/wait:1")
    api = pod(docs(files["api.yaml"])["Deployment"])
    inits = api["initContainers"]
    assert [c["name"] for c in inits] == ["wait-for-db", "migrate"]
    assert inits[0] == {
        "name": "wait-for-db",
        "image": "example/wait:1",
        "command": ["sh", "-c", "until nc -z -w 2 db 5432; do echo waiting for db; sleep 2; done"],
    }
    assert inits[1]["image"] == "team/migrate:1" and inits[1]["args"] == ["alembic", "upgrade", "head"]
    assert "readinessProbe" not in inits[1]
    assert "migrate (kind = oneshot) runs as an init container here" in files["api.yaml"]
    web = pod(docs(files["web.yaml"])["Deployment"])
    assert [c["name"] for c in web["initContainers"]] == ["wait-for-api"]
    assert "initContainers" not in pod(docs(files["db.yaml"])["Deployment"])


def test_env_escapes_dollars_for_kubelet_expansion() -> None:
    api = pod(docs(k8s(manifest(K8S_PLATFORM))["api.yaml"])["Deployment"])["containers"][0]
    assert api["env"] == [
        {"name": "PRICE", "value": "$$5"},
        {"name": "MODE", "value": "container"},
        {"name": "PORT", "value": "8000"},
        {"name": "SVC_SERVICE", "value": "api"},
    ]


def test_a_worker_without_port_has_no_service_and_a_oneshot_nothing_needs_is_a_job() -> None:
    text = K8S_PLATFORM.replace('depends_on = ["migrate", "db"]', 'depends_on = ["db"]')
    files = k8s(manifest(text))
    assert set(docs(files["worker.yaml"])) == {"Deployment"}
    assert "# no port: no Service" in files["worker.yaml"]
    job = docs(files["migrate.yaml"])["Job"]
    assert job["spec"]["backoffLimit"] == 5
    assert pod(job)["restartPolicy"] == "Never"
    assert [c["name"] for c in pod(job)["initContainers"]] == ["wait-for-db"]


def test_restart_and_stop_signal_differences_are_said() -> None:
    files = k8s(manifest(K8S_PLATFORM))
    assert '# restart = "on-failure": a Deployment always restarts its pods' in files["db.yaml"]
    assert "# stop_signal = SIGINT: Kubernetes sends SIGTERM (or the image's STOPSIGNAL)" in files["db.yaml"]
    assert "restart =" not in files["api.yaml"]  # restart = "always" is what a Deployment does


def test_build_without_image_is_refused() -> None:
    with pytest.raises(ExportError) as caught:
        k8s(manifest(PLATFORM))
    assert [str(p) for p in caught.value.problems] == [
        f"{FILE}: error: services.api.export: a build context but no image: Kubernetes pulls images, "
        "it cannot build; set image to the pushed tag"
    ]


def test_names_kubernetes_refuses_are_errors_not_renamed() -> None:
    text = '[supervisor]\nname = "my platform"\n[export]\nimage = "x"\n[services.Api_1]\ncommand = "a"\n'
    with pytest.raises(ExportError) as caught:
        k8s(manifest(text))
    lines = [str(p) for p in caught.value.problems]
    assert lines[0].startswith(f'{FILE}: error: services.Api_1: "Api_1" cannot name a Kubernetes Deployment')
    assert lines[1].startswith(f'{FILE}: error: supervisor.name: "my platform" cannot be a Kubernetes label value')
    assert len(lines) == 2
