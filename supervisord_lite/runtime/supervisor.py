"""Orchestration: one runner task per service, gated start, restarts, ordered stop.

Each ``Runner`` owns one service's lifecycle (spec section 3). Its state moves only
through ``states.transition`` (the pure table); the restart decisions come from
``policy`` (pure). What is left here is the I/O around them: spawning, probing,
signalling, waiting, on anyio.

The ``Supervisor`` holds the runners, turns `up`/`down`/`restart`/`reload` requests
into runner requests in dependency and tier order, and publishes immutable
snapshots that the control server, the metrics and the CLI read.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from supervisord_lite.core import graph
from supervisord_lite.host import portinfo
from supervisord_lite.runtime import probes
from supervisord_lite.runtime.logs import ServiceLog
from supervisord_lite.core.paths import instance_prefix
from supervisord_lite.host.recovery import write_state
from supervisord_lite.core.model import DependencyRestart, Kind, Manifest, ServiceSpec, Status
from supervisord_lite.core.policy import AfterExit, BackoffState, StartLimiter, after_exit, describe_exit
from supervisord_lite.runtime.service_process import ServiceProcess
from supervisord_lite.runtime.spawn import SpawnError, spawn
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.states import (
    GOOD_STATES,
    RUNNING_STATES,
    TRANSIENT_STATES,
    Event,
    ServiceState,
    transition,
)

log = structlog.get_logger("supervisor")

S = ServiceState
_SETTLED_BAD = frozenset({S.FAILED, S.CONFLICT, S.STOPPED, S.DISABLED, S.DEPRECATED})


class _Outcome:
    """How one spawned instance ended (returned by Runner._attempt)."""

    EXITED = "exited"
    READY_TIMEOUT = "ready_timeout"
    UNHEALTHY = "unhealthy"
    MEMORY = "memory"

    def __init__(self, kind: str, returncode: int | None = None, detail: str = "") -> None:
        self.kind = kind
        self.returncode = returncode
        self.detail = detail


class Runner:
    """The lifecycle of one service. Requests come from the Supervisor; the work
    happens in ``run``, the service's long-lived task."""

    def __init__(self, sup: Supervisor, spec: ServiceSpec) -> None:
        self.sup = sup
        self.spec = spec
        self.state = self._resting_state()
        self.wanted = False
        self.prereqs: frozenset[str] = frozenset()
        self.proc: ServiceProcess | None = None
        self.instance_id = ""
        self.restarts = 0
        self.memory_restarts = 0
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.ready_duration: float | None = None
        self.port_up: bool | None = None
        self.probe_latency: float | None = None
        self.conflict: portinfo.Listener | None = None
        self.reason = ""
        self.blocked_by: tuple[str, ...] = ()
        self.next_retry_at: float | None = None
        self.exit_code: int | None = None
        self.log = self._open_log()
        self.backoff = BackoffState(spec.backoff)
        self.limiter = StartLimiter(spec.start_limit, spec.start_limit_window)
        self.rng = random.Random()
        self._kick = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._scope_done: anyio.Event | None = None
        self._restart_requested = False
        self._removed = False
        self.pending = False  # a start was asked for and the runner has not begun it yet
        self._last_exit = ""  # why the last instance ended, shown while the next one starts
        self.asked_by = 0  # the sequence number of the last command that named it (the last word wins)
        self.listeners: set[anyio.Event] = set()  # set at this runner's next state change
        self.ready_generation = 0  # how many times it became ready (for on_dependency_restart)
        self._seen_generations: dict[str, int] = {}  # of its dependencies, when it became ready
        self._log_ready = anyio.Event()
        self._log_regex = re.compile(spec.ready.log) if spec.ready.log else None
        self.snap = self._build_snapshot()

    # ------------------------------------------------------------------ requests

    def request_start(self, prereqs: Collection[str]) -> None:
        """Run the service (no-op when it already runs or is on its way)."""
        if not self.spec.is_active:
            return
        self.prereqs = frozenset(prereqs)
        if self.wanted and self.state in (RUNNING_STATES | TRANSIENT_STATES | {S.CONFLICT}) - {S.STOPPING}:
            return
        if self.wanted and self.state is S.EXITED and self.spec.kind is Kind.ONESHOT:
            return  # a finished task does not run again on `up`; `restart` re-runs it
        self.wanted = True
        self.pending = True
        self.limiter.reset()
        self._kick.set()

    def request_restart(self, prereqs: Collection[str]) -> None:
        if not self.spec.is_active:
            return
        self.prereqs = frozenset(prereqs)
        self.wanted = True
        self._restart_requested = True
        self.pending = True
        self.limiter.reset()
        self._kick.set()

    def request_stop(self) -> None:
        self.wanted = False
        self._kick.set()

    def request_removal(self) -> None:
        for event in self.listeners:  # whoever waits on us must look again
            event.set()
        self.listeners.clear()
        self._removed = True
        self.wanted = False
        self._kick.set()

    @property
    def settled_stopped(self) -> bool:
        return not self.wanted and self.state in (S.STOPPED, S.DISABLED, S.DEPRECATED) and self._scope is None

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if self.spec.watch:
                tg.start_soon(self._watch_files)
            while True:
                await self._kick.wait()
                self._kick = anyio.Event()
                restart = self._restart_requested
                self._restart_requested = False
                if self._scope is not None:
                    if not self.wanted or restart or self.state in _SETTLED_BAD | {S.EXITED}:
                        self._scope.cancel()
                        assert self._scope_done is not None
                        await self._scope_done.wait()
                    else:
                        self._settle_request()  # it runs and is wanted (a stop was taken back): nothing to do
                        continue
                await self._stop_everything()
                if self._removed:
                    tg.cancel_scope.cancel()
                    return
                if self.wanted:
                    scope = anyio.CancelScope()
                    self._scope, self._scope_done = scope, anyio.Event()
                    tg.start_soon(self._supervise_in, scope, self._scope_done)
                else:
                    self._settle_request()  # a start was taken back by a later stop

    def _settle_request(self) -> None:
        """A start request ends without a new start: `svc up` must not wait for one."""
        if self.pending:
            self.pending = False
            self._publish(notify=True)

    async def _watch_files(self) -> None:
        """Restart on changes to the watched files, while the service runs (debounced)."""
        from supervisord_lite.runtime.filewatch import changes

        base = self.sup.manifest.path.parent
        async for paths in changes(base, self.spec.watch, self.spec.watch_ignore):
            if self.wanted and self.state in (S.READY, S.STARTING, S.UNHEALTHY, S.BACKOFF, S.FAILED):
                log.info("watched files changed: restarting", service=self.spec.name, files=paths[:5])
                self.log.mark(f"restart: {len(paths)} watched file(s) changed: {', '.join(paths[:3])}")
                self.restarts += 1
                self.request_restart(self.prereqs)

    def dependency_ready(self, dependency: str, generation: int) -> None:
        """A dependency became ready again: restart once, if the manifest asks for it."""
        if self.spec.on_dependency_restart is not DependencyRestart.RESTART:
            return
        if self.state is not S.READY or not self.wanted:
            return
        if generation <= self._seen_generations.get(dependency, generation):
            return
        self._seen_generations[dependency] = generation
        log.info("dependency restarted: restarting", service=self.spec.name, dependency=dependency)
        self.log.mark(f"restart: dependency {dependency} restarted")
        self.restarts += 1
        self.request_restart(self.prereqs)

    async def _supervise_in(self, scope: anyio.CancelScope, done: anyio.Event) -> None:
        try:
            with scope:
                await self._supervise()
        except Exception as exc:  # a bug must not take the whole daemon down
            log.exception("runner crashed", service=self.spec.name)
            self.reason = f"internal error: {exc!r}"
            if self.state is not S.FAILED:  # outside the table on purpose: this is a bug's exit
                self._set(S.FAILED)
        finally:
            if self._scope is scope:
                self._scope = None
            done.set()
            self.sup.notify()

    async def _supervise(self) -> None:
        self.exit_code = None
        self._last_exit = ""
        self._fire(Event.START, "")
        self.pending = False
        while True:
            await self._wait_prerequisites()
            if not await self._port_is_ours_to_take():
                continue  # back to checking prerequisites once the port was freed
            self._fire(Event.DEPS_READY, f"restarting after: {self._last_exit}" if self._last_exit else "")
            try:
                await self._spawn()
            except SpawnError as exc:
                self._fire(Event.GIVE_UP, str(exc))
                await self._rest_in_failed()
                continue
            outcome = await self._attempt()
            if not await self._after(outcome):
                return

    async def _after(self, outcome: _Outcome) -> bool:
        """Act on how an instance ended; False when the service is done for good."""
        name = self.spec.name
        if outcome.kind == _Outcome.READY_TIMEOUT:
            await self._stop_process()
            self._fire(Event.GIVE_UP, f"not ready after {self.spec.ready_timeout:g}s (ready_timeout){outcome.detail}")
            await self._rest_in_failed()
            return True
        if outcome.kind in (_Outcome.UNHEALTHY, _Outcome.MEMORY):
            await self._stop_process()
            decision = AfterExit.RESTART
            why = outcome.detail
        else:
            rc = outcome.returncode if outcome.returncode is not None else -9
            self.exit_code = rc
            self.port_up = False if self.spec.port else None
            decision = after_exit(self.spec.restart, self.spec.kind, rc)
            why = describe_exit(rc)
            await self._clear_after_exit(rc)  # stragglers of its group
        if decision is AfterExit.DONE:
            self._fire(Event.DONE, why)
            log.info("service exited", service=name, reason=why)
            await anyio.sleep_forever()
        if decision is AfterExit.FAIL:
            self._fire(Event.GIVE_UP, why)
            await self._rest_in_failed()
            return True
        now = anyio.current_time()
        if not self.limiter.allow(now):
            self._fire(
                Event.GIVE_UP,
                f"{why}; restarted {self.spec.start_limit} times in {self.spec.start_limit_window:g}s (start_limit), giving up",
            )
            await self._rest_in_failed()
            return True
        was_ready = self.ready_at is not None and self.state in (S.READY, S.UNHEALTHY)
        delay = self.backoff.next_delay(was_ready=was_ready, rng=self.rng)
        self.next_retry_at = time.time() + delay
        self._last_exit = why
        self._fire(Event.CRASHED, f"{why}; restarting in {delay:.2f}s" if delay else f"{why}; restarting")
        log.warning("service crashed", service=name, reason=why, delay=round(delay, 3))
        if delay:
            await anyio.sleep(delay)
        self.next_retry_at = None
        self.restarts += 1
        self._fire(Event.BACKOFF_OVER, "")
        return True

    async def _rest_in_failed(self) -> None:
        """Stay failed; with failed_retry, try again slowly (the cause may go away)."""
        log.error("service failed", service=self.spec.name, reason=self.reason)
        if self.spec.failed_retry <= 0:
            self.next_retry_at = None
            self._publish()
            await anyio.sleep_forever()
        self.next_retry_at = time.time() + self.spec.failed_retry
        self._publish()
        await anyio.sleep(self.spec.failed_retry)
        self.next_retry_at = None
        self.limiter.reset()
        self.restarts += 1
        self._fire(Event.START, "retrying after failure (failed_retry)")

    async def _wait_prerequisites(self) -> None:
        while True:
            blockers = self.sup.unready(self.prereqs)
            if not blockers:
                if self.blocked_by:
                    self.blocked_by = ()
                    self._publish()
                return
            blocked = tuple(sorted(blockers))
            reason = "waiting for " + ", ".join(self.sup.describe_blocker(b) for b in blocked)
            if blocked != self.blocked_by or reason != self.reason:
                self.blocked_by = blocked
                self.reason = reason
                self._publish(notify=True)
            await self.sup.wait_any_change(blocked)

    async def _port_is_ours_to_take(self) -> bool:
        """Check the port before spawning; stay in `conflict` while a foreign process holds it."""
        port = self.spec.port
        if port is None or port not in self.sup.listening_ports():
            return True
        listener = await anyio.to_thread.run_sync(portinfo.listener_on, port)
        if listener is None:
            return True
        if listener.pid is not None and self.sup.owns_pid(listener.pid):
            return True  # one of our own (e.g. a straggler about to go): let the spawn race it
        self.conflict = listener
        self._fire(Event.PORT_TAKEN, f"port {port} is held by {listener.describe()}")
        log.error("port conflict", service=self.spec.name, port=port, pid=listener.pid, cmdline=listener.cmdline)
        while port in self.sup.listening_ports():
            await anyio.sleep(self.spec.probe_interval)
        self.conflict = None
        self._fire(Event.PORT_FREE, "")
        return False

    async def _spawn(self) -> None:
        self.instance_id = self.sup.instance_prefix + uuid.uuid4().hex[:16]
        self._log_ready = anyio.Event()
        self.ready_at = None
        self.port_up = False if self.spec.port else None
        with anyio.CancelScope(shield=True):  # never lose track of a process half-spawned
            self.proc = await spawn(
                self.spec,
                instance_id=self.instance_id,
                log=self.log,
                task_group=self._tg,
                on_line=self._on_line if self._log_regex else None,
                extra_env=self.sup.child_env,
            )
        if not (self.spec.ready.exec or (self.spec.health is not None and self.spec.health.exec)):
            self.proc.env = {}  # no exec probe will need it
        self.started_at = self.proc.started_at
        self.exit_code = None
        self.log.mark(f"started pid {self.proc.pid}: {' '.join(self.spec.command)}")
        self._fire(Event.SPAWNED, self.reason)
        self.sup.save_state()

    def _on_line(self, line: str) -> None:
        if self._log_regex is not None and self._log_regex.search(line):
            self._log_ready.set()

    async def _attempt(self) -> _Outcome:
        proc = self.proc
        assert proc is not None
        outcome: _Outcome | None = None
        async with anyio.create_task_group() as tg:

            async def watch_exit() -> None:
                nonlocal outcome
                rc = await proc.wait()
                if outcome is None:
                    outcome = _Outcome(_Outcome.EXITED, rc)
                tg.cancel_scope.cancel()

            tg.start_soon(watch_exit)
            if self.spec.kind is Kind.ONESHOT:
                with anyio.move_on_after(self.spec.ready_timeout):
                    await anyio.sleep_forever()
                outcome = _Outcome(_Outcome.READY_TIMEOUT)
                tg.cancel_scope.cancel()
                return outcome
            detail = await self._wait_ready(proc)
            if detail is not None:
                outcome = _Outcome(_Outcome.READY_TIMEOUT, detail=detail)
                tg.cancel_scope.cancel()
                return outcome
            self.ready_at = time.time()
            self.ready_duration = self.ready_at - (self.started_at or self.ready_at)
            self.conflict = None
            self.ready_generation += 1
            self._last_exit = ""
            self._seen_generations = {d: self.sup.runners[d].ready_generation for d in self.spec.depends_on if d in self.sup.runners}
            self._fire(Event.READY, "")
            self.sup.became_ready(self.spec.name)
            log.info("service ready", service=self.spec.name, pid=proc.pid, seconds=round(self.ready_duration, 3))
            outcome = await self._liveness(proc)
            tg.cancel_scope.cancel()
        assert outcome is not None
        return outcome

    async def _wait_ready(self, proc: ServiceProcess) -> str | None:
        """None once every readiness condition holds; a reason when ready_timeout hit."""
        spec, ready = self.spec, self.spec.ready
        last = ""
        with anyio.move_on_after(spec.ready_timeout):
            if ready.tcp and spec.port is not None:
                while True:
                    await self.sup.port_watcher.wait_listening(spec.port)
                    result = await probes.tcp_probe(spec.port, timeout=ready.timeout)
                    self._record_probe(result)
                    if result.ok:
                        break
                    last = result.detail
                    await anyio.sleep(0.05)
            if ready.log:
                await self._log_ready.wait()
            if ready.http or ready.exec:
                delay = 0.02
                check = replace(ready, tcp=False, log=None, after=None)
                while True:
                    result = await probes.run_probe(check, spec.port, env=proc.env, cwd=spec.cwd)
                    if result.ok:
                        break
                    last = result.detail
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            if ready.after:
                await anyio.sleep(max(0.0, (self.started_at or 0) + ready.after - time.time()))
            return None
        if ready.log and not self._log_ready.is_set():
            last = f"no output line matched {ready.log!r}"
        elif ready.tcp and spec.port is not None and not last:
            last = f"port {spec.port} never accepted a connection"
        return f": {last}" if last else ""

    async def _liveness(self, proc: ServiceProcess) -> _Outcome:
        """Probe every probe_interval; return once the service should be restarted."""
        spec = self.spec
        check = spec.liveness
        failures = 0
        over_memory = 0
        interval = max(0.05, spec.probe_interval)
        if _port_only(check) and spec.port is not None and not spec.max_memory:
            return await self._port_liveness()
        await anyio.sleep(self.rng.uniform(0, interval))  # spread probes over the interval
        while True:
            if not check.is_empty:
                result = await probes.run_probe(check, spec.port, env=proc.env, cwd=spec.cwd)
                self._record_probe(result)
                if result.ok:
                    if failures:
                        failures = 0
                        self._publish()
                else:
                    failures += 1
                    log.warning("liveness probe failed", service=spec.name, failures=failures, detail=result.detail)
                    if failures >= spec.unhealthy_threshold:
                        self._fire(Event.PROBE_FAILED, f"{failures} liveness probes failed: {result.detail}")
                        return _Outcome(_Outcome.UNHEALTHY, detail=f"unhealthy: {result.detail}")
            if spec.max_memory:
                usage = self.sup.tree_usage(self)
                if usage is not None and usage.rss_bytes > spec.max_memory:
                    over_memory += 1
                    if over_memory >= 2:
                        self.memory_restarts += 1
                        why = f"memory {usage.rss_bytes / 1e6:.0f} MB above max_memory {spec.max_memory / 1e6:.0f} MB"
                        log.warning("memory limit", service=spec.name, rss=usage.rss_bytes, limit=spec.max_memory)
                        self.reason = why
                        return _Outcome(_Outcome.MEMORY, detail=why)
                else:
                    over_memory = 0
            if self.ready_at is not None:
                self.backoff.stayed_ready(time.time() - self.ready_at)
            await anyio.sleep(interval)

    async def _port_liveness(self) -> _Outcome:
        """Liveness for a plain port check: the supervisor's shared port sweep does the
        probing (one read of the kernel's listening sockets for every such service), and
        this waits until it finds the port gone ``unhealthy_threshold`` times in a row."""
        self._port_failures = 0
        self._unhealthy = anyio.Event()
        self.sup.port_sweep.add(self)
        try:
            await self._unhealthy.wait()
        finally:
            self.sup.port_sweep.discard(self)
        return _Outcome(_Outcome.UNHEALTHY, detail=f"unhealthy: port {self.spec.port} is not listening")

    def port_swept(self, listening: bool, latency: float) -> None:
        """One result of the shared port sweep (see ``PortSweep``)."""
        self._record_probe(probes.ProbeResult(listening, latency, "" if listening else "not listening"))
        if listening:
            self._port_failures = 0
            if self.ready_at is not None:
                self.backoff.stayed_ready(time.time() - self.ready_at)
            return
        self._port_failures += 1
        log.warning("liveness probe failed", service=self.spec.name, failures=self._port_failures, detail="port not listening")
        if self._port_failures >= self.spec.unhealthy_threshold and not self._unhealthy.is_set():
            self._fire(Event.PROBE_FAILED, f"{self._port_failures} liveness probes failed: port {self.spec.port} is not listening")
            self._unhealthy.set()

    def _record_probe(self, result: probes.ProbeResult) -> None:
        if self.spec.port is None:
            return
        changed = self.port_up != result.ok
        self.port_up = result.ok
        self.probe_latency = result.latency
        self.sup.observe_probe(self.spec.name, self.spec.port, result.latency)
        self._publish(notify=changed)

    # ------------------------------------------------------------------ stopping

    async def _clear_after_exit(self, rc: int) -> None:
        """The main process has exited: deal with what it left before the next start.

        Fast path: signal its group and, when its port is already free, start again
        at once while the thorough sweep (process-table reads that find escaped
        descendants, SIGKILL after stop_timeout) finishes in the background. When
        something still holds the port, wait for the sweep: a restart must not race
        its own predecessor for the port.
        """
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pgid, self.spec.stop_signal)
        port = self.spec.port
        if port is not None and port in self.sup.listening_ports():
            await self._stop_process()
            return
        self.log.mark(f"pid {proc.pid} {describe_exit(rc)}")
        self.proc = None
        self.sup.save_state()
        self._tg.start_soon(self._sweep_in_background, proc)

    async def _sweep_in_background(self, proc: ServiceProcess) -> None:
        with anyio.CancelScope(shield=True):
            await proc.stop(self.spec.stop_signal, self.spec.stop_timeout)

    async def _stop_process(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            rc = await proc.stop(self.spec.stop_signal, self.spec.stop_timeout)
            if self.exit_code is None:
                self.exit_code = rc
            self.log.mark(f"pid {proc.pid} {describe_exit(rc)}")
            await self._wait_port_free()
            self.proc = None
            self.sup.save_state()

    async def _wait_port_free(self) -> None:
        """After a stop: return once nothing listens on our port (bounded)."""
        port = self.spec.port
        if port is None:
            return
        with anyio.move_on_after(max(1.0, self.spec.stop_timeout)):
            await self.sup.port_watcher.wait_closed(port)
        self.port_up = False

    async def _stop_everything(self) -> None:
        """Bring the service to rest: stop its process (if any), then `stopped`."""
        if self.state in (S.STOPPED, S.DISABLED, S.DEPRECATED) and self.proc is None:
            return
        if self.wanted and not self._restart_requested and self.proc is None and self.state in _SETTLED_BAD | {S.EXITED}:
            return  # going straight back to waiting: `start` is valid from here
        self._fire(Event.STOP, "")
        await self._stop_process()
        self.port_up = False if self.spec.port else None
        self.blocked_by = ()
        self.next_retry_at = None
        self.conflict = None
        self._fire(Event.STOPPED, "")

    # ------------------------------------------------------------------ state

    def _resting_state(self) -> ServiceState:
        if self.spec.status is Status.DISABLED:
            return S.DISABLED
        if self.spec.status is Status.DEPRECATED:
            return S.DEPRECATED
        return S.STOPPED

    def _fire(self, event: Event, reason: str) -> None:
        new = transition(self.state, event)
        if event is Event.STOPPED:
            new = self._resting_state() if self.state is S.STOPPING else new
        old, self.state = self.state, new
        if new is not S.WAITING or reason:
            self.reason = reason
        if new is not S.WAITING:
            self.blocked_by = ()
        if old is not new:
            log.debug("state", service=self.spec.name, old=old.value, new=new.value, reason=reason)
        self._publish(notify=True)

    def _set(self, state: ServiceState) -> None:
        self.state = state
        self._publish(notify=True)

    def _publish(self, notify: bool = False) -> None:
        self.snap = self._build_snapshot()
        if notify:
            for event in self.listeners:
                event.set()
            self.listeners.clear()
            self.sup.notify()

    def _build_snapshot(self) -> ServiceSnapshot:
        spec = self.spec
        alive = self.proc is not None and self.proc.returncode is None
        return ServiceSnapshot(
            name=spec.name,
            tier=spec.tier,
            port=spec.port,
            state=self.state,
            url=spec.url,
            description=spec.description,
            pid=self.proc.pid if alive and self.proc else None,
            started_at=self.started_at,
            ready_at=self.ready_at,
            ready_duration=self.ready_duration,
            restarts=self.restarts,
            port_up=self.port_up,
            probe_latency=self.probe_latency,
            conflict_pid=self.conflict.pid if self.conflict else None,
            conflict_cmdline=self.conflict.cmdline if self.conflict else "",
            reason=self.reason,
            blocked_by=self.blocked_by,
            next_retry_at=self.next_retry_at,
            exit_code=self.exit_code,
            memory_restarts=self.memory_restarts,
            replaced_by=spec.replaced_by,
        )

    def _open_log(self) -> ServiceLog:
        sup = self.sup.manifest.supervisor
        return ServiceLog(
            sup.logs_dir / f"{self.spec.name}.log",
            max_bytes=sup.log_max_bytes,
            backups=sup.log_backups,
            tail_lines=50,  # failure reports show 20; the page reads the file
            on_error=self.sup.log_write_error(self.spec.name),
        )


def _port_only(check: Any) -> bool:
    return bool(check.tcp) and not (check.http or check.exec)


class PortSweep:
    """Liveness of every plain-port service from one read of the listening sockets.

    A TCP connect to a listening port is completed by the kernel whether or not the
    program calls accept(), so "the port is in the kernel's listening table" answers
    the same question as a connect probe, for all services at once and without a
    connection per service. Services are swept together on one beat (the shortest
    probe_interval among them), so idle cost is one wake-up and one read per beat,
    however many services there are.
    """

    def __init__(self, read: Callable[[], set[int]]) -> None:
        self._read = read
        self._members: dict[Runner, float] = {}  # runner -> next due time
        self._wake = anyio.Event()

    def add(self, runner: Runner) -> None:
        self._members[runner] = anyio.current_time() + max(0.05, runner.spec.probe_interval)
        self._wake.set()

    def discard(self, runner: Runner) -> None:
        self._members.pop(runner, None)

    async def run(self) -> None:
        while True:
            if not self._members:
                self._wake = anyio.Event()
                await self._wake.wait()
            beat = min(max(0.05, r.spec.probe_interval) for r in self._members)
            await anyio.sleep(beat)
            now = anyio.current_time()
            due = [r for r, t in self._members.items() if t <= now + beat / 2]
            if not due:
                continue
            started = time.perf_counter()
            listening = self._read()
            latency = time.perf_counter() - started
            for runner in due:
                if runner in self._members:
                    self._members[runner] = now + max(0.05, runner.spec.probe_interval)
                    runner.port_swept(runner.spec.port in listening, latency)


class Supervisor:
    """All runners of one manifest, and the requests that drive them."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        port_watcher: probes.PortWatcher | None = None,
        observe_probe: Callable[[str, int, float], None] | None = None,
        forget_service: Callable[[str], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.port_watcher = port_watcher or probes.PortWatcher()
        self._listening = probes.ListeningPorts()
        self.manifest_mtime = _mtime(manifest.path)
        self._state_dirty = anyio.Event()
        self.instance_prefix = instance_prefix(manifest.supervisor.state_dir)
        self.port_sweep = PortSweep(self.listening_ports)
        self._observe_probe = observe_probe
        self._forget_service = forget_service
        self.runners: dict[str, Runner] = {}
        self._runner_list: tuple[Runner, ...] = ()
        self._changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.started_at = time.time()
        self.reloads_ok = 0
        self.reloads_error = 0
        self._log_errors_reported: set[str] = set()
        self._commands = 0  # numbers up/restart/down requests in arrival order
        self._usage_cache: tuple[float, dict[str, Any]] = (0.0, {})
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        path = os.environ.get("PATH", "")
        self.child_env = {"PATH": f"{bin_dir}{os.pathsep}{path}" if bin_dir not in path.split(os.pathsep) else path}
        manifest.supervisor.logs_dir.mkdir(parents=True, exist_ok=True)
        for spec in manifest.services.values():
            self.runners[spec.name] = Runner(self, spec)
        self._runner_list = tuple(self.runners.values())

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self.port_watcher.run)
            tg.start_soon(self.port_sweep.run)
            tg.start_soon(self._write_state_forever)
            for runner in self._runner_list:
                tg.start_soon(runner.run)
            task_status.started()
            await anyio.sleep_forever()

    # ------------------------------------------------------------------ change feed

    def notify(self) -> None:
        old, self._changed = self._changed, anyio.Event()
        old.set()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    async def wait_any_change(self, names: Iterable[str]) -> None:
        """Until one of these services changes state (not at every change anywhere:
        with hundreds of services waiting, that would be quadratic)."""
        event = anyio.Event()
        watched = [self.runners[n] for n in names if n in self.runners]
        if not watched:
            return
        for runner in watched:
            runner.listeners.add(event)
        try:
            await event.wait()
        finally:
            for runner in watched:
                runner.listeners.discard(event)

    # ------------------------------------------------------------------ queries

    def unready(self, names: Iterable[str]) -> set[str]:
        return {n for n in names if n in self.runners and self.runners[n].state not in GOOD_STATES}

    def describe_blocker(self, name: str) -> str:
        runner = self.runners[name]
        if runner.state in (S.FAILED, S.CONFLICT):
            return f"{name} ({runner.state.value}: {runner.reason})" if runner.reason else f"{name} ({runner.state.value})"
        return f"{name} ({runner.state.value})"

    def listening_ports(self) -> set[int]:
        """Every listening TCP port, in one cheap read (netlink sock_diag)."""
        return self._listening.read()

    def became_ready(self, name: str) -> None:
        generation = self.runners[name].ready_generation
        for runner in self._runner_list:
            if name in runner.spec.depends_on:
                runner.dependency_ready(name, generation)

    def owns_pid(self, pid: int) -> bool:
        for runner in self._runner_list:
            proc = runner.proc
            if proc is not None and (pid == proc.pid or pid in proc.tree_pids()):
                return True
        return False

    def observe_probe(self, service: str, port: int, seconds: float) -> None:
        if self._observe_probe is not None:
            self._observe_probe(service, port, seconds)

    def log_write_error(self, service: str) -> Callable[[BaseException], None]:
        def report(exc: BaseException) -> None:
            log.error("cannot write service log", service=service, error=str(exc))

        return report

    def tree_usage(self, runner: Runner) -> Any:
        """RSS and CPU of the runner's process tree (from a shared sample, at most 1 s old)."""
        if runner.proc is None:
            return None
        return self._usage().get(runner.spec.name)

    def _usage(self) -> dict[str, Any]:
        """One pass over the process table for every service, cached for a second."""
        from supervisord_lite.runtime.resources import sample_trees

        stamp, usage = self._usage_cache
        now = time.monotonic()
        if now - stamp > 1.0:
            roots = {r.spec.name: r.proc.pid for r in self._runner_list if r.proc is not None and r.proc.returncode is None}
            usage = sample_trees(roots) if roots else {}
            self._usage_cache = (now, usage)
        return usage

    def snapshot(self, *, with_usage: bool = False) -> SupervisorSnapshot:
        """An immutable view; safe to call from another thread (the metrics server)."""
        services = tuple(r.snap for r in self._runner_list)
        if with_usage:
            services = self._with_usage(services)
        return SupervisorSnapshot(
            name=self.manifest.supervisor.name,
            manifest=str(self.manifest.path),
            pid=os.getpid(),
            started_at=self.started_at,
            services=services,
            reloads_ok=self.reloads_ok,
            reloads_error=self.reloads_error,
            manifest_mtime=self.manifest_mtime,
        )

    def _with_usage(self, services: tuple[ServiceSnapshot, ...]) -> tuple[ServiceSnapshot, ...]:
        usage = self._usage()
        out = []
        for s in services:
            u = usage.get(s.name) if s.pid else None
            out.append(replace(s, rss_bytes=u.rss_bytes, cpu_seconds=u.cpu_seconds) if u else s)
        return tuple(out)

    # ------------------------------------------------------------------ requests

    def up(self, names: Iterable[str] | None) -> list[str]:
        """Start ``names`` (all active services when None) and what they need."""
        start_set = graph.start_set(self.manifest, names)
        command = self._next_command()
        for name in start_set:
            self.runners[name].asked_by = command
            self.runners[name].request_start(graph.prerequisites(self.manifest, name, start_set))
        self.save_state()
        return list(start_set)

    def _next_command(self) -> int:
        self._commands += 1
        return self._commands

    def restart(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        closure = graph.start_set(self.manifest, names)
        command = self._next_command()
        for name in closure:
            self.runners[name].asked_by = command
        for name in closure:  # make sure what they need runs too
            if name not in names:
                self.runners[name].request_start(graph.prerequisites(self.manifest, name, closure))
        for name in names:
            self.runners[name].request_restart(graph.prerequisites(self.manifest, name, closure))
        self.save_state()
        return closure

    async def down(self, names: Iterable[str] | None) -> list[str]:
        """Stop ``names`` and their dependents (all when None), dependents first."""
        plan = graph.stop_plan(self.manifest, names)
        command = self._next_command()
        stopped: list[str] = []
        for step in plan:
            # a service a later up/restart asked for is theirs now: the last command wins
            runners = [self.runners[n] for n in step if n in self.runners and self.runners[n].asked_by < command]
            was_running = {r.spec.name for r in runners if not r.settled_stopped}
            for runner in runners:
                runner.asked_by = command
                runner.request_stop()
            await self._wait_until(lambda rs=runners: all(r.settled_stopped or r.asked_by > command for r in rs))
            stopped.extend(r.spec.name for r in runners if r.asked_by == command and r.spec.name in was_running)
        self.save_state()
        return stopped

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.wait_changed()

    async def wait_settled(self, names: Collection[str]) -> AsyncIterator[SupervisorSnapshot]:
        """Yield a snapshot at each change until every named service reached an outcome."""
        names = list(names)
        while True:
            changed = self._changed
            settled = all(self._settled(self.runners[n]) for n in names if n in self.runners)
            yield self.snapshot()
            if settled:
                return
            with anyio.move_on_after(1.0):  # also a heartbeat for elapsed times
                await changed.wait()
                await anyio.sleep(0.05)  # let a burst of changes arrive as one update

    def _settled(self, runner: Runner) -> bool:
        """An outcome for `svc up`: not transient, or waiting on something that is stuck."""
        if runner.pending:
            return False  # a request it has not acted on yet
        if runner.state not in TRANSIENT_STATES:
            return True
        if runner.state is S.WAITING and runner.blocked_by:
            return any(
                self._settled(self.runners[b]) and self.runners[b].state not in GOOD_STATES
                for b in runner.blocked_by
                if b in self.runners
            )
        return False

    async def shutdown(self) -> None:
        await self.down(None)

    # ------------------------------------------------------------------ reload

    async def reload(self, new: Manifest) -> dict[str, list[str]]:
        """Apply the difference to ``new``: start added, stop removed, restart changed."""
        old = self.manifest
        platform_up = any(r.wanted for r in self._runner_list)
        added = [n for n in new.services if n not in old.services]
        removed = [n for n in old.services if n not in new.services]
        differ = [n for n in new.services if n in old.services and new.services[n] != old.services[n]]
        changed = [n for n in differ if _runtime_view(new.services[n]) != _runtime_view(old.services[n])]
        for name in differ:
            if name not in changed:  # only what people read changed (description, url, ...): no restart
                self.runners[name].spec = new.services[name]
                self.runners[name]._publish(notify=True)
        # stop removed ones (and changed ones) while the old graph still describes them
        if removed:
            await self.down([n for n in removed if old.services[n].is_active] or [])
            for name in removed:
                runner = self.runners.pop(name)
                runner.request_removal()
                if self._forget_service:
                    self._forget_service(name)
        was_wanted = {n for n in changed if self.runners[n].wanted}
        if changed:
            await self.down_only(changed)
        self.manifest = new
        self.manifest_mtime = _mtime(new.path)
        restarted = []
        for name in changed:
            runner = self.runners[name]
            runner.request_removal()
            self.runners[name] = Runner(self, new.services[name])
        for name in added:
            self.runners[name] = Runner(self, new.services[name])
        self.runners = {n: self.runners[n] for n in new.services}
        self._runner_list = tuple(self.runners.values())
        if self._tg is not None:
            for name in [*changed, *added]:
                self._tg.start_soon(self.runners[name].run)
        to_start = [n for n in changed if n in was_wanted and new.services[n].is_active]
        if platform_up:
            to_start += [n for n in added if new.services[n].is_active]
        if to_start:
            self.up(to_start)
            restarted = [n for n in changed if n in to_start]
        self.reloads_ok += 1
        self.notify()
        self.save_state()
        return {"added": added, "removed": removed, "changed": changed, "restarted": restarted}

    async def down_only(self, names: Collection[str]) -> None:
        """Stop exactly these services (no dependents)."""
        runners = [self.runners[n] for n in names]
        command = self._next_command()
        for r in runners:
            r.asked_by = command
            r.request_stop()
        await self._wait_until(lambda: all(r.settled_stopped or r.asked_by > command for r in runners))

    # ------------------------------------------------------------------ crash safety

    def save_state(self) -> None:
        """Ask for the state file to be written (coalesced: at most every 0.2 s).

        The file is the successor's guide, not its only one: every child carries
        SVC_INSTANCE with this manifest's prefix, so a daemon that dies between two
        writes still leaves nothing a successor cannot find."""
        self._state_dirty.set()

    async def _write_state_forever(self) -> None:
        while True:
            await self._state_dirty.wait()
            self._state_dirty = anyio.Event()
            data = self._state_data()
            # a rename can take milliseconds on some filesystems: not on the event loop
            await anyio.to_thread.run_sync(self._write_state_file, data)
            await anyio.sleep(0.2)

    def _state_data(self) -> dict[str, Any]:
        return {
            "daemon_pid": os.getpid(),
            "manifest": str(self.manifest.path),
            "wanted": [r.spec.name for r in self._runner_list if r.wanted],
            "processes": {
                r.spec.name: {
                    "pid": r.proc.pid,
                    "pgid": r.proc.pgid,
                    "create_time": r.proc.create_time,
                    "instance_id": r.instance_id,
                }
                for r in self._runner_list
                if r.proc is not None and r.proc.returncode is None
            },
        }

    def _write_state_file(self, data: dict[str, Any]) -> None:
        try:
            write_state(self.manifest.supervisor.state_file, data)
        except OSError as exc:
            log.error("cannot write state file", path=str(self.manifest.supervisor.state_file), error=str(exc))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _runtime_view(spec: ServiceSpec) -> ServiceSpec:
    """The spec without what only people read: changing those never restarts a service."""
    return replace(spec, description="", url="", title="", export=type(spec.export)())
