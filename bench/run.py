"""Side-by-side benchmark: supervisord-lite vs supervisord, PM2, circus and a bare loop.

    python bench/run.py [--n 10,50,200] [--runs 3] [--only bare,svc,...] [--out bench/results.md]
    python bench/run.py --smoke          # N=5, one run, 2 s idle window, CI's check that it works
    python bench/run.py --issue-targets  # what the issue's targets need, in about 25 minutes

Every figure is the median over --runs (with min and max) and its ratio to the bare
loop measured in the same run; runners take turns in a rotating order. See
bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import psutil
except ImportError:  # pragma: no cover (a friendly message, not a traceback)
    sys.exit("bench/run.py needs the project's venv: .venv/bin/python bench/run.py (psutil, tomli-w, svc)")

import targets
import tiers
import workloads
from fixed import measure_fixed
from observe import BenchTimeout, Procs, all_gone, all_listening, cpu_seconds, none_listening, poll, rss_bytes, \
    socket_inodes, timed
from report import Results, render
from runners import RUNNERS, Runner, RunnerError, scrape, tail

from supervisord_lite.demo import read_records
from supervisord_lite.host.portinfo import listener_on, listening_sockets


@dataclass
class Options:
    idle: float
    timeout: float
    metrics_repeat: int = 5
    #: Workloads that get the full idle window (empty: all); the others get the short one.
    idle_at: frozenset[str] = frozenset()
    short_idle: float = 2.0
    #: Give up a wait after this many seconds and report the figure as "> deadline" (None: an error).
    deadline: float | None = None

    def idle_for(self, workload: str) -> float:
        return self.idle if not self.idle_at or workload in self.idle_at else self.short_idle

    def limit(self, n: int) -> float:
        timeout = self.timeout + 0.2 * n
        return min(timeout, self.deadline) if self.deadline else timeout


class PastDeadline(Exception):
    """A figure's wait ran past --deadline: the figure is "> deadline"."""

    def __init__(self, figure: str, deadline: float) -> None:
        super().__init__(f"{figure} took more than {deadline:g} s (--deadline)")
        self.figure = figure
        self.deadline = deadline


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def listening_times(wl: workloads.Workload) -> dict[str, list[tuple[float, int]]]:
    """name -> [(time, pid)] of every "listening" the services recorded, in order."""
    out: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for e in read_records(wl.record):
        if e.get("event") == "listening":
            out[str(e["name"])].append((float(str(e["time"])), int(str(e["pid"]))))
    return out


def service_pids(wl: workloads.Workload, procs: Procs | None = None) -> list[int]:
    """Every service process started so far: from the records (stubs), or the run's
    socat processes (one scan of the process table)."""
    if wl.kind == "socat":
        assert procs is not None
        found = []
        for p in procs.marked():
            try:
                if p.name() == "socat":
                    found.append(p.pid)
            except psutil.Error:
                continue
        return found
    return [pid for entries in listening_times(wl).values() for _t, pid in entries]


def victim_pid(wl: workloads.Workload, victim: workloads.Service) -> int:
    if wl.kind == "socat":
        held = listener_on(victim.port)
        if held is None:
            raise RunnerError(f"no process holds {victim.name}'s port {victim.port}")
        return held.pid
    return listening_times(wl)[victim.name][-1][1]


