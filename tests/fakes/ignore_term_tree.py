"""Ignore SIGTERM and start a grandchild that ignores it too; print 'pids PARENT CHILD'.

With --grandchild: only ignore SIGTERM and sleep (the grandchild role)."""

import os
import signal
import subprocess
import sys

signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--grandchild" in sys.argv:
    print(f"grandchild {os.getpid()}", flush=True)
    while True:
        signal.pause()
child = subprocess.Popen([sys.executable, __file__, "--grandchild"])
print(f"pids {os.getpid()} {child.pid}", flush=True)
while True:
    signal.pause()
