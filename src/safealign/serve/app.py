"""The HTTP side: ``create_app(backend, served_id=..., guard=...)`` → a FastAPI app; ``serve_forever`` and
``ServerThread`` run it with uvicorn on a socket bound beforehand (so ``port=0`` works and the real port is known).

Routes: ``POST /v1/chat/completions`` (``stream: true`` → server-sent events), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health``, ``GET /`` (the chat page, ``static/index.html``). With ``api_key`` set,
``/v1/*`` needs ``Authorization: Bearer <key>``; ``/health`` and the page do not (the page asks for the key).

Each chat request goes: key (401) → content type (415 unless application/json) → size (413, counted while
reading, before parsing) → JSON (400) → schema (400) → model id (404) → settings (400) → input guard → backend →
output guard → response. Errors are OpenAI's error object; none of them stops the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import socket
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from safealign.serve.guard import DEFAULT_REFUSAL, Guard
from safealign.serve.protocol import ChatRequest, Completion, RequestError, parse_request

STATIC = Path(__file__).parent / "static"
DRAIN_LIMIT = 16 << 20  # an oversized body is read (and dropped) up to this much, so the client gets its 413
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(RequestError(status, message, param=param, code=code, type=type).body(), status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 when it exceeds ``limit`` bytes (by its Content-Length, or counted as it arrives:
    nothing past the limit is kept). The rest of an oversized body is read and dropped, up to ``DRAIN_LIMIT``, so
    that the client, still sending, gets the 413 instead of a cut connection."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max(limit, DRAIN_LIMIT):
        raise RequestError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    body, seen, more = bytearray(), 0, True
    while more and seen <= max(limit, DRAIN_LIMIT):
        message = await request.receive()
        if message["type"] != "http.request":  # the client went away
            raise RequestError(400, "the client disconnected")
        chunk = message.get("body", b"")
        seen += len(chunk)
        more = message.get("more_body", False)
        if seen <= limit:
            body += chunk
    if seen > limit:
        raise RequestError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    return bytes(body)


def pieces(text: str) -> list[str]:
    """Word-sized pieces (a word and the spaces after it) that join back to ``text``."""
    return [p for p in re.findall(r"\S*\s*", text) if p] or [""]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def request_host(header: str) -> str:
    """The host name of a ``Host`` header, without its port and brackets, lower-case (``[::1]:8000`` → ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_app(backend: Any, *, served_id: str, guard: Guard | None = None, api_key: str | None = None,
               refusal: str = DEFAULT_REFUSAL, max_request_bytes: int = 1_000_000,
               max_new_tokens: int = 256, allowed_hosts: frozenset[str] | set[str] | None = None) -> FastAPI:
    """``allowed_hosts``: the ``Host`` names requests may carry (``None``: any). A server on this machine only
    answers requests addressed to it by a loopback name, so that a web page the user visits cannot reach it
    through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1); others get a 403."""
    batchers = [b for b in (getattr(backend, "batcher", None), guard.batcher if guard else None) if b is not None]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for b in batchers:
            await b.close()

    app = FastAPI(title="safealign serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    guard_mode = guard.mode if guard else "off"

    if allowed_hosts is not None:
        allowed = frozenset(h.lower() for h in allowed_hosts)

        @app.middleware("http")
        async def check_host(request: Request, call_next):  # noqa: ANN001, ANN202
            host = request_host(request.headers.get("host", ""))
            if host not in allowed:
                return error_response(403, f"requests to this server must address it as one of {sorted(allowed)} "
                                           f"(the Host header says {host!r}; --allowed-host adds a name)",
                                      code="host_not_allowed", type="permission_error")
            return await call_next(request)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, e: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, e: Exception) -> JSONResponse:
        return error_response(500, "internal server error", type="server_error")

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise RequestError(401, "missing or incorrect API key (send it as 'Authorization: Bearer <key>')",
                               code="invalid_api_key")

    def model_card() -> dict[str, Any]:
        return {"id": served_id, "object": "model", "created": created, "owned_by": "safealign"}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok", "model": served_id,
                               "guard": {"judge": guard.judge.name if guard else None, "mode": guard_mode}}
        if getattr(backend, "batcher", None) is not None:
            out["batching"] = {"generate_calls": backend.batcher.calls, "requests": backend.batcher.items,
                               "max_batch": backend.batcher.max_batch}
        return out

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str, request: Request) -> dict[str, Any]:
        check_key(request)
        if model_id != served_id:
            raise RequestError(404, f"the model '{model_id}' does not exist (this server serves '{served_id}')",
                               param="model", code="model_not_found")
        return model_card()

    def options(req: ChatRequest) -> dict[str, Any]:
        max_tokens = req.max_completion_tokens or req.max_tokens or max_new_tokens
        if max_tokens > max_new_tokens:
            raise RequestError(400, f"max_tokens is {max_tokens}; this server allows at most {max_new_tokens}",
                               param="max_tokens")
        return {"max_tokens": max_tokens, "temperature": 0.0 if req.temperature is None else req.temperature,
                "top_p": 1.0 if req.top_p is None else req.top_p, "n": req.n or 1, "seed": req.seed or 0,
                "seed_given": req.seed is not None, "stop": req.stops(),
                "max_tokens_given": bool(req.max_completion_tokens or req.max_tokens)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        check_key(request)
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if kind != "application/json":  # also keeps other web pages out: a browser preflights a JSON POST
            raise RequestError(415, f"the request body must be application/json, not {kind}",
                               code="unsupported_media_type")
        body = await read_body(request, max_request_bytes)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
        req = parse_request(data)
        if req.model != served_id:
            raise RequestError(404, f"the model '{req.model}' does not exist (this server serves '{served_id}')",
                               param="model", code="model_not_found")
        opts = options(req)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        users = [m["content"] for m in messages if m["role"] == "user"]
        asked = users[-1] if users else "\n\n".join(m["content"] for m in messages)
        verdicts: list[dict[str, Any]] = []
        seconds = {"guard": 0.0, "model": 0.0}

        blocked_input = False
        if guard and guard.checks_input:
            t = time.perf_counter()
            verdict = await guard.check("input", asked, asked)
            seconds["guard"] += time.perf_counter() - t
            verdicts.append(verdict)
            blocked_input = verdict["blocked"]
        if blocked_input:
            done = Completion([refusal] * opts["n"], ["content_filter"] * opts["n"])
        else:
            t = time.perf_counter()
            done = await backend.complete(messages, opts)
            seconds["model"] = time.perf_counter() - t
            if guard and guard.checks_output:
                t = time.perf_counter()
                checked = await asyncio.gather(*(guard.check("output", asked, text) for text in done.texts))
                seconds["guard"] += time.perf_counter() - t
                for i, verdict in enumerate(checked):
                    verdicts.append({**verdict, "index": i})
                    if verdict["blocked"]:
                        done.texts[i], done.finish_reasons[i] = refusal, "content_filter"
        extension = {"guard_mode": guard_mode, "guard": verdicts,
                     "seconds": {k: round(v, 4) for k, v in seconds.items()}}
        head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": served_id}
        usage = {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                 "total_tokens": done.prompt_tokens + done.completion_tokens}
        if not req.stream:
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                        "logprobs": None} for i, (text, reason) in enumerate(zip(done.texts, done.finish_reasons))]
            return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": usage,
                                 "safealign": extension})
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(sse_events(head, done, extension, usage if include_usage else None),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def sse_events(head: dict[str, Any], done: Completion, extension: dict[str, Any], usage: dict[str, Any] | None):
    """The finished (and guarded) answer as OpenAI's chunk stream: the role, word-sized content pieces, a last chunk
    with every choice's finish_reason and the ``safealign`` field, the usage chunk if asked for, then ``[DONE]``."""
    def event(choices: list[dict[str, Any]], **more: Any) -> str:
        chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **more}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    for i, text in enumerate(done.texts):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for piece in pieces(text):
            yield event([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
    yield event([{"index": i, "delta": {}, "finish_reason": reason} for i, reason in enumerate(done.finish_reasons)],
                safealign=extension)
    if usage is not None:
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); port 0 takes a free one (``sock.getsockname()[1]``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: FastAPI, log_level: str, access_log: bool):
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on", timeout_keep_alive=30,
                            server_header=False)
    return uvicorn.Server(config)


def serve_forever(app: FastAPI, sock: socket.socket, *, log_level: str = "info", access_log: bool = True) -> None:
    """Run until interrupted (Ctrl-C / SIGTERM), then return. The access log has method, path and status: never
    bodies or keys."""
    try:
        _uvicorn_server(app, log_level, access_log).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal once it has shut down cleanly
        pass


class ServerThread:
    """The app served from a background thread on 127.0.0.1 (tests, benchmarks): ``with ServerThread(app) as s:``
    then ``s.url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = _uvicorn_server(app, "warning", False)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