def measure(runner: Runner, wl: workloads.Workload, opts: Options, got: dict[str, float], procs: Procs,
            warm: bool = True, past: Collection[str] = ()) -> None:
    """One runner, one workload, one run: every figure it supports, into ``got``
    as each is taken (what was measured before an error still counts). ``warm``: also
    start again with the supervisor still running, where the runner can. ``past``: figures
    that ran past the deadline in an earlier run, not waited for again (after a down past
    it, the run ends there and the bench's cleanup kills what is left)."""
    wl.record.unlink(missing_ok=True)
    runner.prepare(wl)
    timeout = opts.limit(len(wl.services))

    def clock(figure: str, predicate: object, what: str, interval: float = 0.005) -> None:
        """Wait for ``predicate``; past the deadline (if any) the figure is "> deadline"."""
        try:
            poll(predicate, timeout, what, interval=interval)  # type: ignore[arg-type]
        except BenchTimeout:
            if opts.deadline and timeout >= opts.deadline:
                raise PastDeadline(figure, timeout) from None
            raise

    t0 = time.perf_counter()
    runner.up()
    listening = all_listening(wl.ports)

    def up_done() -> bool:
        runner.check_up()
        return listening()

    try:
        clock("cold_up", up_done, f"{runner.name}: every port of {wl.key} to accept")
    except BenchTimeout as e:
        open_now = listening_sockets().keys()
        closed = [f"{s.name} ({s.port})" for s in wl.services if s.port not in open_now]
        raise RunnerError(f"{e}; still closed: {', '.join(closed[:10])}{' ...' if len(closed) > 10 else ''}; "
                          f"start command output:\n{tail(runner.dir / 'up.log')}") from None
    got["cold_up"] = time.perf_counter() - t0
    runner.finish_up(timeout)

    ready = runner.ready_times() if "lag" in wl.figures else None
    if ready is not None:
        # Each service notes "listening" right after its listen(), and the bare loop notes it
        # ready after its own connect: both may come a few milliseconds after the bench saw
        # the port. Wait for every note (bounded; a missing one is named below).
        names = {s.name for s in wl.services}
        with contextlib.suppress(BenchTimeout):
            poll(lambda: names <= (runner.ready_times() or {}).keys() and names <= listening_times(wl).keys(), 10,
                 f"{runner.name}: every service noted listening and ready")
        ready = runner.ready_times() or {}
        opened = listening_times(wl)
        lags = []
        for s in wl.services:
            if s.name not in ready or not opened.get(s.name):
                raise RunnerError(f"{runner.name} reports no ready time for {s.name}" if s.name not in ready
                                  else f"{s.name} noted no 'listening' record")
            before = [t for t, _pid in opened[s.name] if t <= ready[s.name] + 0.001]
            lags.append(ready[s.name] - (before[-1] if before else opened[s.name][0][0]))
        got["lag"] = statistics.median(lags)

    url = runner.metrics_url()
    if url and "metrics" in wl.figures:
        # scraped once, as Prometheus would have by now: the RSS below then includes what
        # serving /metrics loads, not the smaller daemon nobody has asked anything yet
        scrape(url)
    if "idle_cpu" in wl.figures:
        pids = runner.supervisor_pids()
        cpu0 = cpu_seconds(pids)
        time.sleep(opts.idle_for(wl.key))  # the measurement window itself, not a wait for something
        got["idle_cpu"] = cpu_seconds(pids) - cpu0
        got["rss"] = float(rss_bytes(pids))
    if "status" in wl.figures:
        try:
            got["status"] = timed(runner.status, 5)
        except NotImplementedError:
            pass
    if url and "metrics" in wl.figures:
        got["metrics"] = timed(lambda: scrape(url), opts.metrics_repeat)

    if "restart" in wl.figures and "restart" not in past:
        victim = wl.services[len(wl.services) // 2]
        pid = victim_pid(wl, victim)
        inodes = socket_inodes(victim.port)
        if not inodes:
            raise RunnerError(f"{victim.name} is not listening on {victim.port} before the kill")
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        clock("restart", lambda: (now := socket_inodes(victim.port)) and not (now & inodes),
              f"{runner.name}: {victim.name} to listen again after SIGKILL", interval=0.001)
        got["restart"] = time.perf_counter() - t0

    if "down" in past:
        return
    pids = service_pids(wl, procs)
    t0 = time.perf_counter()
    runner.down()
    clock("down", lambda: none_listening(wl.ports)() and all_gone(pids)(),
          f"{runner.name}: every port of {wl.key} closed and every process gone")
    got["down"] = time.perf_counter() - t0
    runner.finish_down(timeout)

    if warm and "warm_up" not in past and runner.warm_up_argv() is not None:  # the daemon stays after down: start again (the systemd case)
        t0 = time.perf_counter()
        runner.warm_up()
        clock("warm_up", all_listening(wl.ports), f"{runner.name}: every port of {wl.key} to accept again")
        got["warm_up"] = time.perf_counter() - t0
        runner.finish_up(timeout)
        runner.down()
        poll(lambda: none_listening(wl.ports)(), timeout, f"{runner.name}: every port of {wl.key} closed again")
        runner.finish_down(timeout)
    runner.shutdown()


#: The issue's targets: socat N = 10, 50, 200, 1000 and Python N = 200 with every peer (peers one run at
#: N = 1000), the fixed costs, 1000 socat services in tiers, medians of 3, 20 s idle with socat N = 200, 1000.
ISSUE_TARGETS = ["--n", "200", "--socat", "10,50,200,1000", "--runs", "3", "--chain", "0", "--no-demo",
                 "--metrics-n", "0", "--idle", "20", "--idle-at", "socat-200,socat-1000", "--peers-max-n", "1000",
                 "--peers-big-n", "1000", "--peers-big-runs", "1", "--deadline", "60", "--tiers", "1000",
                 "--tiers-kind", "socat", "--targets", "--notes", str(workloads.BENCH / "notes.md")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="10,50,200,1000", help="sizes of the tiny-services workload (default 10,50,200,1000)")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--only", default="", help=f"comma list of runners: {','.join(RUNNERS)} (default all)")
    p.add_argument("--out", type=Path, default=None, help="markdown output (default bench/results.md; "
                   "smoke: bench/.work/results-smoke.md)")
    p.add_argument("--idle", type=float, default=None, help="idle window in seconds (default 20; smoke 2)")
    p.add_argument("--chain", type=int, default=10, help="depth of the dependency chain (0: skip)")
    p.add_argument("--no-demo", action="store_true", help="skip the demo platform workload")
    p.add_argument("--metrics-n", type=int, default=None,
                   help="services in the metrics-scrape workload, ours only (default 500; smoke 0 = skip)")
    p.add_argument("--timeout", type=float, default=60.0, help="base timeout of each wait (+0.2 s per service)")
    p.add_argument("--socat", default="10,200,1000", help="sizes of the socat workload (default 10,200,1000; "
                   "empty: skip)")
    p.add_argument("--peers-max-n", type=int, default=200,
                   help="run supervisord, PM2 and circus only up to this N (default 200)")
    p.add_argument("--no-fixed", action="store_true", help="skip the CLI's fixed costs")
    p.add_argument("--idle-at", default="", help="comma list of the workloads (socat-200, tiny-200, ...) that get "
                   "the full --idle window; the others get --short-idle (default: all get --idle)")
    p.add_argument("--short-idle", type=float, default=2.0, help="the short idle window in seconds (default 2)")
    p.add_argument("--peers-big-n", type=int, default=0,
                   help="at N >= this, supervisord, PM2 and circus run only --peers-big-runs runs, and not the "
                   "warm up (default 0: off)")
    p.add_argument("--peers-big-runs", type=int, default=1, help="their runs at N >= --peers-big-n (default 1)")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after which a wait gives up and its figure reads '> SECONDS' (default: the "
                   "--timeout formula, and a timeout is an error)")
    p.add_argument("--tiers", type=int, default=0, help="also N services in 5 tiers vs N flat (bench/tiers.py; "
                   "0: skip)")
    p.add_argument("--tiers-kind", choices=("stub", "socat"), default="stub", help="their services (default stub)")
    p.add_argument("--targets", action="store_true", help="end with the issue's targets, computed from the run")
    p.add_argument("--before", type=Path, default=None,
                   help="the JSON of an earlier run (written next to its markdown): a 'before' column in the targets")
    p.add_argument("--notes", type=Path, default=None,
                   help="a hand-written markdown file (the profiles, what stands in the way) put before the targets")
    p.add_argument("--issue-targets", action="store_true",
                   help="exactly what the targets need: " + " ".join(ISSUE_TARGETS) + " (options given as well win)")
    p.add_argument("--smoke", "--quick", dest="smoke", action="store_true",
                   help="N=5 (stubs and socat), one run, 2 s idle, skip peers not installed")
    args = p.parse_args(argv)
    if args.issue_targets:  # the preset's options, then the command line's again over them
        args = p.parse_args(ISSUE_TARGETS + list(sys.argv[1:] if argv is None else argv))
    if args.smoke:
        args.n, args.runs, args.socat = "5", 1, "5"
        args.idle = 2.0 if args.idle is None else args.idle
        args.metrics_n = 0 if args.metrics_n is None else args.metrics_n
        args.out = args.out or workloads.BENCH / ".work" / "results-smoke.md"
    args.idle = 20.0 if args.idle is None else args.idle
    args.metrics_n = 500 if args.metrics_n is None else args.metrics_n
    args.out = args.out or workloads.BENCH / "results.md"
    try:
        # a size of 0 means no such workload (``--n 0`` skips the stubs, as ``--n ""`` does)
        args.sizes = [n for n in (int(x) for x in args.n.split(",") if x.strip()) if n > 0]
        args.socat_sizes = [n for n in (int(x) for x in args.socat.split(",") if x.strip()) if n > 0]
    except ValueError:
        p.error(f"--n wants numbers separated by commas, got {args.n!r}")
    args.idle_at = [k.strip() for k in args.idle_at.split(",") if k.strip()]
    args.keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(RUNNERS)
    unknown = [k for k in args.keys if k not in RUNNERS]
    if unknown:
        p.error(f"--only: unknown runner {', '.join(unknown)} (choose from {', '.join(RUNNERS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # compiled once up front, as pip does on install: no run pays for the compiler
    compileall.compile_dir(str(workloads.ROOT / "supervisord_lite"), quiet=1)
    run_id = uuid.uuid4().hex[:8]
    work = workloads.BENCH / ".work" / run_id
    work.mkdir(parents=True, exist_ok=True)
    # A machine-wide port registry of the run's own, as on a fresh developer machine: the
    # bench's throwaway platforms stay out of the user's registry, and the user's registry
    # (however large) does not weigh on the figures.
    os.environ.setdefault("SVC_REGISTRY", str(work / "registry.json"))
    procs = Procs(run_id)
    opts = Options(idle=args.idle, timeout=args.timeout, idle_at=frozenset(args.idle_at), short_idle=args.short_idle,
                   deadline=args.deadline)
    res = Results()
    started = time.monotonic()

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    runners: list[Runner] = []
    skipped: dict[str, str] = {}
    for key in args.keys:
        r = RUNNERS[key](procs, work)
        why = r.missing()
        if why:
            skipped[r.name] = why
            log(f"skipping {r.name}: {why}")
        else:
            runners.append(r)
    if "bare" not in [r.key for r in runners]:
        log("note: without the bare loop there are no ratios")

    interrupted = False
    ours = next((r for r in runners if r.key == "svc"), None)
    try:
        for run in range(args.runs):
            for make in workload_makers(args, work):
                wl = make()
                res.titles[wl.key] = wl.title
                order = runners[run % len(runners):] + runners[: run % len(runners)] if runners else []
                base: dict[str, float] = {}
                measured: dict[str, dict[str, float]] = {}
                res.idle[wl.key] = opts.idle_for(wl.key)
                for r in order:
                    if (wl.ordered and not r.ordered) or (wl.key.startswith("metrics") and r.key != "svc"):
                        continue
                    big = r.key not in ("bare", "svc") and args.peers_big_n and len(wl.services) >= args.peers_big_n
                    if r.key not in ("bare", "svc") and len(wl.services) > args.peers_max_n:
                        continue
                    if big and run >= args.peers_big_runs:
                        continue
                    past = res.censored[wl.key][r.key]
                    if "cold_up" in past:
                        continue  # it came up past the deadline in an earlier run: it would again
                    log(f"run {run + 1}/{args.runs} · {wl.key} · {r.label}")
                    measured[r.key] = {}
                    try:
                        measure(r, wl, opts, measured[r.key], procs, warm=not big, past=past)
                    except PastDeadline as e:
                        log(f"  {e}: not waited for again on {wl.key}")
                        res.censored[wl.key][r.key][e.figure] = e.deadline
                        res.values[wl.key][r.key]  # noqa: B018 (make the column appear)
                    except (RunnerError, BenchTimeout, OSError) as e:
                        res.errors.append(f"run {run + 1}, {wl.key}, {r.label}: {e}")
                        log(f"  error: {e}")
                        res.values[wl.key][r.key]  # noqa: B018 (make the column appear)
                        res.failed.add((wl.key, r.key))
                    finally:
                        procs.cleanup()
                    if r.key == "bare" and r.key in measured:
                        base = measured[r.key]
                for key, got in measured.items():
                    for fig, value in got.items():
                        res.values[wl.key][key][fig].append(value)
                        # a warm start is compared with the bare loop's only start: the physical limit
                        reference = base.get("cold_up") if fig == "warm_up" else base.get(fig)
                        if reference:
                            res.ratios[wl.key][key][fig].append(value / reference)
                            res.diffs[wl.key][key][fig].append(value - reference)
            if ours is not None and not args.no_fixed and workloads.SOCAT:
                log(f"run {run + 1}/{args.runs} · fixed costs of the CLI")
                got: dict[str, float] = {}
                try:
                    measure_fixed(ours, procs, workloads.socat(10, work), got)
                except (RunnerError, BenchTimeout, OSError) as e:
                    res.errors.append(f"run {run + 1}, fixed costs: {e}")
                finally:
                    procs.cleanup()
                for key, value in got.items():
                    res.fixed[key].append(value)
                    if "python" in got:
                        res.fixed_diffs[key].append(value - got["python"])
        if args.tiers and ours is not None and not interrupted:
            log(f"tiers: {args.tiers} {args.tiers_kind} services, flat vs 5 tiers, {args.runs} run(s)")
            try:
                layouts = ("flat", "tiers") if args.issue_targets else tiers.LAYOUTS  # the target needs these two
                res.tiers = tiers.measure(args.tiers, args.runs, args.tiers_kind, env=procs.env(), log=log,
                                          layouts=layouts)
            except (tiers.TiersError, subprocess.TimeoutExpired, OSError) as e:
                res.errors.append(f"tiers: {e}")
            finally:
                procs.cleanup()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    except Exception:  # noqa: BLE001 (report, clean up, still write what we have)
        res.errors.append("bench crashed:\n```\n" + traceback.format_exc() + "```")
        log(traceback.format_exc())
    finally:
        left = procs.cleanup()
        if left:
            log(f"cleanup: killed {left} leftover process(es)")

    text = render(res, runners, skipped, args, time.monotonic() - started)
    if interrupted:
        text += "\n(interrupted: partial results)\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    targets.save(res.figures(runners), args.out.with_suffix(".json"))
    print(text)
    log(f"written to {args.out}")
    return 130 if interrupted else (1 if res.errors else 0)


def workload_makers(args: argparse.Namespace, work: Path) -> list:
    """Fresh workloads (fresh free ports) for each run."""
    makers = [lambda n=n: workloads.tiny(n, work) for n in args.sizes]
    if workloads.SOCAT:
        makers += [lambda n=n: workloads.socat(n, work) for n in args.socat_sizes]
    if args.chain:
        makers.append(lambda: workloads.chain(args.chain, work))
    if not args.no_demo:
        makers.append(lambda: workloads.demo(work))
    if args.metrics_n:
        makers.append(lambda: workloads.metrics(args.metrics_n, work))
    return makers


if __name__ == "__main__":
    sys.exit(main())
