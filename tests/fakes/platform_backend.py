"""A small HTTP backend that really uses PostgreSQL and Redis (standard library only).

Redis is spoken to in RESP over a raw socket; PostgreSQL through the `psql` client
(it ships with the server), so the tests need no driver packages. Configuration comes
from the environment: PORT, REDIS_PORT, PG_PORT (PostgreSQL on 127.0.0.1, user
postgres, trust authentication).

At start it creates a table and writes a row, and sets a key. Routes:
  /health  200 {"postgres": rows, "redis": "PONG"} when both answer (it writes the
           key `backend:health` on every call), 503 naming what failed otherwise
  /visit   inserts a row and increments `backend:visits`; 200 with both counts
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import time

PORT = int(os.environ["PORT"])
REDIS_PORT = int(os.environ["REDIS_PORT"])
PG_PORT = int(os.environ["PG_PORT"])


def redis(*args: str) -> object:
    """One Redis command; returns the decoded reply, raises on an error reply."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=2) as s:
        s.sendall(request.encode())
        reader = s.makefile("rb")
        line = reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:].decode()
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else reader.read(n + 2)[:-2].decode()
        raise RuntimeError(f"redis said {line!r}")


def sql(statement: str) -> str:
    done = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres",
         "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", statement],
        capture_output=True, text=True, timeout=5,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"psql exited {done.returncode}")
    return done.stdout.strip()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body: dict[str, object] = {}
            failed = []
            try:
                body["postgres"] = int(sql("SELECT count(*) FROM visits"))
            except Exception as exc:
                failed.append(f"postgres: {exc}")
            try:
                body["redis"] = redis("PING")
                redis("SET", "backend:health", str(time.time()))
            except Exception as exc:
                failed.append(f"redis: {exc}")
            self.reply(503 if failed else 200, {**body, "failed": failed})
        elif self.path == "/visit":
            try:
                rows = int(sql("INSERT INTO visits (at) VALUES (now()); SELECT count(*) FROM visits"))
                visits = redis("INCR", "backend:visits")
                self.reply(200, {"rows": rows, "visits": visits})
            except Exception as exc:
                self.reply(503, {"failed": [str(exc)]})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print(f"GET {self.path} {status}", flush=True)

    def log_message(self, format: str, *args: object) -> None:
        pass


sql("CREATE TABLE IF NOT EXISTS visits (id serial PRIMARY KEY, at timestamptz NOT NULL)")
sql("INSERT INTO visits (at) VALUES (now())")
redis("SET", "backend:started", str(os.getpid()))
server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print(f"backend listening on {PORT}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
