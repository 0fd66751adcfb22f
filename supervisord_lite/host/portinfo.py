"""Facts about TCP listeners on this machine: who holds a port.

``listening_ports()`` is one look at the kernel's listening sockets (a sock_diag dump,
else /proc/net/tcp and tcp6), cheap enough to call for every waiting service at once.
``listener_on()`` names the process behind a port through psutil; it sees every process only with
enough privilege (root, or the same user), and says so when it cannot.
"""

from __future__ import annotations

import os
import pwd
import socket
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from supervisord_lite.core.model import Manifest, Status
from supervisord_lite.core.problems import Problem
from supervisord_lite.core.wording import one_line
from supervisord_lite.host import sockdiag

_TCP_LISTEN = "0A"
_PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True, slots=True)
class Listener:
    port: int
    pid: int | None  # None when the kernel would not tell us (another user's socket)
    user: str
    cmdline: str
    address: str = ""
    owner: str = ""  # "service NAME of project (manifest)" when the registry says whose it is
    started: float | None = None  # the process's start, seconds since the epoch
    socket_uid: int | None = None  # the socket's owner, from the kernel's table (known even when pid is not)

    def describe(self) -> str:
        if self.pid is None:
            held = f"a process we cannot see on {self.address or 'port'} {self.port} ({self.hidden_why()})"
        else:
            held = f"pid {self.pid} ({self.user}): {self.cmdline}"
        return f"{self.owner}, {held}" if self.owner else held

    def hidden_why(self) -> str:
        """Why the kernel did not name the process (only meaningful when ``pid`` is None)."""
        return hidden_reason(self.socket_uid, os.geteuid(), can_trace_others())


def user_name(uid: int | None) -> str:
    """The login name of ``uid`` ("uid N" when it has none, "?" when unknown)."""
    if uid is None:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


_CAP_SYS_PTRACE = 19


def can_trace_others(status: str = "/proc/self/status") -> bool:
    """Whether this process may read other users' open files (CAP_SYS_PTRACE): root in a
    default container lacks it and sees only its own user's sockets' processes."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def hidden_reason(socket_uid: int | None, euid: int, privileged: bool = True) -> str:
    """Why no process could be named for a listening socket, told truthfully: another
    user's socket is hidden from a non-root user (and from a root without CAP_SYS_PTRACE);
    otherwise no process of this PID namespace holds it."""
    foreign = socket_uid is not None and socket_uid != euid
    if foreign and euid != 0:
        return (f"the socket belongs to user {user_name(socket_uid)}, and only root may see "
                "another user's processes: run svc who as root to name it")
    if foreign and not privileged:
        return (f"the socket belongs to user {user_name(socket_uid)}, and this root lacks CAP_SYS_PTRACE "
                "(as in a default container), which it needs to see another user's processes")
    return ("no process visible from here holds the socket: it belongs to a process outside this "
            "PID namespace (the host of this container, or another container sharing its network)")


def registered_owner(port: int, pid: int | None) -> str:
    """Whose the listener is by the registry: the service (or daemon) of another project whose
    running daemon declares ``port`` and is ``pid``'s ancestor; "" when none is known."""
    from supervisord_lite.core.machine import owners_of_port
    from supervisord_lite.host import registry

    try:
        claims = registry.claims(report=lambda _message: None)
    except Exception:  # the registry is advice: never let it break a conflict report
        return ""
    for claim, service in owners_of_port(port, claims):
        daemon = registry.running_daemon(claim)
        if daemon is None or pid is None or not belongs_to(pid, daemon):
            continue
        if service == "(metrics)":
            return f"the svc daemon of project {claim.label} (its metrics endpoint)"
        return f"service {service} of project {claim.label}"
    return ""


