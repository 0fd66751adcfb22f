"""One service's lifecycle: the runner task that starts, probes, restarts and stops it.

Each ``Runner`` owns one service. Its state moves only through ``states.transition``
(the pure table); the restart decisions come from ``policy`` (pure). What is left
here is the I/O around them: spawning, probing, signalling, waiting, on anyio. The
``Supervisor`` creates the runners and sends them requests; a runner reaches back
only through the supervisor's public methods (shared port watcher and sweep, the
other runners' readiness, the state file, the change feed).

This module is over 500 lines on purpose: it is one state machine whose steps
(requests, spawn, readiness, liveness, exit handling, stopping, publishing) all read
and write the same runner fields; cutting it into files would scatter one set of
transitions across them without making any part usable alone.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisord_lite.core.model import DependencyRestart, Kind, ServiceSpec, Status
from supervisord_lite.core.policy import AfterExit, BackoffState, StartLimiter, after_exit, describe_exit
from supervisord_lite.core.snapshot import ServiceSnapshot
from supervisord_lite.core.states import RUNNING_STATES, TRANSIENT_STATES, Event, ServiceState, transition
from supervisord_lite.host import portinfo
from supervisord_lite.runtime import probes
from supervisord_lite.runtime.logmatch import compile_log_pattern
from supervisord_lite.runtime.logs import ServiceLog
from supervisord_lite.runtime.service_process import ServiceProcess
from supervisord_lite.runtime.spawn import SpawnError, spawn

if TYPE_CHECKING:
    from supervisord_lite.runtime.supervisor import Supervisor

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
        self._log_regex = compile_log_pattern(spec.ready.log, spec.name) if spec.ready.log else None
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

    def update_spec(self, spec: ServiceSpec) -> None:
        """Take a spec that differs only in what people read (description, url, ...): no restart."""
        self.spec = spec
        self._publish(notify=True)

    @property
    def settled_stopped(self) -> bool:
        return not self.wanted and self.state in (S.STOPPED, S.DISABLED, S.DEPRECATED) and self._scope is None

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.log.close()  # removed or replaced by a reload, or the daemon stops: nobody writes to it now

    async def _run(self) -> None:
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
                    self.log.close()  # a reload replaced or removed it: its log file must not stay open
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
        if self._log_regex is not None and not self._log_ready.is_set() and self._log_regex.search(line):
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
            self._seen_generations = self.sup.ready_generations(self.spec.depends_on)
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
        if old is not new and new not in (S.WAITING, S.STARTING):  # waiting, starting: "started pid N" says enough
            self.log.mark(f"{new.value}: {reason}" if reason else new.value)
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
