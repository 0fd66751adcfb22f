"""All services of one manifest: the requests that drive their runners, and what they publish.

The ``Supervisor`` holds one ``Runner`` per service, turns `up`/`down`/`restart`/
`reload` requests into runner requests, keeps the tier barrier of each `up`
(``UpGate`` over the pure ``startgate.UpBatch``), publishes immutable snapshots that
the control server, the metrics and the CLI read, and keeps the state file a
successor reads after a crash (its format: ``host.recovery``). Everything it does to
the machine goes through the ``ServiceIO`` it is given (the real one by default).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import structlog

from supervisord_lite.core import graph
from supervisord_lite.core.manifest import source_files
from supervisord_lite.core.changefeed import EVERYTHING, ChangeFeed
from supervisord_lite.core.model import Manifest, ServiceSpec
from supervisord_lite.core.paths import instance_prefix
from supervisord_lite.core.snapshot import ServiceSnapshot, SupervisorSnapshot
from supervisord_lite.core.startgate import UpBatch
from supervisord_lite.core.states import ServiceState
from supervisord_lite.core.upbudget import settle_budget
from supervisord_lite.host.proctable import is_paused
from supervisord_lite.host.recovery import DaemonState, RecordedProcess, record_process
from supervisord_lite.runtime import probes
from supervisord_lite.runtime.portsweep import PortSweep
from supervisord_lite.runtime.runner import Runner
from supervisord_lite.runtime.serviceio import RealServiceIO, ServiceIO

log = structlog.get_logger("supervisor")

S = ServiceState
#: How soon a state file that could not be written (a full disk) is tried again.
STATE_RETRY_SECONDS = 1.0
#: How long the state file's writer lets changes gather after the first one: a crash and
#: the restart right after it make one write, and that write (encoded in a thread) does not
#: compete with the successor's spawn for the GIL
STATE_GATHER_SECONDS = 0.02
#: How long `svc up` (``wait_settled``) gathers changes into one progress update, and how
#: often within that it looks whether the last service has settled (then it answers at once).
PROGRESS_BATCH = 0.05
SETTLE_POLL = 0.005


class UpGate:
    """The tier barrier of one `up`, with the events of the runners waiting on it."""

    def __init__(self, batch: UpBatch) -> None:
        self.batch = batch
        self.listeners: set[anyio.Event] = set()

    def is_open_for(self, order: int) -> bool:
        return self.batch.is_open_for(order)

    def waiting_reason(self) -> str:
        return self.batch.waiting_reason()

    @property
    def done(self) -> bool:
        return self.batch.done

    def update(self, name: str, settled: bool) -> None:
        if self.batch.update(name, settled):
            for event in self.listeners:
                event.set()
            self.listeners.clear()


class DownOutcome(NamedTuple):
    """What a `down` did: the services it stopped, and those running when it began that a
    later `up`, `restart` or `down` took over before it was done with them (the last
    command wins; they are that command's now, stopped or not)."""

    stopped: list[str]
    taken_over: list[str]


class Supervisor:
    """All runners of one manifest, and the requests that drive them."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        io: ServiceIO | None = None,
        port_watcher: probes.PortWatcher | None = None,
        observe_probe: Callable[[str, int, float], None] | None = None,
        forget_service: Callable[[str], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.io: ServiceIO = io if io is not None else RealServiceIO(port_watcher)
        self.manifest_mtime = _mtime(manifest.path)
        self.source_mtimes = _source_mtimes(manifest)
        self._state_dirty = anyio.Event()
        self._state_failing = False
        self._state_version = 0  # bumped by every save_state()
        self._written_version = 0  # the version the state file on disk holds
        self._state_writer_running = False  # no writer (a supervisor that was never run): nothing to wait for
        self._state_written = anyio.Event()  # set (and replaced) after every write
        self._flush_wanted = anyio.Event()  # someone waits for the file: skip the coalescing pause
        self._kept_wanted: tuple[str, ...] | None = None
        #: service -> (pid, pgid, create_time, instance id) and its state-file record, as last written
        self._records: dict[str, tuple[tuple[int, int, float, str], RecordedProcess]] = {}
        self.instance_prefix = instance_prefix(manifest.supervisor.state_dir)
        self.port_sweep = PortSweep(self.io.listening_ports)
        self._observe_probe = observe_probe
        self._forget_service = forget_service
        self.runners: dict[str, Runner] = {}
        self._runner_list: tuple[Runner, ...] = ()
        self._dependents: dict[str, list[str]] = {}
        self._changed: anyio.Event | None = None  # made when someone asks (next_change), set at the next change
        self._feed = ChangeFeed()  # which services changed, for readers that follow only changes
        self._position: dict[str, int] = {}  # service -> its place in the manifest (the order updates list them in)
        self._tg: anyio.abc.TaskGroup | None = None
        self.started_at = self.io.wall_time()
        self.reloads_ok = 0
        self.reloads_error = 0
        self._commands = 0  # numbers up/restart/down requests in arrival order
        self._leaving: set[str] = set()  # services a reload is stopping because the manifest dropped them
        self._usage_cache: tuple[float, dict[str, Any]] = (0.0, {})
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        path = os.environ.get("PATH", "")
        self.child_env = {"PATH": f"{bin_dir}{os.pathsep}{path}" if bin_dir not in path.split(os.pathsep) else path}
        manifest.supervisor.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for spec in manifest.services.values():
            self.runners[spec.name] = Runner(self, spec)
        self._index()

    def _index(self) -> None:
        self._runner_list = tuple(self.runners.values())
        self._position = {name: i for i, name in enumerate(self.runners)}
        self._dependents = {}
        for spec in self.manifest.services.values():
            for dep in spec.depends_on:
                self._dependents.setdefault(dep, []).append(spec.name)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self.io.run)
            tg.start_soon(self.port_sweep.run)
            tg.start_soon(self._write_state_forever)
            for runner in self._runner_list:
                tg.start_soon(runner.run)
            task_status.started()
            await anyio.sleep_forever()

    # ------------------------------------------------------------------ change feed

    def notify(self, name: str | None = EVERYTHING) -> None:
        """Wake whoever waits for a change: of service ``name``, or of any of them."""
        self._feed.add(name)
        event = self._changed
        if event is not None:  # a burst of changes in one pass of the loop sets (and made) one event
            self._changed = None
            event.set()

    def changed(self, runner: Runner, *, settled_changed: bool) -> None:
        """A runner published a change (the ``RunnerHost`` side of its reports)."""
        if settled_changed and runner.gates:
            for gate in runner.gates:
                gate.update(runner.spec.name, runner.settled)
            runner.gates = [g for g in runner.gates if not g.done]
        self.notify(runner.spec.name)

    def next_change(self) -> anyio.Event:
        """The event set at the next change anywhere. Take it before reading a snapshot
        and wait on it after, so a change in between is never missed."""
        event = self._changed
        if event is None:
            event = self._changed = anyio.Event()
        return event

    async def wait_changed(self) -> None:
        await self.next_change().wait()

    # ------------------------------------------------------------------ queries

    def ready_generations(self, names: Iterable[str]) -> dict[str, int]:
        """How many times each of these services became ready (unknown names left out)."""
        return {n: self.runners[n].ready_generation for n in names if n in self.runners}

    def became_ready(self, name: str) -> None:
        generation = self.runners[name].ready_generation
        for dependent in self._dependents.get(name, ()):
            runner = self.runners.get(dependent)
            if runner is not None:
                runner.dependency_ready(name, generation)

    def owns_pid(self, pid: int) -> bool:
        procs = [r.proc for r in self._runner_list if r.proc is not None]
        # one read of the process table for every tree: a read per service made a port
        # conflict at 1000 services cost a minute
        return any(pid == proc.pid for proc in procs) or pid in self.io.owned_pids(procs)

    def observe_probe(self, service: str, port: int, seconds: float) -> None:
        if self._observe_probe is not None:
            self._observe_probe(service, port, seconds)

    def watch_port(self, runner: Runner) -> None:
        self.port_sweep.add(runner)

    def unwatch_port(self, runner: Runner) -> None:
        self.port_sweep.discard(runner)

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
        stamp, usage = self._usage_cache
        now = time.monotonic()
        if now - stamp > 1.0:
            roots = {r.spec.name: r.proc.pid for r in self._runner_list if r.proc is not None and r.proc.returncode is None}
            usage = self.io.tree_usage(roots) if roots else {}
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
            source_mtimes=self.source_mtimes,
        )

    def _with_usage(self, services: tuple[ServiceSnapshot, ...]) -> tuple[ServiceSnapshot, ...]:
        """The snapshots plus what only the process table knows (usage, and whether it is
        paused), and the latency of the last sweep for a quietly listening service (the
        port sweep does not republish it at every sweep)."""
        usage = self._usage()
        steady_latency = self.port_sweep.steady_latency
        out = []
        for s in services:
            changes: dict[str, Any] = {}
            u = usage.get(s.name) if s.pid else None
            if u:
                changes.update(rss_bytes=u.rss_bytes, cpu_seconds=u.cpu_seconds)
            latency = steady_latency(s.name)
            if latency is not None and latency != s.probe_latency:
                changes["probe_latency"] = latency
            if s.pid and is_paused(s.pid):
                changes["paused"] = True
            out.append(replace(s, **changes) if changes else s)
        return tuple(out)

    # ------------------------------------------------------------------ requests

    def up(self, names: Iterable[str] | None, *, forget_restarts: bool = False) -> list[str]:
        """Start ``names`` (all active services when None) and what they need; an
        explicit start clears their restart history, and with ``forget_restarts`` (a
        person's `svc up`, not a reload or a resume) the count of those it starts."""
        start_set = graph.start_set(self.manifest, names)
        command = self._next_command()
        asked = [name for name in start_set if self.runners[name].request_start(command, forget_restarts=forget_restarts)]
        self._open_gate(asked)
        self.save_state()
        return list(start_set)

    def restart(self, names: Iterable[str]) -> list[str]:
        """Stop then start ``names`` (and start what they need). When some of them
        depend on others of them (`--with-dependents`), the dependents stop first, and
        start only once what they depend on is ready again."""
        names = list(dict.fromkeys(names))
        closure = graph.start_set(self.manifest, names)
        command = self._next_command()
        named = set(names)
        asked = []
        for name in closure:  # make sure what they need runs too
            if name not in named and self.runners[name].request_start(command, forget_restarts=True):
                asked.append(name)
        for name in names:
            stop_after = graph.dependents(self.manifest, name) & named
            if self.runners[name].request_restart(command, stop_after, forget_restarts=True):
                asked.append(name)
        self._open_gate(asked)
        self.save_state()
        return closure

    def _open_gate(self, names: Collection[str]) -> None:
        """The tier barrier of one request: each of ``names`` obeys it and counts in it."""
        members = {n: self.runners[n].order for n in names}
        gate = UpGate(UpBatch(members, lambda n: self.runners[n].settled))
        for name in names:
            runner = self.runners[name]
            runner.obey(gate)
            if not gate.done:
                runner.gates = [g for g in runner.gates if not g.done] + [gate]

    def _next_command(self) -> int:
        self._commands += 1
        return self._commands

    @property
    def last_command(self) -> int:
        """The number of the latest up/restart/down (each request numbers its own)."""
        return self._commands

    def overtaken(self, names: Iterable[str], command: int) -> tuple[list[str], list[str]]:
        """Of ``names``, which command number ``command`` asked to run: (taken back: a later
        `down` stopped wanting them; removed: a reload took them out of the manifest)."""
        taken_back, removed = [], []
        for name in names:
            runner = self.runners.get(name)
            if runner is None or runner.intent.removed or name in self._leaving:
                removed.append(name)
            elif runner.command > command and not runner.wanted:
                taken_back.append(name)
        return taken_back, removed

    async def down(self, names: Iterable[str] | None) -> DownOutcome:
        """Stop ``names`` and their dependents (all when None), dependents first; return
        once the state file says so."""
        plan = graph.stop_plan(self.manifest, names)
        command = self._next_command()
        released = [self.runners[n] for step in plan for n in step if n in self.runners]
        active = [r.spec.name for r in released if not r.settled_stopped]
        for runner in released:  # nobody wants any of them from now on, though they stop in turn
            runner.release(command, publish=False)
        for name in plan[0] if plan else ():  # the first step's groups signalled before the bookkeeping
            if name in self.runners:
                self.runners[name].begin_stop()
        for runner in released:
            runner.publish_change()
        stopped: list[str] = []
        for step in plan:
            # a service a later up/restart asked for is theirs now: the last command wins
            runners = [self.runners[n] for n in step if n in self.runners and self.runners[n].command == command]
            was_running = {r.spec.name for r in runners if not r.settled_stopped}
            for runner in runners:  # every group of the step signalled at once, before any bookkeeping
                runner.begin_stop()
            for runner in runners:
                runner.request_stop(command)
            await self._wait_until(lambda rs=runners: all(r.settled_stopped or r.command > command for r in rs))
            stopped.extend(r.spec.name for r in runners if r.command == command and r.spec.name in was_running)
        self.save_state()
        await self.state_flushed()  # a daemon killed right after a `down` must not start them again at boot
        done = set(stopped)
        taken_over = [
            n for n in active if n not in done and (runner := self.runners.get(n)) is not None and runner.command > command
        ]
        return DownOutcome(stopped, taken_over)

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.wait_changed()

    def settle_budget(self, names: Collection[str]) -> float:
        """The default bound of an `up` or `restart` of ``names``, from the manifest."""
        return settle_budget(self.manifest, names)

    def unsettled(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` have not reached an outcome (what `svc up` still waits for)."""
        return [n for n in names if n in self.runners and not self.runners[n].settled]

    async def wait_settled(self, names: Collection[str], timeout: float | None = None) -> AsyncIterator[list[str]]:
        """Until every named service reached an outcome, or ``timeout`` seconds have passed
        (then ``unsettled`` says which did not), yield at each change (and at least every
        second) those of ``names`` that may have changed since the last yield, in manifest
        order: all of them the first time, and all of them again at most once a second
        (a snapshot may also change without a wake-up: a probe's latency, a retry time).

        Each yield costs what changed, not what is asked for: the names come from the
        change feed, and the count of unsettled ones is kept up to date from them."""
        names = list(dict.fromkeys(names))
        wanted = set(names)
        unsettled: set[str] = set()
        deadline = anyio.current_time() + timeout if timeout is not None else None
        look: list[str] = names
        cursor = self._feed.cursor
        full_at = anyio.current_time()

        def count(looked_at: Iterable[str]) -> None:
            for name in looked_at:
                runner = self.runners.get(name)
                if runner is not None and not runner.settled:
                    unsettled.add(name)
                else:
                    unsettled.discard(name)

        def count_changed_since(mark: int) -> None:
            since = self._feed.since(mark)
            count(names if since is None else (n for n in since if n in wanted))

        while True:
            changed = self.next_change()
            count(look)
            yield look
            left = deadline - anyio.current_time() if deadline is not None else 1.0
            if not unsettled or left <= 0:
                return
            with anyio.move_on_after(min(1.0, left)):  # also a heartbeat for elapsed times
                await changed.wait()
                count_changed_since(cursor)
                # Changes within PROGRESS_BATCH go out as one update, but the last service to
                # settle is answered within SETTLE_POLL, not at the end of the batch.
                batch_end, seen = anyio.current_time() + PROGRESS_BATCH, self._feed.cursor
                while unsettled and (rest := batch_end - anyio.current_time()) > 0:
                    await anyio.sleep(min(SETTLE_POLL, rest))
                    mark, seen = seen, self._feed.cursor
                    count_changed_since(mark)
            since = self._feed.since(cursor)
            cursor = self._feed.cursor
            now = anyio.current_time()
            if since is None or now - full_at >= 1.0:
                look, full_at = names, now
            else:
                position = self._position
                look = sorted((n for n in since if n in wanted), key=lambda n: position.get(n, -1))

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
        fresh = {name: Runner(self, new.services[name]) for name in [*changed, *added]}  # may fail: before any change
        for name in differ:
            if name not in changed:  # only what people read changed (description, url, ...): no restart
                self.runners[name].update_spec(new.services[name])
        # stop removed ones (and changed ones) while the old graph still describes them
        if removed:
            self._leaving.update(removed)  # an up waiting for them reports them removed, not taken back
            try:
                await self.down([n for n in removed if old.services[n].is_active] or [])
            finally:
                self._leaving.difference_update(removed)
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
        self.source_mtimes = _source_mtimes(new)
        restarted = []
        for name in changed:
            runner = self.runners[name]
            runner.request_removal()
            fresh[name].carry_counts_from(runner)  # a reload is no explicit restart: counts go on
            self.runners[name] = fresh[name]
        for name in added:
            self.runners[name] = fresh[name]
        self.runners = {n: self.runners[n] for n in new.services}
        self._index()
        for runner in self._runner_list:
            runner.order = new.tier_order(runner.spec)
        if self._tg is not None:
            for name in [*changed, *added]:
                self._tg.start_soon(self.runners[name].run)
        to_start = [n for n in changed if n in was_wanted and new.services[n].is_active]
        if platform_up:
            to_start += [n for n in added if new.services[n].is_active]
        for name in to_start:
            if name in changed:
                self.runners[name].note_restart_cause("its definition changed (reload)")
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
            r.request_stop(command)
        await self._wait_until(lambda: all(r.settled_stopped or r.command > command for r in runners))

    # ------------------------------------------------------------------ crash safety

    def save_state(self) -> None:
        """Ask for the state file to be written (coalesced: at most every 0.2 s).

        The file is the successor's guide, not its only one: every child carries
        SVC_INSTANCE with this manifest's prefix, so a daemon that dies between two
        writes still leaves nothing a successor cannot find."""
        self._state_version += 1
        self._state_dirty.set()

    async def state_flushed(self, timeout: float = 2.0) -> bool:
        """Wait until the state file holds everything saved so far (False after ``timeout``,
        e.g. on a full disk). `svc up` answers only then: a daemon killed right after it
        must leave a record of every process it reported, or a program that rewrites its
        environment (and with it the instance marker) could not be found."""
        target = self._state_version
        if not self._state_writer_running:
            return self._written_version >= target
        with anyio.move_on_after(timeout):
            while self._written_version < target:
                self._flush_wanted.set()
                await self._state_written.wait()
        return self._written_version >= target

    async def _write_state_forever(self) -> None:
        self._state_writer_running = True
        try:
            await self._keep_writing_state()
        finally:
            self._state_writer_running = False

    async def _keep_writing_state(self) -> None:
        while True:
            await self._state_dirty.wait()
            with anyio.move_on_after(STATE_GATHER_SECONDS):
                await self._flush_wanted.wait()  # unless someone waits for the file
            self._state_dirty = anyio.Event()
            version = self._state_version
            state = self.recovery_state()
            written = await self._write_state_file(state)
            if written:
                self._written_version = version
                done, self._state_written = self._state_written, anyio.Event()
                done.set()
            with anyio.move_on_after(0.2 if written else STATE_RETRY_SECONDS):
                await self._flush_wanted.wait()  # coalesce bursts, unless someone waits for the file
            self._flush_wanted = anyio.Event()
            if not written:
                self._state_dirty.set()  # a full disk: try again later, with what is current then

    def keep_wanted_set(self) -> None:
        """From now on the state file keeps what is wanted as it is now: stopping the daemon
        is not a `svc down`, so its successor (at boot) starts the same services again,
        even when this daemon is killed halfway through stopping them."""
        self._kept_wanted = tuple(r.spec.name for r in self._runner_list if r.wanted)
        self.save_state()

    def recovery_state(self) -> DaemonState:
        """What a successor needs if this daemon dies now: what is wanted, what runs."""
        wanted = self._kept_wanted
        records = self._records
        processes: dict[str, RecordedProcess] = {}
        for r in self._runner_list:
            proc = r.proc
            if proc is None or proc.returncode is not None:
                continue
            # each record is made once per process: a start burst writes the file every 0.2 s
            key = (proc.pid, proc.pgid, proc.create_time, r.instance_id)
            cached = records.get(r.spec.name)
            if cached is None or cached[0] != key:
                cached = records[r.spec.name] = (key, record_process(*key))
            processes[r.spec.name] = cached[1]
        if len(records) > len(processes):  # forget the processes gone
            self._records = {name: records[name] for name in processes}
        return DaemonState(
            daemon_pid=os.getpid(),
            manifest=str(self.manifest.path),
            wanted=wanted if wanted is not None else tuple(r.spec.name for r in self._runner_list if r.intent.wanted),
            processes=processes,
            restarts={r.spec.name: r.restarts for r in self._runner_list if r.restarts},
        )

    def carry_restarts(self, counts: Mapping[str, int]) -> None:
        """Restart counts a previous daemon recorded: `svc status` goes on from them (the
        per-process totals the metrics export start at 0, as a new process's counters do)."""
        for name, count in counts.items():
            runner = self.runners.get(name)
            if runner is not None and count > 0:
                runner.resume_restart_count(count)
        self.notify()

    async def _write_state_file(self, state: DaemonState) -> bool:
        try:
            await self.io.write_state(self.manifest.supervisor.state_file, state)
        except OSError as exc:
            if not self._state_failing:  # once, not at every retry
                log.error("cannot write state file; retrying", path=str(self.manifest.supervisor.state_file), error=str(exc))
            self._state_failing = True
            return False
        if self._state_failing:
            log.info("state file written again", path=str(self.manifest.supervisor.state_file))
        self._state_failing = False
        return True


def _source_mtimes(manifest: Manifest) -> dict[str, float | None]:
    """The mtime of each file the manifest was read from, as it was loaded (None: absent)."""
    return {str(path): _mtime(path) for path in source_files(manifest)}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _runtime_view(spec: ServiceSpec) -> ServiceSpec:
    """The spec without what only people read (and the groups the CLI selects by): changing
    those never restarts a service."""
    return replace(spec, description="", url="", title="", groups=(), export=type(spec.export)())
