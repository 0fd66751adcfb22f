"""The per-user registry of manifests: which projects claim which ports on this machine.

One JSON file, ``$SVC_REGISTRY`` when set (tests), else ``$XDG_STATE_HOME/svc/registry.json``
(default ``~/.local/state/svc/registry.json``). Many ``svc`` processes and daemons write it
at once, so every change is a read-modify-write under ``fcntl.flock`` on ``registry.lock``
beside it, and lands with write-temp-then-rename (a reader sees the old file or the new
one). The folder is 0700, the files 0600, opened without following links (``host.statedir``).

The registry is advice, never a reason to fail: an unreadable or corrupt file is reported
on stderr in one line and rebuilt; entries whose manifest file is gone are dropped.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from supervisord_lite.core.machine import Claim, claim_of
from supervisord_lite.core.model import Manifest
from supervisord_lite.host import statedir

ENV_VAR = "SVC_REGISTRY"
FILE_NAME = "registry.json"
LOCK_NAME = "registry.lock"
FORMAT_VERSION = 1
_LIMIT = 8 * 2**20

Report = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"svc: {message}", file=sys.stderr, flush=True)


def registry_path() -> Path:
    """Where this user's registry lives (see the module's docstring)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(os.path.abspath(explicit))
    state_home = os.environ.get("XDG_STATE_HOME")
    if not state_home or not os.path.isabs(state_home):
        state_home = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "svc" / FILE_NAME


def _parse(data: bytes, path: Path, report: Report) -> tuple[list[Claim], bool]:
    """The claims in ``data``, and whether the file must be rewritten (it was corrupt)."""
    if not data.strip():
        return [], False
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
            raise ValueError("not a registry document")
        claims = [Claim.from_json(item) for item in doc["entries"]]
    except (ValueError, UnicodeDecodeError) as exc:
        report(f"the registry {path} is corrupt ({str(exc)[:120]}); rebuilding it from the manifests svc sees next")
        return [], True
    return claims, False


def _read(path: Path, report: Report) -> tuple[list[Claim], bool]:
    try:
        data = statedir.read_trusted(path, limit=_LIMIT)
    except FileNotFoundError:
        return [], False
    except (OSError, statedir.UntrustedFile) as exc:
        report(f"the registry {path} could not be read ({exc}); rebuilding it")
        return [], True
    return _parse(data, path, report)


def _is_present(claim: Claim) -> bool:
    return os.path.isfile(claim.manifest)


def _raw_entries(path: Path) -> list[dict[str, Any]] | None:
    """The file's entries unparsed, each naming its manifest ([] when there is no file);
    None when it cannot be read or is not a registry (``_read`` says why)."""
    try:
        doc = json.loads(statedir.read_trusted(path, limit=_LIMIT))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, UnicodeDecodeError, statedir.UntrustedFile):
        return None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return None
    if not all(isinstance(e, dict) and isinstance(e.get("manifest"), str) for e in entries):
        return None
    return entries


def _entry_key(entry: dict[str, Any]) -> tuple[str, Any]:
    """An unparsed entry's ``Claim.key``."""
    return entry["manifest"], entry.get("instance", 0)


