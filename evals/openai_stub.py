"""A stand-in OpenAI-compatible completions server over real HTTP on a loopback port, for the
``openai:`` backend's tests (tests/test_generate_concurrency.py) and benchmark
(bench/generate_concurrency.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StubCompletionsServer:
    """``GET /v1/models`` lists one model (``model``); ``POST /v1/completions`` is answered by
    :meth:`complete`; anything else is a 404. Every request's method and path is recorded in
    ``paths``. Serves from construction until :meth:`stop`, so a subclass sets its own
    attributes before calling ``super().__init__``."""

    def __init__(self, model: str = "stub") -> None:
        self.model = model
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(status, JSON payload) for one ``/v1/completions`` request body."""
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with server.lock:
                    server.paths.append("GET " + self.path)
                if self.path == "/v1/models":
                    self.answer(200, {"object": "list", "data": [{"id": server.model}]})
                else:
                    self.answer(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.paths.append("POST " + self.path)
                if self.path == "/v1/completions":
                    self.answer(*server.complete(body))
                else:
                    self.answer(404, {"error": {"message": "no such route"}})

        return Handler

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
