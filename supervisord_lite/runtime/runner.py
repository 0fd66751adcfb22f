"""One service's lifecycle: the runner task that starts, probes, restarts and stops it.

Each ``Runner`` owns one service. What it does is decided by pure code in ``core``:
its state moves only through ``states.transition``; what a request does is
``lifecycle`` (over its ``Intent``); when it may start is ``startgate`` (its
dependencies, the tier barrier of its `up`); what follows the end of an instance is
``policy.judge`` (restart after a backoff, done, failed). What is left here is
carrying those decisions out on anyio, through the ``ServiceIO`` seam its host
gives it (spawning, probing, signalling, the port table, the wall clock).

This module is over 500 lines on purpose: it is one task whose steps (requests,
spawn, readiness, liveness, exit handling, stopping, publishing) all read and write
the same runner fields; cutting it into files would scatter one sequence of
transitions across them without making any part usable alone.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog

from supervisord_lite.core.lifecycle import (
    Intent,
    UpAction,
    is_settled,
    keeps_instance,
    may_stop_for_restart,
    on_up,
    rests_before_start,
)
from supervisord_lite.core.model import DependencyRestart, Kind, Manifest, ServiceSpec, Status
from supervisord_lite.core.policy import (
    Ending,
    InstanceEnd,
    Next,
    RestartHistory,
    daemonized_reason,
    describe_exit,
    judge,
)
from supervisord_lite.core.snapshot import ServiceSnapshot
from supervisord_lite.core.startgate import Blockers, dependency_blockers
from supervisord_lite.core.states import Event, ServiceState, transition
from supervisord_lite.host import portinfo
from supervisord_lite.runtime import probes
from supervisord_lite.runtime.lazyevent import LazyEvent
from supervisord_lite.runtime.logmatch import compile_log_pattern
from supervisord_lite.runtime.serviceio import ProcessHandle, ServiceIO
from supervisord_lite.runtime.spawn import SpawnError

log = structlog.get_logger("supervisor")

S = ServiceState
Listeners = set[anyio.Event] | frozenset[anyio.Event]
_NO_LISTENERS: frozenset[anyio.Event] = frozenset()  # shared by every runner nobody waits on
_AT_REST = (S.STOPPED, S.DISABLED, S.DEPRECATED)
#: How long the sweep of a crashed instance waits for its successor's spawn (a dependency
#: gate or a full start limiter can hold the successor back; the sweep must not wait on that)
SWEEP_DEFERRAL_LIMIT = 0.5


class Gate(Protocol):
    """The tier barrier of the `up` a runner obeys (``supervisor.UpGate``)."""

    listeners: set[anyio.Event]

    def is_open_for(self, order: int) -> bool: ...

    def waiting_reason(self) -> str: ...


class RunnerHost(Protocol):
    """What a runner needs of its supervisor: the seam, the other runners (read only),
    and where to report."""

    io: ServiceIO
    manifest: Manifest
    instance_prefix: str
    child_env: dict[str, str]
    runners: Mapping[str, Runner]

    def changed(self, runner: Runner, *, settled_changed: bool) -> None: ...

    def save_state(self) -> None: ...

    def observe_probe(self, service: str, port: int, seconds: float) -> None: ...

    def owns_pid(self, pid: int) -> bool: ...

    def became_ready(self, name: str) -> None: ...

    def ready_generations(self, names: Iterable[str]) -> dict[str, int]: ...

    def tree_usage(self, runner: Runner) -> Any: ...

    def log_write_error(self, service: str) -> Callable[[BaseException], None]: ...

    def watch_port(self, runner: Runner) -> None: ...

    def unwatch_port(self, runner: Runner) -> None: ...


class _Instance:
    """The task that runs one start of the service (waiting, spawning, probing, backoff).

    Cancelled through its task handle: the handle has a cancel scope and an end event
    of its own already, so the instance needs none."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: anyio.TaskHandle[None] | None = None

    async def cancel(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await self.task.wait()


class Runner:
    """The lifecycle of one service. Requests come from the Supervisor; the work
    happens in ``run``, the service's long-lived task."""

    # no dict per runner: about 1 KB less a service
    __slots__ = (
        "_gate_listeners", "_instance", "_kick", "_last_exit", "_log_ready", "_log_regex", "_nudge", "_outputs",
        "_port_failures", "_restart_cause", "_restart_cause_told", "_restarts", "_seen_generations",
        "_stop_signalled", "_successor_spawned", "_tg", "_unhealthy", "blocked_by", "conflict", "exit_code", "gate",
        "gates", "history", "host", "instance_id", "intent", "io", "listeners", "log", "memory_restarts", "next_retry_at", "order",
        "port_up", "probe_latency", "proc", "ready_at", "ready_duration", "ready_generation", "reason",
        "restarts_total", "rng", "settled", "snap", "spec", "started_at", "state", "stuck",
    )

    def __init__(self, host: RunnerHost, spec: ServiceSpec) -> None:
        self.host = host
        self.io = host.io
        self.spec = spec
        self.order = host.manifest.tier_order(spec)
        self.state = self._resting_state()
        self.intent = Intent()
        self.history = RestartHistory.of(spec)
        self.gate: Gate | None = None  # the tier barrier of the last `up` that asked for it
        self.gates: list[Any] = []  # the barriers it counts in (as an earlier-tier member)
        self.stuck = False  # waiting for a dependency that settled without becoming ready
        self.settled = True
        self.proc: ProcessHandle | None = None
        self._outputs: list[ProcessHandle] = []  # instances whose output may still be logged (closed with the runner)
        self.instance_id = ""
        self._restarts = 0
        self.restarts_total = 0  # never goes back within this daemon: what the metric exports
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
        self.log = host.io.open_log(spec, host.manifest.supervisor, host.log_write_error(spec.name))
        self.rng = host.io.random(spec.name)
        self._kick = LazyEvent()
        self._nudge = LazyEvent()  # cuts a backoff wait short (`svc up` of a service in backoff)
        self._instance: _Instance | None = None
        self._stop_signalled = False  # a `down` signalled the process ahead of its stop (begin_stop)
        self._successor_spawned: LazyEvent | None = None  # a crashed instance's sweep waits for it
        self._tg: anyio.abc.TaskGroup | None = None
        self._last_exit = ""  # why the last instance ended, shown while the next one starts
        self._restart_cause = ""  # why the supervisor restarts it by itself (a watched file changed)
        self._restart_cause_told = False  # it became ready again: the next state change ends the cause
        # set at this runner's next change / when its gate is replaced; a set of its own
        # only while someone waits (an empty set is 216 bytes, times every service)
        self.listeners: Listeners = _NO_LISTENERS
        self._gate_listeners: Listeners = _NO_LISTENERS
        self.ready_generation = 0  # how many times it became ready (for on_dependency_restart)
        self._seen_generations: dict[str, int] = {}  # of its dependencies, when it became ready
        self._log_ready = LazyEvent()
        self._log_regex = compile_log_pattern(spec.ready.log, spec.name) if spec.ready.log else None
        self._port_failures = 0
        self._unhealthy = LazyEvent()
        self.snap = self._build_snapshot()

    # ------------------------------------------------------------------ what others read

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def restarts(self) -> int:
        """Restarts since the last explicit up or restart of the service (what `svc status`
        shows); it survives reloads and, through the state file, a new daemon."""
        return self._restarts

    @restarts.setter
    def restarts(self, value: int) -> None:
        if value > self._restarts:  # a restart: the per-daemon total counts it too, a reset does not undo it
            self.restarts_total += value - self._restarts
        self._restarts = value

    def carry_counts_from(self, old: Runner) -> None:
        """A reload replaced ``old`` by this runner: its counters go on where old's stood."""
        self._restarts = old._restarts
        self.restarts_total = old.restarts_total
        self.memory_restarts = old.memory_restarts
        self.snap = self._build_snapshot()

    def resume_restart_count(self, count: int) -> None:
        """The count a previous daemon recorded for this service (its total stays this daemon's)."""
        self._restarts = count
        self.snap = self._build_snapshot()

    @property
    def restarting(self) -> bool:
        return self.intent.restart

    @property
    def wanted(self) -> bool:
        return self.intent.wanted

    @property
    def pending(self) -> bool:
        return self.intent.pending

    @property
    def command(self) -> int:
        return self.intent.command

    @property
    def has_process(self) -> bool:
        return self.proc is not None

    @property
    def settled_stopped(self) -> bool:
        return not self.intent.wanted and self.state in _AT_REST and self._instance is None

    # ------------------------------------------------------------------ requests

    def request_start(self, command: int, *, forget_restarts: bool = False) -> bool:
        """`svc up` (or a restart's dependency): run the service. Clears its restart
        history; a no-op when it already runs or is on its way. False for a service that
        is never started (disabled, deprecated). ``forget_restarts`` (a person's up): the
        restart count starts again from 0 too, when this does start it."""
        action = on_up(self.intent, self.state, self.spec.kind, active=self.spec.is_active)
        if action is UpAction.IGNORE:
            return False
        self.history.clear()
        forgets = forget_restarts and action is not UpAction.NOTHING and self.restarts != 0
        if forgets:
            self.restarts = 0
        if action is UpAction.START:
            self.intent.ask_start(command)
            self._kick.set()
        else:
            self.intent.command = command
            if action is UpAction.RETRY_NOW:
                self._nudge.set()
        self._publish(notify=True, snapshot=forgets)
        return True

    def request_restart(self, command: int, stop_after: Iterable[str] = (), *, forget_restarts: bool = False) -> bool:
        """Stop the running instance (after ``stop_after``, its dependents restarted by
        the same command) and start again, from a clean restart history (and, for a
        person's restart, ``forget_restarts``, a restart count of 0)."""
        if not self.spec.is_active:
            return False
        self.history.clear()
        if forget_restarts:
            self.restarts = 0
        self.intent.ask_restart(command, stop_after)
        self._kick.set()
        self._publish(notify=True)  # its dependents must see it as not ready from now on
        return True

    def request_stop(self, command: int) -> None:
        self.intent.ask_stop(command)
        self._kick.set()
        self._publish(notify=True, snapshot=False)

    def begin_stop(self) -> None:
        """Send the stop signal to the process group now, ahead of the rest of the stop.

        A `down` signals every service of a tier this way before any runner does its own
        stop work (cancelling its instance, the state changes, the process-table sweep),
        so the processes exit together rather than one after another. The runner's stop
        completes it: the sweep for escaped descendants, SIGKILL after stop_timeout
        (counted from this signal). Only for a service nobody wants any more."""
        proc = self.proc
        if proc is None or self.intent.wanted or self._stop_signalled or proc.returncode is not None:
            return
        self._stop_signalled = True
        proc.begin_stop(self.spec.stop_signal)

    def release(self, command: int, *, publish: bool = True) -> None:
        """A `down` that will stop it after its dependents: from now on nobody wants it,
        so it is not restarted in the meantime; ``request_stop`` comes at its turn.
        ``publish=False`` leaves telling the watchers to ``publish_change``."""
        self.intent.ask_stop(command)
        if publish:
            self._publish(notify=True, snapshot=False)

    def publish_change(self) -> None:
        """Tell whoever watches this runner that it changed (after a quiet ``release``)."""
        self._publish(notify=True, snapshot=False)

    def request_removal(self) -> None:
        for event in self.listeners:  # whoever waits on us must look again
            event.set()
        self.listeners = _NO_LISTENERS
        self.intent.ask_removal()
        self._kick.set()

    def obey(self, gate: Gate) -> None:
        """Take the tier barrier of the last `up` that asked for this service."""
        self.gate = gate
        for event in self._gate_listeners:
            event.set()
        self._gate_listeners = _NO_LISTENERS

    def update_spec(self, spec: ServiceSpec) -> None:
        """Take a spec that differs only in what people read (description, url, ...): no restart."""
        self.spec = spec
        self._publish(notify=True)

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            for proc in self._outputs:
                proc.close_output()
            self.log.close()  # removed or replaced by a reload, or the daemon stops: nobody writes to it now

    async def _run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if self.spec.watch:
                tg.start_soon(self._watch_files)
            while True:
                await self._kick.wait()
                self._kick = LazyEvent()
                if self._instance is not None:
                    if keeps_instance(self.intent, self.state) and not self._stop_signalled:
                        self._settle_request()  # it runs and is wanted (a stop was taken back): nothing to do
                        continue
                    if self.intent.restart and self.intent.stop_after:
                        await self._wait_dependents_stopped()
                    await self._instance.cancel()
                restart = self.intent.take_restart()
                if rests_before_start(self.intent, self.state, has_process=self.proc is not None, restart=restart):
                    await self._stop_everything()
                if self.intent.removed:
                    tg.cancel_scope.cancel()
                    return
                if self.intent.wanted:
                    instance = self._instance = _Instance()
                    instance.task = tg.start_soon(self._supervise_in, instance)
                else:
                    self._settle_request()  # a start was taken back by a later stop

    def _settle_request(self) -> None:
        """A start request ends without a new start: `svc up` must not wait for one."""
        if self.intent.pending:
            self.intent.pending = False
            self._publish(notify=True, snapshot=False)

    async def _wait_dependents_stopped(self) -> None:
        """A restart with dependents: their processes go first."""
        command = self.intent.command
        while True:
            dependents = [self.host.runners[n] for n in self.intent.stop_after if n in self.host.runners]
            if may_stop_for_restart(command, dependents):
                return
            await self._wait_for_change(dependents)

    async def _wait_for_change(self, runners: Iterable[Runner], *, gate: Gate | None = None) -> None:
        """Until one of these runners changes, the gate opens further, or this runner's gate is replaced."""
        event = anyio.Event()
        watched = list(runners)
        for runner in watched:
            runner.listeners = _with(runner.listeners, event)
        if gate is not None:
            gate.listeners.add(event)
        self._gate_listeners = _with(self._gate_listeners, event)
        try:
            await event.wait()
        finally:
            for runner in watched:
                runner.listeners = _without(runner.listeners, event)
            if gate is not None:
                gate.listeners.discard(event)
            self._gate_listeners = _without(self._gate_listeners, event)

    async def _watch_files(self) -> None:
        """Restart on changes to the watched files, while the service runs (debounced)."""
        from supervisord_lite.runtime.filewatch import change_summary, changes

        base = self.host.manifest.path.parent
        async for paths in changes(base, self.spec.watch, self.spec.watch_ignore):
            if self.intent.wanted and self.state in (S.READY, S.STARTING, S.UNHEALTHY, S.BACKOFF, S.FAILED):
                log.info("watched files changed: restarting", service=self.spec.name, files=paths[:5])
                self.log.mark(f"restart: {len(paths)} watched file(s) changed: {', '.join(paths[:3])}")
                self.restarts += 1
                self.note_restart_cause(change_summary(paths))
                self.request_restart(self.intent.command)

    def note_restart_cause(self, cause: str) -> None:
        """Why the restart about to happen is made: shown as the reason (``restarting:
        src/app.py changed``, then ``restarted: ...`` once ready) until its next state change."""
        self._restart_cause, self._restart_cause_told = cause, False

    def _with_restart_cause(self, old: ServiceState, new: ServiceState, reason: str) -> str:
        cause = self._restart_cause
        if not cause:
            return reason
        if (reason and reason != self.reason) or (self._restart_cause_told and old is S.READY and new is not S.READY):
            self._restart_cause, self._restart_cause_told = "", False  # a new reason, or the next change after ready
            return reason
        if new is S.READY:
            self._restart_cause_told = True
            return f"restarted: {cause}"
        return f"restarting: {cause}"

    def dependency_ready(self, dependency: str, generation: int) -> None:
        """A dependency became ready again: restart once, if the manifest asks for it."""
        if self.spec.on_dependency_restart is not DependencyRestart.RESTART:
            return
        if self.state is not S.READY or not self.intent.wanted:
            return
        if generation <= self._seen_generations.get(dependency, generation):
            return
        self._seen_generations[dependency] = generation
        log.info("dependency restarted: restarting", service=self.spec.name, dependency=dependency)
        self.log.mark(f"restart: dependency {dependency} restarted")
        self.restarts += 1
        self.note_restart_cause(f"dependency {dependency} restarted")
        self.request_restart(self.intent.command)

    async def _supervise_in(self, instance: _Instance) -> None:
        try:
            await self._supervise()
        except Exception as exc:  # a bug must not take the whole daemon down
            log.exception("runner crashed", service=self.spec.name)
            self.reason = f"internal error: {exc!r}"
            if self.state is not S.FAILED:  # outside the table on purpose: this is a bug's exit
                self._set(S.FAILED)
            else:
                self._publish(notify=True)
        finally:
            if self._instance is instance:
                self._instance = None
            self._publish(notify=True, snapshot=False)

    async def _supervise(self) -> None:
        self.exit_code = None
        self._last_exit = ""
        self.intent.pending = False
        self._fire(Event.START, "")
        while True:
            await self._wait_gate()
            if not self.intent.wanted:
                # a `down` took it back and its turn to stop has not come: that stop ends this,
                # unless a later `up` wants it again first (and keeps this instance): then start
                while not self.intent.wanted:
                    await self._wait_for_change([self])
                continue
            if not await self._port_is_ours_to_take():
                continue  # back to the gate once the port was freed
            self._fire(Event.DEPS_READY, f"restarting after: {self._last_exit}" if self._last_exit else "")
            try:
                await self._spawn()
            except SpawnError as exc:
                # the status line already names the service: "bad: failed (cannot run 'x': ...)"
                self._fire(Event.GIVE_UP, str(exc).removeprefix(f"{self.spec.name}: "))
                await self._rest_in_failed()
                continue
            end = await self._attempt()
            if not await self._after(end):
                return

    async def _after(self, end: InstanceEnd) -> bool:
        """Act on how an instance ended; False when the service is done for good.

        When the main process exited by itself, the state changes at once (it is gone)
        and its stragglers are swept after; otherwise the process is stopped first."""
        was_ready = self.ready_at is not None and self.state in (S.READY, S.UNHEALTHY)
        exited = end.kind is Ending.EXITED
        rc = -9
        if exited and self._stop_signalled:
            await anyio.sleep_forever()  # the exit a `down` asked for: the stop in `_run` takes it from here
        if exited:
            rc = end.returncode if end.returncode is not None else -9
            self.exit_code = rc
            self.port_up = False if self.spec.port else None
            if self.proc is not None:  # the exit first, then what it leads to (backoff, failed, ...)
                self.log.mark(f"pid {self.proc.pid} {describe_exit(rc)}")
            end = await self._check_daemonized(end, rc)
        else:
            await self._stop_process()
        verdict = judge(self.spec, end, self.history, now=anyio.current_time(), was_ready=was_ready, rng=self.rng)
        retry_at = anyio.current_time() + verdict.delay
        if verdict.next is Next.DONE:
            self._fire(Event.DONE, verdict.reason)
            log.info("service exited", service=self.spec.name, reason=verdict.reason)
        elif verdict.next is Next.FAIL:
            self._fire(Event.GIVE_UP, verdict.reason)
        else:
            self.next_retry_at = self.io.wall_time() + verdict.delay
            self._last_exit = verdict.cause
            self._nudge = LazyEvent()
            self._fire(Event.CRASHED, verdict.reason)
            log.warning("service crashed", service=self.spec.name, reason=verdict.cause, delay=round(verdict.delay, 3))
        if exited:
            restarting_now = verdict.next is Next.RESTART and verdict.delay <= 0
            await self._clear_after_exit(restarting_now)  # stragglers of its group
        if verdict.next is Next.DONE:
            await anyio.sleep_forever()
        if verdict.next is Next.FAIL:
            await self._rest_in_failed()
            return True
        if retry_at > anyio.current_time():
            with anyio.move_on_after(retry_at - anyio.current_time()):
                await self._nudge.wait()  # `svc up` cuts the wait short
        self.next_retry_at = None
        self.restarts += 1
        self._fire(Event.BACKOFF_OVER, "")
        return True

    async def _check_daemonized(self, end: InstanceEnd, rc: int) -> InstanceEnd:
        """A service whose main process exited 0 while a descendant lives on (holding its
        port, typically) has put itself in the background: say so, naming the descendant."""
        proc = self.proc
        if rc != 0 or self.spec.kind is not Kind.SERVICE or proc is None:
            return end
        leftover = await self.io.leftover(proc, self.spec.port)
        if leftover is None:
            return end
        why = daemonized_reason(rc, leftover.pid, leftover.cmdline, leftover.port, ours=leftover.ours, pid_file=self.spec.pid_file)
        log.error("service daemonized itself", service=self.spec.name, pid=leftover.pid, cmdline=leftover.cmdline)
        return InstanceEnd(Ending.DAEMONIZED, rc, why)

    async def _rest_in_failed(self) -> None:
        """Stay failed; with failed_retry, try again slowly (the cause may go away),
        from a clean restart history."""
        log.error("service failed", service=self.spec.name, reason=self.reason)
        if self.spec.failed_retry <= 0:
            self.next_retry_at = None
            self._publish()
            await anyio.sleep_forever()
        self.next_retry_at = self.io.wall_time() + self.spec.failed_retry
        self._publish()
        await anyio.sleep(self.spec.failed_retry)
        self.next_retry_at = None
        if not self.intent.wanted:
            self._publish()
            await anyio.sleep_forever()  # nobody wants it any more: its stop ends this
        self.history.clear()
        self.restarts += 1
        self._fire(Event.START, "retrying after failure (failed_retry)")

    async def _wait_gate(self) -> None:
        """Until every dependency is ready (a one-shot: exited 0) and the tier barrier of
        its `up` is open."""
        while True:
            blockers = dependency_blockers(self.spec.depends_on, self.host.runners)
            gate = self.gate
            barrier_open = gate is None or gate.is_open_for(self.order)
            if not blockers and barrier_open:
                if self.blocked_by or self.stuck:
                    self.blocked_by, self.stuck = (), False
                    self._publish(notify=True)
                return
            if not blockers:
                assert gate is not None
                blockers = Blockers((), False, gate.waiting_reason())
            if blockers.names != self.blocked_by or blockers.reason != self.reason or blockers.stuck != self.stuck:
                self.blocked_by, self.reason, self.stuck = blockers.names, blockers.reason, blockers.stuck
                self._publish(notify=True)
            watched = [self.host.runners[n] for n in blockers.names]
            await self._wait_for_change(watched, gate=None if barrier_open else gate)

    async def _port_is_ours_to_take(self) -> bool:
        """Check the port before spawning; stay in `conflict` while a foreign process holds it."""
        port = self.spec.port
        if port is None or not self.io.is_listening(port):
            return True
        listener = await self.io.listener_on(port)
        if listener is None:
            return True
        if listener.pid is not None and self.host.owns_pid(listener.pid):
            return True  # one of our own (e.g. a straggler about to go): let the spawn race it
        self.conflict = listener
        self._fire(Event.PORT_TAKEN, f"port {port} is held by {listener.describe()}")
        log.error("port conflict", service=self.spec.name, port=port, pid=listener.pid, cmdline=listener.cmdline)
        while self.io.is_listening(port):
            await anyio.sleep(self.spec.probe_interval)
        self.conflict = None
        self._fire(Event.PORT_FREE, "")
        return False

    async def _spawn(self) -> None:
        self.instance_id = self.host.instance_prefix + uuid.uuid4().hex[:16]
        self._stop_signalled = False
        self._log_ready = LazyEvent()
        self.ready_at = None
        self.port_up = False if self.spec.port else None
        assert self._tg is not None
        try:
            with anyio.CancelScope(shield=True):  # never lose track of a process half-spawned
                self.proc = await self.io.spawn(
                    self.spec,
                    instance_id=self.instance_id,
                    log=self.log,
                    task_group=self._tg,
                    on_line=self._on_line if self._log_regex else None,
                    extra_env=self.host.child_env,
                )
        finally:
            self._release_sweep()
        self._outputs = [p for p in self._outputs if p.output_open]
        self._outputs.append(self.proc)
        if not (self.spec.ready.exec or (self.spec.health is not None and self.spec.health.exec)):
            self.proc.env = {}  # no exec probe will need it
        self.started_at = self.proc.started_at
        self.exit_code = None
        self.log.mark(f"started pid {self.proc.pid}: {' '.join(self.spec.command)}")
        self._fire(Event.SPAWNED, self.reason)
        self.host.save_state()

    def _on_line(self, line: str) -> None:
        if self._log_regex is not None and not self._log_ready.is_set() and self._log_regex.search(line):
            self._log_ready.set()

    async def _attempt(self) -> InstanceEnd:
        proc = self.proc
        assert proc is not None
        end: InstanceEnd | None = None
        async with anyio.create_task_group() as tg:

            async def watch_exit() -> None:
                nonlocal end
                rc = await proc.wait()
                if rc == 0 and self.spec.pid_file is not None and self.spec.kind is Kind.SERVICE:
                    rc = await self._follow_pid_file(proc, self.spec.pid_file, rc)
                if end is None:
                    end = InstanceEnd(Ending.EXITED, rc)
                tg.cancel_scope.cancel()

            # no task waits for the exit: the loop starts the watcher when the process exits
            unwatch = proc.on_exit(functools.partial(tg.start_soon, watch_exit))
            if unwatch is None:
                tg.start_soon(watch_exit)
            try:
                if self.spec.kind is Kind.ONESHOT:
                    with anyio.move_on_after(self.spec.ready_timeout):
                        await anyio.sleep_forever()
                    end = InstanceEnd(Ending.READY_TIMEOUT)
                    tg.cancel_scope.cancel()
                    return end
                detail = await self._wait_ready(proc)
                if detail is not None:
                    end = InstanceEnd(Ending.READY_TIMEOUT, detail=detail)
                    tg.cancel_scope.cancel()
                    return end
                self.ready_at = self.io.wall_time()
                self.ready_duration = self.ready_at - (self.started_at or self.ready_at)
                self.conflict = None
                self.ready_generation += 1
                self._last_exit = ""
                self._seen_generations = self.host.ready_generations(self.spec.depends_on)
                self._fire(Event.READY, "")
                self.host.became_ready(self.spec.name)
                log.info("service ready", service=self.spec.name, pid=proc.pid, seconds=round(self.ready_duration, 3))
                end = await self._liveness(proc)
                tg.cancel_scope.cancel()
            finally:
                if unwatch is not None:
                    unwatch()
        assert end is not None
        return end

    async def _follow_pid_file(self, proc: ProcessHandle, pid_file: Path, rc: int) -> int:
        """A program that daemonizes: its main process exited 0; supervise the pid it wrote
        to ``pid_file`` from now on (what systemd's PIDFile= does). Returns how that ended."""
        daemon = await self.io.follow_pid_file(proc, pid_file, self.spec.ready_timeout)
        if daemon is None:
            return rc
        self.log.mark(f"pid {proc.pid} exited 0; supervising pid {daemon.pid} from {pid_file}")
        log.info("following the pid file", service=self.spec.name, pid=daemon.pid, pid_file=str(pid_file))
        self.proc = daemon
        self._publish(notify=True)
        self.host.save_state()
        return await daemon.wait()

    async def _wait_ready(self, proc: ProcessHandle) -> str | None:
        """None once every readiness condition holds; a reason when ready_timeout hit."""
        spec, ready = self.spec, self.spec.ready
        last = ""
        with anyio.move_on_after(spec.ready_timeout):
            if ready.tcp and spec.port is not None:
                while True:
                    await self.io.wait_listening(spec.port)
                    result = await self.io.tcp_probe(spec.port, ready.timeout)
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
                    result = await self.io.probe(check, spec.port, proc.env, spec.cwd)
                    if result.ok:
                        break
                    last = result.detail
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            if ready.after:
                await anyio.sleep(max(0.0, (self.started_at or 0) + ready.after - self.io.wall_time()))
            return None
        if ready.log and not self._log_ready.is_set():
            last = f"no output line matched {ready.log!r}"
        elif ready.tcp and spec.port is not None and not last:
            last = f"port {spec.port} never accepted a connection"
            elsewhere = sorted((await self.io.ports_listened_by(proc.pid)) - {spec.port})
            if elsewhere:
                ports = ", ".join(map(str, elsewhere))
                last += (
                    f"; it listens on {ports} instead: make it listen on {spec.port} "
                    f"(the manifest passes it as {{port}} and $PORT) or declare port = {elsewhere[0]}"
                )
        return f": {last}" if last else ""

    async def _liveness(self, proc: ProcessHandle) -> InstanceEnd:
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
                result = await self.io.probe(check, spec.port, proc.env, spec.cwd)
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
                        return InstanceEnd(Ending.UNHEALTHY, detail=f"unhealthy: {result.detail}")
            if spec.max_memory:
                usage = self.host.tree_usage(self)
                if usage is not None and usage.rss_bytes > spec.max_memory:
                    over_memory += 1
                    if over_memory >= 2:
                        self.memory_restarts += 1
                        why = f"memory {usage.rss_bytes / 1e6:.0f} MB above max_memory {spec.max_memory / 1e6:.0f} MB"
                        log.warning("memory limit", service=spec.name, rss=usage.rss_bytes, limit=spec.max_memory)
                        self.reason = why
                        return InstanceEnd(Ending.MEMORY, detail=why)
                else:
                    over_memory = 0
            if self.ready_at is not None:
                self.history.backoff.stayed_ready(self.io.wall_time() - self.ready_at)
            await anyio.sleep(interval)

    async def _port_liveness(self) -> InstanceEnd:
        """Liveness for a plain port check: the supervisor's shared port sweep does the
        probing (one read of the kernel's listening sockets for every such service), and
        this waits until it finds the port gone ``unhealthy_threshold`` times in a row."""
        self._port_failures = 0
        self._unhealthy = LazyEvent()
        self.host.watch_port(self)
        try:
            await self._unhealthy.wait()
        finally:
            self.host.unwatch_port(self)
        return InstanceEnd(Ending.UNHEALTHY, detail=f"unhealthy: port {self.spec.port} is not listening")

    def port_swept(self, listening: bool, latency: float) -> None:
        """One result of the shared port sweep (see ``PortSweep``)."""
        self._record_probe(probes.ProbeResult(listening, latency, "" if listening else "not listening"))
        if listening:
            self._port_failures = 0
            if self.ready_at is not None:
                self.history.backoff.stayed_ready(self.io.wall_time() - self.ready_at)
            return
        self._port_failures += 1
        log.warning("liveness probe failed", service=self.spec.name, failures=self._port_failures, detail="port not listening")
        if self._port_failures >= self.spec.unhealthy_threshold and not self._unhealthy.is_set():
            self._fire(Event.PROBE_FAILED, f"{self._port_failures} liveness probes failed: port {self.spec.port} is not listening")
            self._unhealthy.set()

    def needs_each_sweep(self) -> bool:
        """Whether "still listening" would still change something here: the restart
        backoff not yet reset (``stayed_ready``). Otherwise the sweep stops telling it
        each unchanged result and tells it only when its port is gone."""
        return self.history.backoff.attempts > 0 or self._port_failures > 0 or self.port_up is not True

    def _record_probe(self, result: probes.ProbeResult) -> None:
        if self.spec.port is None:
            return
        changed = self.port_up != result.ok
        self.port_up = result.ok
        self.probe_latency = result.latency
        self.host.observe_probe(self.spec.name, self.spec.port, result.latency)
        self._publish(notify=changed)

    # ------------------------------------------------------------------ stopping

    async def _clear_after_exit(self, restarting_now: bool = False) -> None:
        """The main process has exited: deal with what it left before the next start.

        Fast path: signal its group and, when its port is already free, start again
        at once while the thorough sweep (process-table reads that find escaped
        descendants, SIGKILL after stop_timeout) finishes in the background. When
        something still holds the port, wait for the sweep: a restart must not race
        its own predecessor for the port.

        When the restart comes at once (``restarting_now``), the sweep begins once the
        successor is spawned: its process-table read runs in a thread, and with a
        thousand processes on the machine that thread held the GIL long enough to delay
        the successor's spawn by 5 to 15 ms.
        """
        proc = self.proc
        if proc is None:
            return
        self.io.signal_group(proc, self.spec.stop_signal)
        port = self.spec.port
        if port is not None and self.io.is_listening(port):
            await self._stop_process(exit_marked=True)
            return
        self.proc = None
        self.host.save_state()
        assert self._tg is not None
        self._release_sweep()
        successor = self._successor_spawned = LazyEvent() if restarting_now else None
        self._tg.start_soon(self._sweep_in_background, proc, successor)

    async def _sweep_in_background(self, proc: ProcessHandle, successor: LazyEvent | None) -> None:
        with anyio.CancelScope(shield=True):
            if successor is not None:
                with anyio.move_on_after(SWEEP_DEFERRAL_LIMIT):  # a gate or a stop can keep the successor away
                    await successor.wait()
            await proc.stop(self.spec.stop_signal, self.spec.stop_timeout)

    def _release_sweep(self) -> None:
        """Let a deferred sweep of the previous instance begin now."""
        if self._successor_spawned is not None:
            self._successor_spawned.set()
            self._successor_spawned = None

    async def _stop_process(self, *, exit_marked: bool = False) -> None:
        """Stop the process tree and wait for the port; ``exit_marked``: the main process
        exited by itself and its log already says so."""
        proc = self.proc
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            rc = await proc.stop(self.spec.stop_signal, self.spec.stop_timeout)
            if self.exit_code is None:
                self.exit_code = rc
            if not exit_marked:
                self.log.mark(f"pid {proc.pid} {describe_exit(rc)}")
            await self._wait_port_free()
            self.proc = None
            self._stop_signalled = False
            self.host.save_state()

    async def _wait_port_free(self) -> None:
        """After a stop: return once nothing listens on our port (bounded)."""
        port = self.spec.port
        if port is None:
            return
        with anyio.move_on_after(max(1.0, self.spec.stop_timeout)):
            await self.io.wait_closed(port)
        self.port_up = False

    async def _stop_everything(self) -> None:
        """Bring the service to rest: stop its process (if any), then `stopped`."""
        self._release_sweep()
        self._fire(Event.STOP, "")
        await self._stop_process()
        self.port_up = False if self.spec.port else None
        self.blocked_by = ()
        self.stuck = False
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
        reason = self._with_restart_cause(old, new, reason)
        if old is not new and new not in (S.WAITING, S.STARTING):  # waiting, starting: "started pid N" says enough
            self.log.mark(f"{new.value}: {reason}" if reason else new.value)
        if new is not S.WAITING or reason:
            self.reason = reason
        if new is not S.WAITING:
            self.blocked_by = ()
            self.stuck = False
        if old is not new:
            log.debug("state", service=self.spec.name, old=old.value, new=new.value, reason=reason)
        self._publish(notify=True)

    def _set(self, state: ServiceState) -> None:
        self.state = state
        self._publish(notify=True)

    def _publish(self, notify: bool = False, *, snapshot: bool = True) -> None:
        """Tell the watchers (``notify``, or when settled changed). ``snapshot=False``: only
        the intent changed, which the snapshot does not show; it stays the same object, so
        `svc up`'s progress does not send it again."""
        if snapshot:
            self.snap = self._build_snapshot()
        settled = is_settled(self.state, pending=self.intent.pending, wanted=self.intent.wanted, stuck=self.stuck)
        settled_changed = settled != self.settled
        self.settled = settled
        if notify or settled_changed:
            if self.listeners:
                for event in self.listeners:
                    event.set()
                self.listeners = _NO_LISTENERS
            self.host.changed(self, settled_changed=settled_changed)

    def _build_snapshot(self) -> ServiceSnapshot:
        spec = self.spec
        proc = self.proc
        conflict = self.conflict
        return ServiceSnapshot(
            name=spec.name,
            tier=spec.tier,
            port=spec.port,
            state=self.state,
            url=spec.url,
            description=spec.description,
            pid=proc.pid if proc is not None and proc.returncode is None else None,
            started_at=self.started_at,
            ready_at=self.ready_at,
            ready_duration=self.ready_duration,
            restarts=self.restarts,
            restarts_total=self.restarts_total,
            port_up=self.port_up,
            probe_latency=self.probe_latency,
            conflict_pid=conflict.pid if conflict else None,
            conflict_cmdline=conflict.cmdline if conflict else "",
            reason=self.reason,
            blocked_by=self.blocked_by,
            next_retry_at=self.next_retry_at,
            exit_code=self.exit_code,
            memory_restarts=self.memory_restarts,
            replaced_by=spec.replaced_by,
        )


def _with(listeners: Listeners, event: anyio.Event) -> set[anyio.Event]:
    """``listeners`` plus ``event``: a set of their own once someone waits."""
    if isinstance(listeners, set):
        listeners.add(event)
        return listeners
    return {*listeners, event}


def _without(listeners: Listeners, event: anyio.Event) -> Listeners:
    """``listeners`` less ``event``; the shared empty one once nobody waits."""
    if isinstance(listeners, set):
        listeners.discard(event)
        if listeners:
            return listeners
    return _NO_LISTENERS


def _port_only(check: Any) -> bool:
    return bool(check.tcp) and not (check.http or check.exec)
