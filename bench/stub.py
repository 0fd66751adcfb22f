"""The benchmark's tiny service: bind 127.0.0.1:PORT, note when, accept forever.

    python -S stub.py PORT NAME RECORD [DELAY]

Lighter than supervisord_lite.demo on purpose (no http.server, no json, run with -S),
so start-up cost is mostly the interpreter and the ratios show the supervisor's own
overhead. The "listening" line it appends to RECORD is the same JSON shape the demo
writes (supervisord_lite.demo.read_records reads both), stamped with time.time()
right after listen(), so readiness lag is measured from the service's own clock.
SIGTERM and SIGINT (PM2's stop signal) end it at once.
"""

import os
import signal
import socket
import sys
import time

signal.signal(signal.SIGINT, signal.SIG_DFL)
port, name, record = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if len(sys.argv) > 4 and float(sys.argv[4]) > 0:
    time.sleep(float(sys.argv[4]))
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(128)
line = '{"event": "listening", "name": "%s", "pid": %d, "port": %d, "time": %r}\n' % (name, os.getpid(), port, time.time())
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line.encode())
os.close(fd)
while True:
    conn, _ = sock.accept()
    conn.close()
