"""A service whose main process and one child (same process group) append every SIGUSR1
and SIGHUP they receive to FILE as ``ROLE PID SIGNAME`` lines, then keep running.

usage: record_signals.py FILE
Prints "recording" once both handlers are installed (use it as the ready log line).
"""

import os
import signal
import sys
import time

path = sys.argv[1]


def record(role: str) -> None:
    def handler(signum: int, frame: object) -> None:
        with open(path, "a") as f:
            f.write(f"{role} {os.getpid()} {signal.Signals(signum).name}\n")

    signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGHUP, handler)


read_end, write_end = os.pipe()
parent = os.getpid()
child = os.fork()
if child == 0:
    os.close(read_end)
    record("child")
    os.write(write_end, b"x")
    os.close(write_end)
    while os.getppid() == parent:  # ends with its parent
        time.sleep(0.2)
    os._exit(0)
os.close(write_end)
os.read(read_end, 1)  # the child's handler is in place
record("main")
print("recording", flush=True)
while True:
    time.sleep(1)
