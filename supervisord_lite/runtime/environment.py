"""What a service runs with: its environment and the user it runs as.

Every problem (a missing env_file, an unknown user, a user a non-root daemon cannot
switch to) becomes a ``SpawnError`` naming the service, before anything is started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from supervisord_lite.core.envfiles import parse_env_file
from supervisord_lite.core.model import ServiceSpec
from supervisord_lite.core.systemdenv import SYSTEMD_VARIABLES

__all__ = ["SpawnError", "load_env_file", "service_environment", "user_kwargs"]


class SpawnError(Exception):
    """The service could not be started; the message says why, naming service and cause."""


def load_env_file(path: Path, service: str) -> dict[str, str]:
    """Read ``service``'s env_file; every problem becomes a SpawnError naming file and service."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpawnError(f"{service}: env_file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SpawnError(f"{service}: cannot read env_file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpawnError(f"{service}: env_file {str(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        return parse_env_file(text, source=f"env_file {str(path)!r}")
    except ValueError as exc:
        raise SpawnError(f"{service}: {exc}") from None


def service_environment(
    spec: ServiceSpec,
    *,
    instance_id: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a service (or its exec probes) runs with.

    Layers, later wins: ``base`` (default: the daemon's os.environ) without systemd's
    variables for the daemon's unit, HOME/USER/LOGNAME of ``spec.user``, the env_file,
    ``spec.env``, ``extra_env``, then PORT, SVC_SERVICE and SVC_INSTANCE (when
    ``instance_id`` is given), which nothing overrides.
    """
    env = dict(os.environ if base is None else base)
    for name in SYSTEMD_VARIABLES:
        env.pop(name, None)
    if spec.user:
        pw = _lookup_user(spec)
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    for env_file in spec.env_files:
        env.update(load_env_file(env_file, spec.name))
    env.update(spec.env)
    if extra_env:
        env.update(extra_env)
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    env["SVC_SERVICE"] = spec.name
    if instance_id is not None:
        env["SVC_INSTANCE"] = instance_id
    else:
        env.pop("SVC_INSTANCE", None)
    return env


def user_kwargs(spec: ServiceSpec) -> dict[str, object]:
    """``subprocess.Popen`` arguments that drop privileges to ``spec.user`` (none when unset)."""
    if not spec.user:
        return {}
    pw = _lookup_user(spec)
    euid = os.geteuid()
    if euid == 0:
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups}
    if pw.pw_uid == euid:
        return {}
    me = pwd.getpwuid(euid).pw_name if euid >= 0 else str(euid)
    raise SpawnError(
        f"{spec.name}: cannot run as user {pw.pw_name!r} (key 'user'): the daemon runs as {me!r}, not root; "
        f"run the daemon as root or remove 'user'"
    )


def _lookup_user(spec: ServiceSpec) -> pwd.struct_passwd:
    """``spec.user`` by name, or by number when no user has that name."""
    assert spec.user is not None
    try:
        return pwd.getpwnam(spec.user)
    except KeyError:
        if spec.user.isdigit():
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(int(spec.user))
        raise SpawnError(f"{spec.name}: user {spec.user!r} (key 'user') does not exist on this machine") from None
