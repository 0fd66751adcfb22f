"""Daemonize a grandchild the classic way (fork, setsid, fork, close stdio); it writes its
pid to argv[1] and sleeps. The original process prints 'daemonized PID' and then sleeps,
or exits 0 with --exit."""

import os
import signal
import sys
import time

pid_file = sys.argv[1]
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(read_end)
        tmp = pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, pid_file)
        os.write(write_end, f"{os.getpid()}\n".encode())
        os.close(write_end)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn daemon: only SIGKILL ends it
        while True:
            time.sleep(3600)
    os._exit(0)
os.close(write_end)
grandchild = b""
while not grandchild.endswith(b"\n"):
    chunk = os.read(read_end, 64)
    if not chunk:
        break
    grandchild += chunk
os.wait()
print(f"daemonized {grandchild.decode().strip()}", flush=True)
if "--exit" in sys.argv:
    sys.exit(0)
while True:
    signal.pause()
