"""The daemon: the composition root behind ``svc daemon`` (and the systemd unit).

It loads the manifest, takes the per-manifest lock, cleans up after a predecessor
that died without stopping its services, starts the metrics endpoint, the
supervisor and the control socket in one task group, starts again what was wanted
when the last daemon stopped (``[supervisor] restore``), and turns signals into
requests: SIGTERM/SIGINT stop everything in reverse order, keeping the wanted set
for the next start, and exit 0; SIGHUP reloads.

Nothing a request, a signal or a manifest brings may end the daemon (its end would
orphan every service): a reload that fails is refused with its reason and the
running manifest stays, an op that fails unexpectedly is logged and answered, and
a helper task that fails (signals, watchdog, status line, control socket) is
logged and started again (daemon/background.py).
"""

from __future__ import annotations

import fcntl
import gc
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisord_lite.daemon import control_server
from supervisord_lite.core import protocol
from supervisord_lite.core import graph
from supervisord_lite.core.exitcodes import ExitCode
from supervisord_lite.daemon import sdnotify
from supervisord_lite.daemon.background import handle_signals, keep_running, serve_control, status_lines, trim_after_bursts, watchdog
from supervisord_lite.core.manifest import load_manifest
from supervisord_lite.core.model import Manifest
from supervisord_lite.core.problems import ManifestError
from supervisord_lite.core.states import GOOD_STATES
from supervisord_lite.host.files import tail_file
from supervisord_lite.host import statedir
from supervisord_lite.host import registry
from supervisord_lite.host.fdlimit import fit_open_file_limit
from supervisord_lite.host.malloc import keep_large_blocks_mapped
from supervisord_lite.host.recovery import write_state
from supervisord_lite.runtime.recovery import reap_predecessor
from supervisord_lite.runtime.supervisor import Supervisor

log = structlog.get_logger("daemon")

