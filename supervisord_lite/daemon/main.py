"""The daemon: the composition root behind ``svc daemon`` (and the systemd unit).

It loads the manifest, takes the per-manifest lock, cleans up after a predecessor
that died without stopping its services, starts the metrics endpoint, the
supervisor and the control socket in one task group, and turns signals into
requests: SIGTERM/SIGINT stop everything in reverse order and exit 0, SIGHUP
reloads.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisord_lite.daemon import control_server
from supervisord_lite.core import paths
from supervisord_lite.core import protocol
from supervisord_lite.core import graph
from supervisord_lite.daemon import sdnotify
from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.model import Manifest
from supervisord_lite.core.problems import ManifestError
from supervisord_lite.core.states import GOOD_STATES
from supervisord_lite.host.files import tail_file
from supervisord_lite.host.recovery import remove_state
from supervisord_lite.runtime.recovery import reap_predecessor
from supervisord_lite.runtime.supervisor import Supervisor

log = structlog.get_logger("daemon")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class StartupError(Exception):
    """The daemon cannot start; ``code`` is its exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def prepare_state_dir(manifest: Manifest) -> None:
    """Create state_dir and logs/, and prove we can write there (clear error otherwise)."""
    sup = manifest.supervisor
    for folder, key in ((sup.state_dir, "supervisor.state_dir"), (sup.logs_dir, "supervisor.state_dir (logs)")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StartupError(f"{manifest.path}: {key}: cannot write to {folder}: {exc.strerror or exc}") from None


class DaemonLock:
    """One daemon per manifest: an exclusive flock on state_dir/daemon.lock."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StartupError(f"a daemon already runs for this manifest (pid {other}; lock {self.path})", EXIT_FAILED) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Daemon:
    """Answers control requests (the control_server.Handler protocol) for one Supervisor."""

    def __init__(self, manifest_path: Path, supervisor: Supervisor, metrics: Any = None) -> None:
        self.manifest_path = manifest_path
        self.sup = supervisor
        self.metrics = metrics
        self.shutdown_requested = anyio.Event()
        self._reload_lock = anyio.Lock()

    # -------------------------------------------------------------- ops

    async def handle(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise protocol.ControlError(f"unknown request {op!r}", 2)
        async for message in method(args):
            yield message

    async def op_ping(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield _done({"pid": os.getpid(), "manifest": str(self.sup.manifest.path)})

    async def op_status(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        snap = self.sup.snapshot(with_usage=bool(args.get("usage", True)))
        yield _done(snap.to_dict())

    async def op_up(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        names = _names(args)
        given = _float_arg(args, "timeout", 1.0) if "timeout" in args else None
        try:
            start_set = self.sup.up(names)
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), 2) from None
        if not args.get("wait", True):
            yield _done({"services": start_set})
            return
        timeout = given if given is not None else self.sup.settle_budget(start_set)
        async for message in self._progress(start_set, timeout):
            yield message

    async def op_restart(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        names = _names(args)
        if not names:
            raise protocol.ControlError("restart needs at least one service name", 2)
        try:
            _check_known(self.sup.manifest, names)
            if args.get("dependents"):
                names = sorted(set(names) | {d for n in names for d in graph.dependents(self.sup.manifest, n)})
            start_set = self.sup.restart(names)
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), 2) from None
        async for message in self._progress(start_set, self.sup.settle_budget(start_set)):
            yield message

    async def op_down(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        names = _names(args)
        try:
            if names:
                _check_known(self.sup.manifest, names)
            stopped = await self.sup.down(names)
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), 2) from None
        yield _done({"stopped": stopped, "services": [s.to_dict() for s in self.sup.snapshot().services if s.name in stopped]})

    async def op_reload(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield _done(await self.reload())

    async def op_shutdown(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield _done({"pid": os.getpid()})
        self.shutdown_requested.set()  # after the answer is sent: the server goes down with us

    async def op_tail(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        name = str(args.get("name", ""))
        runner = self.sup.runners.get(name)
        if runner is None:
            raise protocol.ControlError(f"no service named {name!r} in {self.sup.manifest.path}", 2)
        yield _done({"lines": runner.log.tail(_int_arg(args, "n", 20))})

    async def op_watch(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream a snapshot at every state change (for `svc status --watch`)."""
        last: Any = None
        heartbeat = _float_arg(args, "heartbeat", 2.0)
        while True:
            changed = self.sup.next_change()
            snap = self.sup.snapshot(with_usage=bool(args.get("usage", False))).to_dict()
            if snap != last:
                yield {"progress": snap}
                last = snap
            else:
                yield {"heartbeat": time.time()}  # so a client can tell a quiet daemon from a hung one
            with anyio.move_on_after(heartbeat):
                await changed.wait()

    # -------------------------------------------------------------- helpers

    async def _progress(self, names: list[str], timeout: float) -> AsyncIterator[dict[str, Any]]:
        wanted = set(names)
        final = None
        sent: dict[str, Any] = {}
        unsettled: list[str] = []
        async for snap in self.sup.wait_settled(names, timeout):
            final = snap
            unsettled = self.sup.unsettled(names)  # still on their way when the timeout hit
            # only what changed since the last update (snapshots are replaced, never mutated)
            changed = [s for s in snap.services if s.name in wanted and sent.get(s.name) is not s]
            sent.update((s.name, s) for s in changed)
            yield {"progress": [s.to_dict() for s in changed]}
        assert final is not None
        services = [s for s in final.services if s.name in wanted]
        failed = [s for s in services if s.state not in GOOD_STATES]
        tails = {s.name: self.sup.runners[s.name].log.tail(20) for s in failed if s.name in self.sup.runners}
        yield _done({"services": [s.to_dict() for s in services], "all_ready": not failed, "tails": tails,
                     "timed_out": bool(unsettled), "timeout": timeout, "unsettled": unsettled})

    async def reload(self) -> dict[str, Any]:
        async with self._reload_lock:
            try:
                new = await anyio.to_thread.run_sync(load_manifest, self.manifest_path)
            except ManifestError as exc:
                self.sup.reloads_error += 1
                log.error("reload refused: invalid manifest; the running one stays", errors=str(exc))
                raise protocol.ControlError(f"reload refused, the running manifest stays:\n{exc}", 2) from None
            if not new.services and self.sup.manifest.services:
                self.sup.reloads_error += 1
                raise protocol.ControlError(
                    f"reload refused, the running manifest stays: {self.manifest_path} now lists no services "
                    "(a file caught half-written?); to stop everything, use `svc down`",
                    2,
                )
            if new.supervisor != self.sup.manifest.supervisor:
                log.warning("[supervisor] changes take effect at the next daemon start")
                new = _keep_supervisor(new, self.sup.manifest)
            result = await self.sup.reload(new)
            log.info("reloaded", **result)
            return result


def _keep_supervisor(new: Manifest, old: Manifest) -> Manifest:
    from dataclasses import replace

    return replace(new, supervisor=old.supervisor)


def _done(result: Any) -> dict[str, Any]:
    return {"done": True, "ok": True, "result": result}


def _names(args: dict[str, Any]) -> list[str] | None:
    names = args.get("names")
    if not names:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise protocol.ControlError("'names' must be a list of service names", 2)
    return names


def _int_arg(args: dict[str, Any], key: str, default: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise protocol.ControlError(f"{key!r} must be a whole number, got {value!r}", 2)
    return value


def _float_arg(args: dict[str, Any], key: str, default: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise protocol.ControlError(f"{key!r} must be a number of seconds above 0, got {value!r}", 2)
    return float(value)


def _check_known(manifest: Manifest, names: list[str]) -> None:
    unknown = [n for n in names if n not in manifest.services]
    if unknown:
        raise KeyError(f"no service named {', '.join(map(repr, unknown))} in {manifest.path}")


def _message(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, KeyError) and "no service named" in text:
        text += " (the daemon runs the manifest as last loaded: after adding a service, run `svc reload`)"
    return text


# ------------------------------------------------------------------ main


async def run_daemon(manifest_path: Path) -> int:
    manifest = load_manifest(manifest_path)
    prepare_state_dir(manifest)
    lock = DaemonLock(manifest.supervisor.state_dir)
    lock.acquire()
    try:
        return await _run_locked(manifest_path, manifest)
    finally:
        lock.release()


async def _run_locked(manifest_path: Path, manifest: Manifest) -> int:
    from supervisord_lite.daemon.httpserver import MetricsAddressError, MetricsServer
    from supervisord_lite.daemon.metrics import Metrics

    resume = await reap_predecessor(manifest)
    supervisor: Supervisor | None = None

    def snapshot() -> Any:
        assert supervisor is not None
        return supervisor.snapshot(with_usage=True)

    metrics = Metrics(snapshot)
    supervisor = Supervisor(manifest, observe_probe=metrics.observe_probe, forget_service=metrics.forget)
    server = None
    address = manifest.supervisor.metrics_address
    if address is not None:
        server = MetricsServer(
            address,
            snapshot,
            metrics=metrics,
            manifest=str(manifest.path),
            extra_routes=_status_page_routes(supervisor, snapshot),
        )
        try:
            server.start()
        except MetricsAddressError as exc:
            raise StartupError(str(exc)) from None
    daemon = Daemon(manifest_path, supervisor, metrics)
    sock_path = paths.socket_path_for(manifest.supervisor.state_dir)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            await tg.start(lambda task_status: control_server.serve(sock_path, daemon, task_status=task_status, on_error=lambda m: log.error(m)))
            tg.start_soon(_signals, daemon)
            tg.start_soon(_watchdog)
            log.info("daemon ready", pid=os.getpid(), manifest=str(manifest.path), socket=str(sock_path),
                     metrics=manifest.supervisor.metrics or "off")
            sdnotify.notify("READY=1", f"STATUS=serving {len(manifest.services)} services")
            if resume:
                log.warning("resuming services a previous daemon was running", services=resume)
                supervisor.up(resume)
            tg.start_soon(_status_lines, supervisor)
            await daemon.shutdown_requested.wait()
            sdnotify.notify("STOPPING=1", "STATUS=stopping services")
            log.info("shutting down: stopping every service in reverse order")
            with anyio.CancelScope(shield=True):
                await supervisor.shutdown()
            tg.cancel_scope.cancel()
    finally:
        if server is not None:
            server.stop()
        remove_state(manifest.supervisor.state_file)
    log.info("daemon stopped")
    return EXIT_OK


def _status_page_routes(supervisor: Supervisor, snapshot: Any) -> dict[str, Any]:
    """The read-only status page beside /metrics, when it is built."""
    try:
        from supervisord_lite.daemon.statuspage import routes
    except ImportError:
        return {}

    def tail(name: str, n: int) -> list[str]:
        manifest = supervisor.manifest
        if name not in manifest.services:  # never a path from the request
            return []
        return tail_file(manifest.supervisor.logs_dir / f"{name}.log", n)

    return routes(get_snapshot=snapshot, get_manifest=lambda: supervisor.manifest, tail=tail)


async def _signals(daemon: Daemon) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading the manifest")
                try:
                    await daemon.reload()
                except protocol.ControlError:
                    pass  # already logged; the running manifest stays
            else:
                log.info("signal: shutting down", signal=signal.Signals(signum).name)
                daemon.shutdown_requested.set()


async def _watchdog() -> None:
    interval = sdnotify.watchdog_interval()
    if not interval:
        return
    while True:
        sdnotify.notify("WATCHDOG=1")
        await anyio.sleep(interval / 2)


async def _status_lines(sup: Supervisor) -> None:
    """Keep systemd's STATUS= line current (`systemctl status` shows it)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    last = ""
    while True:
        changed = sup.next_change()
        counts: dict[str, int] = {}
        for s in sup.snapshot().services:
            counts[s.state.value] = counts.get(s.state.value, 0) + 1
        line = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        if line != last:
            sdnotify.notify(f"STATUS={line}")
            last = line
        await changed.wait()
        await anyio.sleep(0.5)  # coalesce bursts of changes into one line


def main(manifest_path: Path, json_logs: bool | None = None) -> int:
    """Run the daemon in the foreground; returns the exit status."""
    from supervisord_lite.runtime.logs import configure_logging

    configure_logging(json_logs)
    try:
        return anyio.run(run_daemon, manifest_path)
    except ManifestError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        print(f"svc daemon: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_OK