def _parse_table(text: str, out: list[sockdiag.ListeningSocket]) -> None:
    """The listening sockets of one of /proc/net/tcp{,6}: addresses there are 32-bit words
    in hexadecimal, each in the machine's byte order."""
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != _TCP_LISTEN:
            continue
        address, _, port = parts[1].rpartition(":")
        raw = bytes.fromhex(address)
        if sys.byteorder == "little":
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
        out.append(sockdiag.ListeningSocket(int(port, 16), int(parts[9]), int(parts[7]), socket.inet_ntop(family, raw)))


def _listening() -> list[sockdiag.ListeningSocket]:
    """Every listening TCP socket: a sock_diag dump, else /proc/net/tcp{,6} (netlink
    refused by a seccomp filter, or a kernel without sock_diag); IPv4 ones first."""
    if sockdiag.available():
        try:
            return sockdiag.sockets()
        except OSError:
            pass
    found: list[sockdiag.ListeningSocket] = []
    for table in _PROC_TABLES:
        try:
            _parse_table(table.read_text(), found)
        except OSError:
            continue
    return found


def listening_sockets(uids: dict[int, int] | None = None) -> dict[int, set[int]]:
    """Map of listening TCP port -> socket inodes, from the kernel (``_listening``); fills
    ``uids`` (when given) with each port's socket owner."""
    found: dict[int, set[int]] = {}
    for listener in _listening():
        found.setdefault(listener.port, set()).add(listener.inode)
        if uids is not None:
            uids.setdefault(listener.port, listener.uid)
    return found


def listening_ports() -> set[int]:
    """Every TCP port something listens on (any address), in one read."""
    if not any(t.exists() for t in _PROC_TABLES):  # not Linux: ask psutil
        return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    return set(listening_sockets())


def _user_of(proc: psutil.Process) -> str:
    try:
        return proc.username()
    except (psutil.Error, KeyError):
        try:
            return pwd.getpwuid(proc.uids().real).pw_name
        except (psutil.Error, KeyError):
            return "?"


def _cmdline_of(proc: psutil.Process) -> str:
    """The command line as people read it; a program that rewrote its title (redis-server
    pads it with spaces) without that padding, a kernel thread as ``[name]``."""
    try:
        line = " ".join(proc.cmdline()).rstrip()
        return line or f"[{proc.name()}]"
    except psutil.Error:
        return "?"


