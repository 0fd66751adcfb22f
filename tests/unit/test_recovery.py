"""The state file: what a daemon writes is what its successor reads back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import MappingProxyType

import psutil

from supervisord_lite.core.model import Manifest, ServiceSpec, Status, SupervisorSpec, Tier
from supervisord_lite.host.recovery import DaemonState, RecordedProcess, read_state, record_process, write_state
from tests.conftest import wait_until

STATE = DaemonState(
    daemon_pid=4242,
    manifest="/srv/svc.toml",
    wanted=("db", "api"),
    processes={
        "db": RecordedProcess(pid=100, pgid=100, create_time=1700000000.25, instance_id="svc-abc-0123", sid=100, uid=0),
        "api": RecordedProcess(pid=200, pgid=200, create_time=1700000001.5, instance_id="svc-abc-4567", sid=200, uid=1000),
    },
    restarts={"api": 2},
)


def _manifest(statuses: dict[str, Status]) -> Manifest:
    return Manifest(
        path=Path("/srv/svc.toml"),
        supervisor=SupervisorSpec(),
        tiers=MappingProxyType({"app": Tier("app", 0)}),
        services=MappingProxyType(
            {
                name: ServiceSpec(
                    name=name,
                    tier="app",
                    command=("true",),
                    status=status,
                    replaced_by="api" if status is Status.DEPRECATED else None,
                )
                for name, status in statuses.items()
            }
        ),
    )


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, STATE)
    assert read_state(path) == STATE
    assert not (tmp_path / "state.tmp").exists()  # replaced atomically, nothing left behind


def test_the_file_format(tmp_path: Path) -> None:
    """A successor may be an older or newer daemon: the format is the contract."""
    path = tmp_path / "state.json"
    write_state(path, STATE)
    assert json.loads(path.read_text()) == {
        "daemon_pid": 4242,
        "manifest": "/srv/svc.toml",
        "wanted": ["db", "api"],
        "processes": {
            "db": {"pid": 100, "pgid": 100, "sid": 100, "uid": 0, "create_time": 1700000000.25, "instance_id": "svc-abc-0123"},
            "api": {"pid": 200, "pgid": 200, "sid": 200, "uid": 1000, "create_time": 1700000001.5, "instance_id": "svc-abc-4567"},
        },
        "restarts": {"api": 2},
    }


def test_a_file_without_restart_counts_still_loads_and_bad_counts_are_dropped(tmp_path: Path) -> None:
    """Files older daemons wrote have no "restarts"; a count that is not a positive whole number is ignored."""
    path = tmp_path / "state.json"
    old = {k: v for k, v in STATE.to_dict().items() if k != "restarts"}
    path.write_text(json.dumps(old))
    assert read_state(path) == DaemonState(STATE.daemon_pid, STATE.manifest, STATE.wanted, STATE.processes)
    assert read_state(path).restarts == {}
    path.write_text(json.dumps({**old, "restarts": {"api": 4, "db": "3", "web": -1, "x": True, "y": 1.5}}))
    assert read_state(path).restarts == {"api": 4}
    path.write_text(json.dumps({**old, "restarts": [1, 2]}))
    assert read_state(path).restarts == {} and read_state(path).wanted == ("db", "api")


def test_a_missing_or_broken_file_reads_as_nothing_to_recover(tmp_path: Path) -> None:
    assert read_state(tmp_path / "absent.json") == DaemonState()
    broken = tmp_path / "state.json"
    for text in ("{not json", "[1, 2]", '"text"', ""):
        broken.write_text(text)
        assert read_state(broken) == DaemonState()


def test_wrong_types_are_dropped_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {
                "daemon_pid": "4242",
                "manifest": 7,
                "wanted": ["db", 3, None, "api"],
                "processes": {
                    "db": {"pid": True, "pgid": "100", "sid": 1.5, "uid": "root", "create_time": "soon", "instance_id": 5},
                    "api": {"pid": 200, "create_time": 1700000001},
                    "web": "not a record",
                },
            }
        )
    )
    state = read_state(path)
    assert state == DaemonState(
        daemon_pid=None,
        manifest="",
        wanted=("db", "api"),
        processes={
            "db": RecordedProcess(pid=None, pgid=None, create_time=None, instance_id=""),
            "api": RecordedProcess(pid=200, pgid=None, create_time=1700000001.0, instance_id=""),
        },
    )
    path.write_text(json.dumps({"wanted": "db", "processes": ["db"]}))
    assert read_state(path) == DaemonState()


def test_the_wanted_set_keeps_only_what_the_manifest_still_runs() -> None:
    manifest = _manifest({"db": Status.ACTIVE, "api": Status.ACTIVE, "old": Status.DEPRECATED, "off": Status.DISABLED})
    state = DaemonState(wanted=("api", "gone", "old", "off", "db"))
    assert state.wanted_services(manifest) == ["api", "db"]





def test_a_process_record_names_the_real_uid_psutil_reports() -> None:
    """The record's uid comes from /proc/PID/status: the same real uid psutil reads,
    also for a process of another user (as root); a process gone has none."""
    setpriv = shutil.which("setpriv")
    as_nobody = os.geteuid() == 0 and setpriv is not None
    argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"] if as_nobody else ["sleep", "30"]
    proc = subprocess.Popen(argv)
    try:
        ps = psutil.Process(proc.pid)
        wait_until(lambda: ps.name() == "sleep", timeout=30, what="setpriv to exec sleep")
        record = record_process(proc.pid, os.getpgid(proc.pid), ps.create_time(), "test:1")
        assert record.uid == ps.uids().real
        assert record.sid == os.getsid(proc.pid)
        if as_nobody:
            assert record.uid == 65534
    finally:
        proc.kill()
        proc.wait()
    gone = record_process(proc.pid, 0, 1.0, "test:2")
    assert gone.uid is None and gone.sid is None