def _write(path: Path, claims: list[Claim]) -> None:
    _write_entries(path, [c.to_json() for c in claims])


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    doc = {"version": FORMAT_VERSION, "entries": entries}
    # compact: the C encoder (indent= takes the pure-Python one, 15x slower on a registry of big platforms)
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    statedir.write_atomic(path, data, f".{FILE_NAME}.{os.getpid()}.tmp")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    statedir.ensure_private_dir(path.parent)
    fd = statedir.open_file(path.with_name(LOCK_NAME), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing lets go of the lock


def update(change: Callable[[list[Claim]], list[Claim]], *, report: Report = _stderr) -> list[Claim]:
    """Apply ``change`` to the registry's claims under the lock and write the result
    (claims of deleted manifests pruned). Returns what was written."""
    path = registry_path()
    with _locked(path):
        claims, _ = _read(path, report)
        claims = [c for c in change(claims) if _is_present(c)]
        _write(path, claims)
        return claims


def claims(*, report: Report = _stderr) -> list[Claim]:
    """Every registered manifest whose file still exists. Rewrites the file (under the lock)
    only when something must go: a deleted manifest's claim, or a corrupt file."""
    path = registry_path()
    found, corrupt = _read(path, report)
    if corrupt or not all(_is_present(c) for c in found):
        try:
            return update(lambda current: current, report=lambda _message: None)  # said once above
        except (OSError, statedir.UnsafeStateDir) as exc:
            report(f"the registry {path} could not be rewritten ({exc})")
            return [c for c in found if _is_present(c)]
    return found


def manifest_text(path: Path) -> str | None:
    """The manifest's text (for the lines of its claims), None when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(_LIMIT)
    except OSError:
        return None


def record(
    manifest: Manifest,
    *,
    instance: int | None = None,
    daemon_pid: int | None | bool = False,
    report: Report = _stderr,
) -> list[Claim]:
    """Record (or refresh) ``manifest`` and return every other registered claim.

    ``daemon_pid``: an int records a running daemon, None records that none runs, and the
    default (False) keeps what was recorded when its daemon is still alive. Never raises:
    a registry that cannot be written is reported and the claims seen so far returned."""
    mine = claim_of(manifest, manifest_text(manifest.path), instance=instance)
    entries = _unchanged(mine) if daemon_pid is False else None  # a daemon records a new pid: always a write
    if entries is not None:
        try:
            return [claim for claim in map(Claim.from_json, entries) if claim.key != mine.key]
        except ValueError:
            pass  # a malformed entry: the rewrite below says so and rebuilds the file
    written = _write_claim(mine, daemon_pid, report)
    return [c for c in written if c.key != mine.key]


def refresh(manifest: Manifest, *, report: Report = _stderr) -> None:
    """``record`` for a caller that needs no other claim (`svc up`): when the file already
    holds this manifest's claim as it would be written, nothing is parsed beyond it and
    nothing is written."""
    mine = claim_of(manifest, manifest_text(manifest.path))
    if _unchanged(mine) is None:
        _write_claim(mine, False, report)


def _pid_to_record(recorded: int | None, daemon_pid: int | None | bool) -> int | None:
    """The daemon pid ``record`` writes, given the one recorded (see ``record``)."""
    if daemon_pid is False:
        return recorded if recorded is not None and daemon_alive(recorded) else None
    return daemon_pid if isinstance(daemon_pid, int) else None


def _unchanged(mine: Claim) -> list[dict[str, Any]] | None:
    """The file's entries (unparsed) when recording ``mine`` (keeping a live daemon's pid)
    would change nothing: it holds ``mine`` with the pid ``record`` would write, and every
    manifest it names still exists. None when the file must be written (or cannot be read: the writer says why).
    Read without the lock: writers replace the file whole, so this sees one of them."""
    entries = _raw_entries(registry_path())
    if entries is None:
        return None
    found = None
    for entry in entries:
        manifest = entry["manifest"]
        if not os.path.isfile(manifest):
            return None  # a deleted manifest's claim to prune
        if _entry_key(entry) == mine.key:
            if found is not None:
                return None
            found = entry
    if found is None:
        return None
    try:
        recorded = Claim.from_json(found)
    except ValueError:
        return None
    return entries if recorded == _with_pid(mine, _pid_to_record(recorded.daemon_pid, False)) else None


def _write_claim(mine: Claim, daemon_pid: int | None | bool, report: Report) -> list[Claim]:
    """Write ``mine`` into the registry under the lock; every claim written ([] when the
    file could not be written: reported)."""

    def change(current: list[Claim]) -> list[Claim]:
        kept = None
        rest = []
        for c in current:
            if c.key == mine.key:
                kept = c.daemon_pid
            else:
                rest.append(c)
        rest.append(_with_pid(mine, _pid_to_record(kept, daemon_pid)))
        return rest

    try:
        return update(change, report=report)
    except (OSError, statedir.UnsafeStateDir) as exc:
        report(f"the registry {registry_path()} could not be written ({exc}); continuing without it")
        return []


def clear_daemon(manifest: Manifest, *, pid: int | None = None) -> None:
    """The daemon of ``manifest`` stopped: forget its pid (when ``pid`` is given, only if it is that one)."""
    key = (str(manifest.path.resolve()), manifest.supervisor.instance)

    def change(current: list[Claim]) -> list[Claim]:
        return [
            _with_pid(c, None) if c.key == key and (pid is None or c.daemon_pid == pid) else c for c in current
        ]

    try:
        update(change)
    except (OSError, statedir.UnsafeStateDir) as exc:
        _stderr(f"the registry {registry_path()} could not be written ({exc})")


@contextmanager
def daemon_registered(manifest: Manifest) -> Iterator[None]:
    """While the daemon runs, the registry names its pid; cleared when it stops."""
    _record_daemon(manifest, os.getpid())
    try:
        yield
    finally:
        clear_daemon(manifest, pid=os.getpid())


def _record_daemon(manifest: Manifest, pid: int) -> None:
    """Record ``manifest`` with its daemon's ``pid``, the other projects' entries carried
    over as they are: a daemon's start does not pay for parsing every claim on the
    machine (a malformed entry is reported and dropped by the next command that reads
    them all). A file that is not a registry is reported and rebuilt, as ``record`` does."""
    mine = _with_pid(claim_of(manifest, manifest_text(manifest.path)), pid)
    path = registry_path()
    try:
        with _locked(path):
            entries = _raw_entries(path)
            if entries is not None:
                kept = [e for e in entries if _entry_key(e) != mine.key and os.path.isfile(e["manifest"])]
                _write_entries(path, [*kept, mine.to_json()])
                return
    except (OSError, statedir.UnsafeStateDir) as exc:
        _stderr(f"the registry {path} could not be written ({exc}); continuing without it")
        return
    record(manifest, daemon_pid=pid)


def _with_pid(claim: Claim, pid: int | None) -> Claim:
    return replace(claim, daemon_pid=pid)


def daemon_alive(pid: int | None) -> bool:
    """Is ``pid`` a live process (not a zombie)? A recorded pid may have been reused; the
    caller that must be sure asks the daemon itself."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def running_daemon(claim: Claim) -> int | None:
    """The claim's daemon pid when that process still lives."""
    return claim.daemon_pid if daemon_alive(claim.daemon_pid) else None
