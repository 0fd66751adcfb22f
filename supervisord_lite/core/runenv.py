"""The variables `svc run` gives its command: where each service of the platform is.

For a service ``payments-api`` with port 8001 and ``url = "http://localhost:{port}/"``:

    SVC_PAYMENTS_API_PORT=8001
    SVC_PAYMENTS_API_URL=http://localhost:8001/

The name is upper-cased and every character other than a letter or digit becomes
``_``. ``SVC_MANIFEST`` is the manifest's absolute path, so an ``svc`` run inside the
command talks to the same platform. Pure: the caller says which services are up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from supervisord_lite.core.model import Manifest

PREFIX = "SVC_"


def variable_stem(service: str) -> str:
    """``payments-api`` -> ``SVC_PAYMENTS_API``."""
    return PREFIX + re.sub(r"[^A-Za-z0-9]", "_", service).upper()


@dataclass(frozen=True, slots=True)
class RunEnvironment:
    variables: dict[str, str]
    #: service names whose variables would collide with an earlier service's (left out)
    clashes: list[tuple[str, str]] = field(default_factory=list)


def run_environment(manifest: Manifest, up: Iterable[str]) -> RunEnvironment:
    """The variables for the services in ``up`` (each with a port gets ``_PORT``, each
    with a url ``_URL``), in the manifest's order. Two names that map to the same stem
    (``api-v1`` and ``api.v1``) cannot both be said: the first keeps it, the clash is
    reported."""
    wanted = set(up)
    variables = {"SVC_MANIFEST": str(manifest.path.resolve())}
    owner: dict[str, str] = {}
    clashes: list[tuple[str, str]] = []
    for spec in manifest.services.values():
        if spec.name not in wanted:
            continue
        stem = variable_stem(spec.name)
        if stem in owner:
            clashes.append((owner[stem], spec.name))
            continue
        owner[stem] = spec.name
        if spec.port is not None:
            variables[f"{stem}_PORT"] = str(spec.port)
        if spec.url:
            variables[f"{stem}_URL"] = spec.url
    return RunEnvironment(variables, clashes)
