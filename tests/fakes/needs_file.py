"""A service that fails (exit 1) unless FILE exists, else listens on PORT: an external cause.

usage: needs_file.py FILE PORT
"""

import os
import socket
import sys
import time

path, port = sys.argv[1], int(sys.argv[2])
if not os.path.exists(path):
    print(f"cannot start: {path} is missing", flush=True)
    sys.exit(1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    conn.close()
    time.sleep(0)