class StartupError(Exception):
    """The daemon cannot start; ``code`` is its exit status."""

    def __init__(self, message: str, code: int = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


def prepare_state_dir(manifest: Manifest) -> None:
    """Claim state_dir and logs/ (created 0700, refused when another user could write
    there: host.statedir), and prove we can write there (clear error otherwise)."""
    sup = manifest.supervisor
    statedir.report_to(lambda message: log.warning(message))
    for folder, key in ((sup.state_dir, "supervisor.state_dir"), (sup.logs_dir, "supervisor.state_dir (logs)")):
        try:
            if folder == sup.state_dir:
                statedir.claim(folder)
            else:
                statedir.ensure_private_dir(folder)
            statedir.probe_writable(folder)
        except statedir.UnsafeStateDir as exc:
            raise StartupError(f"{manifest.path}: {key}: {exc}", exc.code) from None
        except OSError as exc:
            raise StartupError(f"{manifest.path}: {key}: cannot write to {folder}: {exc.strerror or exc}") from None


class DaemonLock:
    """One daemon per manifest: an exclusive flock on state_dir/daemon.lock."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = statedir.open_file(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StartupError(f"cannot open the lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StartupError(f"a daemon already runs for this manifest (pid {other}; lock {self.path})", ExitCode.FAILED) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Daemon:
    """Answers control requests (the control_server.Handler protocol) for one Supervisor."""

    def __init__(
        self,
        manifest_path: Path,
        supervisor: Supervisor,
        metrics: Any = None,
        left_by_predecessor: dict[str, dict[str, list[int]]] | None = None,
    ) -> None:
        self.manifest_path = manifest_path
        self.sup = supervisor
        self.metrics = metrics
        # what this daemon stopped (or could not) of a dead predecessor's, for the command that started it to tell
        self.left_by_predecessor = left_by_predecessor or {}
        self.shutdown_requested = anyio.Event()
        self._reload_lock = anyio.Lock()

    # -------------------------------------------------------------- ops

    async def handle(self, op: str, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise protocol.ControlError(f"unknown request {op!r}", ExitCode.USAGE)
        try:
            async for message in method(args):
                yield message
        except protocol.ControlError:
            raise
        except Exception as exc:  # a bug in one op: log it whole, answer it, keep serving
            log.exception("control request failed", op=op)
            raise protocol.ControlError(f"internal error in {op!r}: {type(exc).__name__}: {_short(exc)}", ExitCode.FAILED) from None

    async def op_ping(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        answer: dict[str, Any] = {"pid": os.getpid(), "manifest": str(self.sup.manifest.path)}
        if self.left_by_predecessor:
            answer["left_by_predecessor"] = self.left_by_predecessor
        yield _done(answer)

    async def op_status(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        snap = self.sup.snapshot(with_usage=bool(args.get("usage", True)))
        yield _done(snap.to_dict())

    async def op_up(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        names = _names(args)
        given = _float_arg(args, "timeout", 1.0) if "timeout" in args else None
        try:
            start_set = self.sup.up(names, forget_restarts=True)
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), ExitCode.USAGE) from None
        command = self.sup.last_command
        if not args.get("wait", True):
            yield _done({"services": start_set})
            return
        timeout = given if given is not None else self.sup.settle_budget(start_set)
        async for message in self._progress(start_set, timeout, command):
            yield message

    async def op_restart(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        names = _names(args)
        if not names:
            raise protocol.ControlError("restart needs at least one service name", ExitCode.USAGE)
        try:
            _check_known(self.sup.manifest, names)
            if args.get("dependents"):
                names = sorted(set(names) | {d for n in names for d in graph.dependents(self.sup.manifest, n)})
            start_set = self.sup.restart(names)
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), ExitCode.USAGE) from None
        command = self.sup.last_command
        async for message in self._progress(start_set, self.sup.settle_budget(start_set), command):
            yield message

    async def op_down(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        names = _names(args)
        try:
            if names:
                _check_known(self.sup.manifest, names)
            stopped, taken_over = await self.sup.down(names)
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), ExitCode.USAGE) from None
        yield _done({
            "stopped": stopped,
            "taken_over": taken_over,
            "services": [s.to_dict() for s in self.sup.snapshot().services if s.name in stopped],
        })

    async def op_reload(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield _done(await self.reload())

    async def op_shutdown(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield _done({"pid": os.getpid()})
        self.shutdown_requested.set()  # after the answer is sent: the server goes down with us

    async def op_signal(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Send a signal to each named service's process group (`svc signal`): only to a
        process this daemon started or adopted, as it records it; never restarts anything."""
        from supervisord_lite.core.values import parse_signal

        names = _names(args)
        if not names:
            raise protocol.ControlError("signal needs at least one service name", ExitCode.USAGE)
        if "signal" not in args:
            raise protocol.ControlError("signal needs 'signal': a name such as \"SIGHUP\" or a number", ExitCode.USAGE)
        try:
            _check_known(self.sup.manifest, names)
            sig = parse_signal(args["signal"])
        except (KeyError, ValueError) as exc:
            raise protocol.ControlError(_message(exc), ExitCode.USAGE) from None
        signalled, not_running = [], []
        for name in names:
            runner = self.sup.runners[name]
            proc = runner.proc
            if proc is not None and proc.returncode is None:
                runner.log.mark(f"sent {sig.name} to process group {proc.pgid} (svc signal)")
                proc.send_signal(sig)
                signalled.append({"name": name, "pgid": proc.pgid})
            else:
                not_running.append(name)
        log.info("signal sent", signal=sig.name, services=[s["name"] for s in signalled], not_running=not_running)
        yield _done({"signal": sig.name, "signalled": signalled, "not_running": not_running})

    async def op_tail(self, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        name = str(args.get("name", ""))
        runner = self.sup.runners.get(name)
        if runner is None:
            raise protocol.ControlError(f"no service named {name!r} in {self.sup.manifest.path}", ExitCode.USAGE)
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

    async def _progress(self, names: list[str], timeout: float, command: int) -> AsyncIterator[dict[str, Any]]:
        """Progress of the up or restart numbered ``command`` until ``names`` settle, then
        its outcome: what is ready, what failed and why, and what a later command took
        back (or a reload removed) before they settled, which is not a failure of theirs."""
        wanted = set(names)
        sent: dict[str, Any] = {}
        async for candidates in self.sup.wait_settled(names, timeout):
            runners = self.sup.runners  # a reload may have replaced some
            # only what changed since the last update (snapshots are replaced, never mutated)
            changed = [s for s in (runners[n].snap for n in candidates if n in runners) if sent.get(s.name) is not s]
            sent.update((s.name, s) for s in changed)
            yield {"progress": [s.to_dict() for s in changed]}
        unsettled = self.sup.unsettled(names)  # still on their way when the timeout hit
        taken_back, removed = self.sup.overtaken(names, command)
        services = [s for s in self.sup.snapshot().services if s.name in wanted]
        elsewhere = set(taken_back) | set(removed)
        failed = [s for s in services if s.state not in GOOD_STATES and s.name not in elsewhere]
        tails = {s.name: self.sup.runners[s.name].log.tail(20) for s in failed if s.name in self.sup.runners}
        await self.sup.state_flushed()  # what it reports is on record for a successor before the answer
        yield _done({"services": [s.to_dict() for s in services], "all_ready": not failed and not elsewhere,
                     "tails": tails, "timed_out": bool(unsettled), "timeout": timeout, "unsettled": unsettled,
                     "taken_back": taken_back, "removed": removed})

    async def reload(self) -> dict[str, Any]:
        """Load the manifest again and apply the difference. Every failure is a
        ControlError (code 2: the manifest; code 1: applying it) and leaves the
        daemon, its services and the running manifest in place."""
        async with self._reload_lock:
            new = await self._load_for_reload()
            if new.supervisor != self.sup.manifest.supervisor:
                log.warning("[supervisor] changes take effect at the next daemon start")
                new = _keep_supervisor(new, self.sup.manifest)
            _fit_open_file_limit(new)
            try:
                result = await self.sup.reload(new)
            except Exception as exc:
                self.sup.reloads_error += 1
                log.exception("reload failed while applying the new manifest; the daemon and its services stay")
                raise protocol.ControlError(
                    f"reload failed while applying {self.manifest_path}: {type(exc).__name__}: {_short(exc)} "
                    "(the daemon and its services keep running; details in the daemon log)",
                    ExitCode.FAILED,
                ) from None
            log.info("reloaded", **result)
            return result

    async def _load_for_reload(self) -> Manifest:
        def refuse(reason: str) -> protocol.ControlError:
            self.sup.reloads_error += 1
            log.error("reload refused; the running manifest stays", reason=reason)
            return protocol.ControlError(f"reload refused, the running manifest stays:\n{reason}", ExitCode.USAGE)

        try:
            # the same files as at start: svc.local.toml beside it by the rule, and every further -f
            new = await anyio.to_thread.run_sync(load_manifest, self.manifest_path, self.sup.manifest.overlays)
        except ManifestError as exc:
            raise refuse(str(exc)) from None
        except Exception as exc:  # the loader should say ManifestError; whatever it says, the file is at fault
            raise refuse(f"{self.manifest_path}: cannot be loaded: {type(exc).__name__}: {_short(exc)}") from None
        if not new.services and self.sup.manifest.services:
            raise refuse(
                f"{self.manifest_path} now lists no services (a file caught half-written?); to stop everything, use `svc down`"
            )
        return new


def _fit_open_file_limit(manifest: Manifest) -> None:
    """Enough open files for every service (three each); say so when the hard limit
    does not allow it, before a spawn fails with "Too many open files"."""
    limit = fit_open_file_limit(len(manifest.services))
    if limit.soft != limit.before:
        log.info("open-file limit raised for the services", before=limit.before, soft=limit.soft, hard=limit.hard)
    if not limit.enough:
        log.warning(
            f"{len(manifest.services)} services need at least {limit.minimum} open files, but the hard limit is "
            f"{limit.hard}: some may fail to start with \"Too many open files\" (raise LimitNOFILE= in the systemd "
            "unit, or `ulimit -Hn` where the daemon starts)",
            soft=limit.soft, hard=limit.hard, needed=limit.minimum,
        )


def _keep_supervisor(new: Manifest, old: Manifest) -> Manifest:
    from dataclasses import replace

    return replace(new, supervisor=old.supervisor)


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception's text, cut short (an OverflowError can quote a 400-digit number)."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"


def _done(result: Any) -> dict[str, Any]:
    return {"done": True, "ok": True, "result": result}


def _names(args: dict[str, Any]) -> list[str] | None:
    names = args.get("names")
    if not names:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise protocol.ControlError("'names' must be a list of service names", ExitCode.USAGE)
    return names


def _int_arg(args: dict[str, Any], key: str, default: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise protocol.ControlError(f"{key!r} must be a whole number, got {value!r}", ExitCode.USAGE)
    return value


def _float_arg(args: dict[str, Any], key: str, default: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise protocol.ControlError(f"{key!r} must be a number of seconds above 0, got {value!r}", ExitCode.USAGE)
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


async def run_daemon(manifest_path: Path, overlays: tuple[Path, ...] = ()) -> int:
    manifest = load_manifest(manifest_path, overlays)
    _fit_open_file_limit(manifest)
    try:
        prepare_state_dir(manifest)
        lock = DaemonLock(manifest.supervisor.state_dir)
        lock.acquire()
        try:
            with registry.daemon_registered(manifest):
                return await _run_locked(manifest_path, manifest)
        finally:
            lock.release()
    finally:
        statedir.release(manifest.supervisor.state_dir)


async def _run_locked(manifest_path: Path, manifest: Manifest) -> int:
    from supervisord_lite.daemon.httpserver import MetricsAddressError, MetricsServer
    from supervisord_lite.daemon.metrics import Metrics

    try:
        sock_path = control_server.claim_path(manifest.supervisor.state_dir)
    except control_server.SocketPathError as exc:
        raise StartupError(str(exc)) from None
    predecessor = await reap_predecessor(manifest)
    resume = predecessor.wanted
    supervisor: Supervisor | None = None
    ran = False

    def snapshot() -> Any:
        assert supervisor is not None
        return supervisor.snapshot(with_usage=True)

    metrics = Metrics(snapshot)
    supervisor = Supervisor(manifest, observe_probe=metrics.observe_probe, forget_service=metrics.forget)
    supervisor.carry_restarts(predecessor.restarts)
    supervisor.port_sweep.observe_with(metrics)
    _spare_the_collector()
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
    daemon = Daemon(manifest_path, supervisor, metrics, predecessor.report())
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            ran = True
            if resume:  # before any request can arrive: a `svc down` at once must win
                log.warning("starting what the previous daemon was asked to run", services=resume)
                supervisor.up(resume)
            await tg.start(serve_control, sock_path, daemon)
            tg.start_soon(keep_running, "signal handling", handle_signals, daemon, tg)
            tg.start_soon(keep_running, "systemd watchdog", watchdog)
            log.info("daemon ready", pid=os.getpid(), manifest=str(manifest.path), socket=str(sock_path),
                     metrics=manifest.supervisor.metrics or "off")
            sdnotify.notify("READY=1", f"STATUS=serving {len(manifest.services)} services")
            tg.start_soon(keep_running, "systemd status line", status_lines, supervisor)
            tg.start_soon(keep_running, "returning freed memory", trim_after_bursts, supervisor)
            await daemon.shutdown_requested.wait()
            sdnotify.notify("STOPPING=1", "STATUS=stopping services")
            log.info("shutting down: stopping every service in reverse order")
            supervisor.keep_wanted_set()
            with anyio.CancelScope(shield=True):
                await supervisor.shutdown()
            tg.cancel_scope.cancel()
    finally:
        if server is not None:
            server.stop()
        if ran:  # a daemon that never ran leaves its predecessor's wanted set as it found it
            _write_final_state(supervisor)
    log.info("daemon stopped")
    return ExitCode.OK


#: the young generation's allocation threshold (Python's default is 700)
GC_YOUNG_THRESHOLD = 10_000


def _spare_the_collector() -> None:
    """What the daemon built to start (its modules, the manifest, a runner per service)
    lives as long as it does: take it out of the cyclic collector's sight (``gc.freeze``),
    and let the young generation grow larger between collections. Otherwise, at 1000
    services, the collector scanned those same objects again and again during a start
    burst: about a quarter of the daemon's CPU in a cold `svc up`. Garbage cycles are
    still collected, only in larger batches."""
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _write_final_state(supervisor: Supervisor) -> None:
    """Leave the state file for the next daemon: what was wanted before the shutdown,
    and any process that would not stop."""
    state = supervisor.recovery_state()
    try:
        write_state(supervisor.manifest.supervisor.state_file, state)
    except OSError as exc:
        log.error("cannot write state file", path=str(supervisor.manifest.supervisor.state_file), error=str(exc))


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


def main(manifest_path: Path, json_logs: bool | None = None, overlays: tuple[Path, ...] = ()) -> int:
    """Run the daemon in the foreground; returns the exit status."""
    from supervisord_lite.runtime.logs import configure_logging

    keep_large_blocks_mapped()  # each scrape and state write would otherwise grow the heap for good
    configure_logging(json_logs)
    try:
        return anyio.run(run_daemon, manifest_path, overlays)
    except ManifestError as exc:
        _say(str(exc))
        return ExitCode.USAGE
    except StartupError as exc:
        log.error("cannot start", error=str(exc))
        _say(f"svc daemon: {exc}")
        return exc.code
    except KeyboardInterrupt:
        return ExitCode.OK


def _say(text: str) -> None:
    """A line for people on stderr; a full disk under it is not a reason for a traceback."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass

