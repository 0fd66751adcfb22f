"""Listen on 127.0.0.1:PORT (argv[1]); on SIGUSR1 close the listening socket and keep
running: a process that is alive but no longer serves (a wedged server)."""

import signal
import socket
import sys
import threading

port = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(64)
print(f"listening {port}", flush=True)
dropped = threading.Event()


def drop(_signum: int, _frame: object) -> None:
    sock.close()
    print(f"stopped listening on {port}", flush=True)
    dropped.set()


signal.signal(signal.SIGUSR1, drop)
while True:
    signal.pause()
