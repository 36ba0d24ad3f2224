"""Fixtures for the server tests: real servers on 127.0.0.1 (ephemeral ports), real tiny models.

- ``lively_lm_dir`` (tests/conftest.py): the tiny LM with large random weights, so that its greedy answers are
  non-empty and differ between prompts.
- ``lively_backend``: a ``LocalBackend`` on it (fp32), shared by the module's servers.
- ``start``: ``start(app)`` serves a FastAPI app from a thread and returns its base URL (stopped after the test).
- ``fixed_server``: a small real OpenAI-compatible server (``http.server``) that answers with fixed texts, chosen
  by the user's last message; it records the requests it got. It stands in for vLLM in the upstream tests.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from http_helpers import send_json  # tests/http_helpers.py

DEFAULT_ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def lively_backend(lively_lm_dir):
    from safealign.generate import HFEngine
    from safealign.serve.local import LocalBackend

    return LocalBackend(HFEngine(str(lively_lm_dir), show_progress=False), precision="fp32")


@pytest.fixture()
def start():
    from safealign.serve.app import ServerThread

    running = []

    def run(app) -> str:
        server = ServerThread(app).__enter__()
        running.append(server)
        return server.url

    yield run
    for server in running:
        server.__exit__(None, None, None)


class FixedChat(BaseHTTPRequestHandler):
    answers: dict[str, str] = {}
    key: str | None = None
    seen: list[dict] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        send_json(self, body, status)

    def _authorized(self) -> bool:
        if self.key is None or self.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error", "param": None,
                                   "code": "invalid_api_key"}})
        return False

    def do_GET(self):
        if self._authorized():
            self._send(200, {"object": "list", "data": [{"id": "fixed-1", "object": "model", "owned_by": "test"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"body": body, "authorization": self.headers.get("Authorization")})
        if not self._authorized():
            return
        asked = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        text = self.answers.get(asked, DEFAULT_ANSWER)
        n = body.get("n") or 1
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"} for i in range(n)],
                         "usage": {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}})


@pytest.fixture()
def fixed_server():
    """``fixed_server(answers={user message: answer}, key=None)`` → (its base URL, ending in /v1; the list of the
    requests it received). A message not in ``answers`` gets "The capital of France is Paris."."""
    servers = []

    def run(answers: dict[str, str] | None = None, key: str | None = None):
        handler = type("Handler", (FixedChat,), {"answers": dict(answers or {}), "key": key, "seen": []})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler.seen

    yield run
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
