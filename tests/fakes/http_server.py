"""A tiny HTTP server on 127.0.0.1:$PORT (or argv[1]): /ok 200, /fail 500, /redirect 302,
/slow sleeps 10 s; anything else 404. Prints 'listening PORT' once it accepts."""

import http.server
import os
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(10)
        status = {"/ok": 200, "/fail": 500, "/redirect": 302, "/slow": 200}.get(self.path, 404)
        body = f"status {status}\n".encode()
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["PORT"])
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print(f"listening {port}", flush=True)
server.serve_forever()