def _started_of(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:
        return None


def _descriptor_targets(pid: int) -> Iterator[str]:
    """What each open descriptor of ``pid`` is (``socket:[INODE]`` for a socket), via
    /proc/PID/fd; nothing for a process gone or not ours to read."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return
    for fd in names:
        try:
            yield os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue


def _pid_holding_inodes(inodes: set[int]) -> int | None:
    """Find the process with one of these socket inodes open."""
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in psutil.pids():
        if any(target in wanted for target in _descriptor_targets(pid)):
            return pid
    return None


def listener_on(port: int) -> Listener | None:
    """Who listens on TCP ``port`` (any address), or None when nobody does."""
    here = [listener for listener in _listening() if listener.port == port]
    if not here and Path("/proc/net/tcp").exists():
        return None
    inodes = {listener.inode for listener in here}
    uid = here[0].uid if here else None
    pid: int | None = None
    address = ""
    if here:
        pid = _pid_holding_inodes(inodes)
        address = here[0].address
    else:  # no kernel table to read (not Linux): psutil finds it its own way
        try:
            for conn in psutil.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    address = conn.laddr.ip
                    if conn.pid:
                        pid = conn.pid
                        break
        except psutil.AccessDenied:
            pass
    if pid is None:
        if not here and not address:
            return None
        return Listener(port=port, pid=None, user=user_name(uid), cmdline="?", address=address, socket_uid=uid)
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return Listener(port=port, pid=pid, user="?", cmdline="?", address=address, socket_uid=uid)
    return Listener(port=port, pid=pid, user=_user_of(proc), cmdline=_cmdline_of(proc), address=address,
                    owner=registered_owner(port, pid), started=_started_of(proc), socket_uid=uid)


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that are still alive."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def belongs_to(listener_pid: int, root_pid: int, pgid: int | None = None) -> bool:
    """True when ``listener_pid`` is ``root_pid``, one of its descendants, or in its group."""
    if listener_pid == root_pid:
        return True
    if pgid is not None:
        try:
            if os.getpgid(listener_pid) == pgid:
                return True
        except OSError:
            pass
    return any(p.pid == listener_pid for p in process_tree(root_pid))


def port_warnings(m: Manifest, own_pids: Collection[int] = frozenset()) -> list[Problem]:
    """Ports of the manifest that a process outside it already listens on.

    ``own_pids``: processes of ours (the daemon's children); a listener that is one
    of them or descends from one is not reported.
    """
    busy = listening_ports()
    found = []
    for spec in m.services.values():
        if spec.port is None or spec.port not in busy:
            continue
        listener = listener_on(spec.port)
        if listener is None or (
            listener.pid is not None and any(belongs_to(listener.pid, own) for own in own_pids)
        ):
            continue
        if spec.status is Status.DEPRECATED:
            effect = "the deprecated service may still be running by hand"
        else:
            effect = f"{spec.name} will not start while it is there"
        found.append(
            Problem(
                "warning",
                str(m.path),
                spec.name,
                "port",
                f"port {spec.port} is already in use by {one_line(listener.describe())}; {effect}",
            )
        )
    return found


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_range(path: str = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """The ports Linux hands to outgoing connections (``net.ipv4.ip_local_port_range``),
    or None where it cannot be read."""
    try:
        with open(path) as f:
            low, high = (int(part) for part in f.read().split()[:2])
    except (OSError, ValueError):
        return None
    return (low, high) if 0 < low <= high else None


def ephemeral_warnings(m: Manifest, ports: tuple[int, int] | None = None) -> list[Problem]:
    """Declared ports and tier ranges inside the machine's ephemeral range: any outgoing
    connection may take such a port for a while, and the service then fails with
    "Address already in use" at random (what a port guide exists to prevent)."""
    ports = ephemeral_range() if ports is None else ports
    if ports is None:
        return []
    low, high = ports
    found = []
    for tier in m.tiers.values():
        inside = [str(r) for r in tier.ports if r.start <= high and r.end >= low]
        if inside:
            found.append(Problem(
                "warning", str(m.path), None, f"tiers.{tier.name}.ports",
                f"{', '.join(inside)} overlaps this machine's ephemeral port range {low}-{high} "
                f"(net.ipv4.ip_local_port_range): outgoing connections may take its ports; move it below {low}",
            ))
    for spec in m.services.values():
        if spec.port is not None and low <= spec.port <= high:
            found.append(Problem(
                "warning", str(m.path), spec.name, "port",
                f"port {spec.port} is in this machine's ephemeral port range {low}-{high} "
                f"(net.ipv4.ip_local_port_range): an outgoing connection may hold it when {spec.name} starts",
            ))
    return found


def ports_listened_by(pid: int) -> set[int]:
    """The TCP ports ``pid`` and its descendants listen on (empty when it is gone or
    cannot be read): what a service that never opened its declared port opened instead.
    The sockets each process holds (/proc/PID/fd), matched against one sock_diag dump:
    psutil's per-process answer reads all of /proc/net/tcp{,6} for every process."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    if not os.path.isdir("/proc/self/fd"):  # not Linux: psutil reads each process's own way
        return {conn.laddr.port for proc in procs for conn in _tcp_connections(proc)
                if conn.status == psutil.CONN_LISTEN and conn.laddr}
    held = {target for proc in procs for target in _descriptor_targets(proc.pid)}  # "socket:[INODE]", ...
    return {listener.port for listener in _listening() if f"socket:[{listener.inode}]" in held}


def _tcp_connections(proc: psutil.Process) -> list:
    try:
        return proc.net_connections(kind="tcp")
    except psutil.Error:
        return []
