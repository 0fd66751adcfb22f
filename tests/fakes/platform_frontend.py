"""A small HTTP frontend in front of the backend at BACKEND_URL (standard library only).

/health answers with the backend's /health status and body (so the frontend is
healthy only while the backend is); / renders one line from the backend's /visit.
"""

from __future__ import annotations

import http.server
import os
import urllib.error
import urllib.request

PORT = int(os.environ["PORT"])
BACKEND = os.environ["BACKEND_URL"].rstrip("/")


def fetch(path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(BACKEND + path, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 502, f"backend unreachable: {exc}".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = fetch("/health" if self.path == "/health" else "/visit")
        if self.path not in ("/", "/health"):
            status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print(f"frontend listening on {PORT}, backend {BACKEND}", flush=True)
server.serve_forever()
