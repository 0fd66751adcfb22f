"""Listen on 127.0.0.1:PORT (argv[1] or $PORT), print 'listening PORT UNIXTIME', accept forever."""

import os
import socket
import sys
import time

port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["PORT"])
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
if delay:
    time.sleep(delay)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(64)
print(f"listening {port} {time.time():.6f}", flush=True)
while True:
    conn, _ = sock.accept()
    conn.close()
