"""A local test API for examples/http_push.py: POST /rows stores a row, like a real API would, with its limits.

It allows ``--limit`` requests in any sliding second and answers 429 with ``Retry-After: 1`` beyond
that, and fails ``--fail-rate`` of the calls with a 500 (seeded, so two runs fail alike).
GET /stats returns what it saw: rows stored, 429s and 500s. Standard library only.

Run it with:  python examples/local_api.py --port 8765
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RowStore:
    """What the API keeps: the rows it stored, its counters and its sliding window of requests."""

    def __init__(self, *, limit_per_s: int, fail_rate: float, seed: int = 0) -> None:
        self.limit_per_s = limit_per_s
        self.fail_rate = fail_rate
        self.random = random.Random(seed)
        self.rows: dict[int, Any] = {}
        self.counts = collections.Counter[str]()
        self.window: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def post(self, row: dict[str, Any]) -> tuple[int, dict[str, str]]:
        """Store ``row``; return the HTTP status and headers to answer with."""
        with self.lock:
            now = time.monotonic()
            while self.window and self.window[0] <= now - 1.0:
                self.window.popleft()
            if len(self.window) >= self.limit_per_s:
                self.counts["429"] += 1
                return 429, {"Retry-After": "1"}
            self.window.append(now)
            if self.random.random() < self.fail_rate:
                self.counts["500"] += 1
                return 500, {}
            self.counts["duplicates" if row["id"] in self.rows else "stored"] += 1
            self.rows[row["id"]] = row
            return 201, {}

    def stats(self) -> dict[str, int]:
        """The counters: rows stored, duplicates, 429s and 500s."""
        with self.lock:
            return {"rows": len(self.rows), **self.counts}


def serve(store: RowStore, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``store`` on 127.0.0.1 (port 0: any free port); call ``serve_forever`` on it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers = store.post(json.loads(body))
            self._answer(status, headers, b"")

        def do_GET(self) -> None:
            self._answer(200, {"Content-Type": "application/json"}, json.dumps(store.stats()).encode())

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per request would drown the job's own output."""

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--limit", type=int, default=100, help="requests allowed in any sliding second")
    parser.add_argument("--fail-rate", type=float, default=0.02, help="share of calls that fail with a 500")
    args = parser.parse_args()
    server = serve(RowStore(limit_per_s=args.limit, fail_rate=args.fail_rate), args.port)
    print(f"Listening on http://127.0.0.1:{server.server_address[1]} (GET /stats for its counters)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
