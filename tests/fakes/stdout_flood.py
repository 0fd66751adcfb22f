"""Flood stdout: wait until the file argv[1] exists, then write argv[2] bytes of lines of
95 bytes as fast as the pipe takes them, print 'flood done N', and sleep.

usage: stdout_flood.py TRIGGER_FILE BYTES
"""

import os
import sys
import time

trigger, total = sys.argv[1], int(sys.argv[2])
print("waiting for the trigger", flush=True)
while not os.path.exists(trigger):
    time.sleep(0.01)
block = b"".join(b"flood line %010d " % i + b"x" * 72 + b"\n" for i in range(1000))  # 95 bytes a line
written = 0
while written < total:
    chunk = block[: total - written]
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view):]
    written += len(chunk)
print(f"flood done {written}", flush=True)
while True:
    time.sleep(3600)
