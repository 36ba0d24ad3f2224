"""The upstream backend: another OpenAI-compatible server (vLLM, TGI, Ollama, another ``safealign serve``) does the
generating; this server checks its traffic with the guard.

``base_url`` is what the ``openai`` client would take (``http://host:8000/v1``; a URL with no path gets ``/v1``).
Requests are forwarded with the upstream's model name and the request's settings (max_tokens, temperature, top_p,
n, seed, stop), always unstreamed: the answer is fetched whole, guarded, then sent on (as SSE chunks when the client
asked to stream). The upstream batches for itself, so requests are not batched here; up to ``max_concurrency`` are in
flight at once (worker threads, ``urllib``).

The key for the upstream is read from the environment variable that ``key_env`` names, sent as a Bearer token, and
never printed, logged or returned. Errors: an unreachable upstream, a 5xx, or an answer that is not a chat completion
is a 502; a 401/403 from the upstream is a 502 too (it is this server's key that is wrong, not the client's); any
other 4xx is passed on with the upstream's message.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from safealign.errors import SafealignError
from safealign.serve.protocol import Completion, RequestError


def normalize_base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SafealignError("--upstream must be an http(s) URL such as http://127.0.0.1:8000/v1", field="upstream")
    if parts.username or parts.password:
        raise SafealignError("--upstream must not carry credentials; put the key in a variable named by "
                             "--upstream-key-env", field="upstream")
    path = parts.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class UpstreamBackend:
    def __init__(self, base_url: str, model: str | None = None, *, key_env: str | None = None, timeout: float = 120.0,
                 max_concurrency: int = 64):
        self.base_url = normalize_base_url(base_url)
        self._key = ""
        if key_env:
            self._key = os.environ.get(key_env, "")
            if not self._key:
                raise SafealignError(f"the environment variable {key_env} is not set or empty",
                                     field="upstream-key-env")
        self.timeout = timeout
        self.executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="safealign-upstream")
        self.model = model or self._first_model()
        self.name = f"upstream:{self.model}@{self.base_url}"

    def __repr__(self) -> str:  # never shows the key
        return f"UpstreamBackend({self.base_url!r}, {self.model!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _first_model(self) -> str:
        """The first model the upstream lists (vLLM and TGI serve one), for when ``--model`` is not given."""
        req = urllib.request.Request(f"{self.base_url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=min(self.timeout, 30)) as resp:
                data = json.loads(resp.read())
            return str(data["data"][0]["id"])
        except urllib.error.HTTPError as e:
            raise SafealignError(f"the upstream answered HTTP {e.code} to GET /models; name its model with --model",
                                 file=self.base_url, field="upstream") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise SafealignError(f"cannot reach the upstream ({getattr(e, 'reason', e)})", file=self.base_url,
                                 field="upstream") from None
        except (ValueError, KeyError, IndexError, TypeError):
            raise SafealignError("the upstream's /models lists no model; name it with --model", file=self.base_url,
                                 field="upstream") from None

    def warm_up(self) -> None:
        pass

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise RequestError(502, f"the upstream refused this server's key (HTTP {e.code}); check "
                                   "--upstream-key-env", type="upstream_error", code="upstream_auth") from None
            if 400 <= e.code < 500:
                try:
                    message = str(json.loads(e.read())["error"]["message"])
                except (ValueError, KeyError, TypeError):
                    message = f"the upstream answered HTTP {e.code}"
                raise RequestError(e.code, message, code="upstream_rejected") from None
            raise RequestError(502, f"the upstream answered HTTP {e.code}", type="upstream_error") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise RequestError(502, f"cannot reach the upstream ({getattr(e, 'reason', e)})",
                               type="upstream_error") from None
        except ValueError:
            raise RequestError(502, "the upstream's answer is not JSON", type="upstream_error") from None

    async def complete(self, messages: list[dict[str, str]], opts: dict[str, Any]) -> Completion:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": opts["max_tokens"],
                                "temperature": opts["temperature"], "n": opts["n"], "stream": False}
        if opts["top_p"] < 1.0:
            body["top_p"] = opts["top_p"]
        if opts["seed_given"]:
            body["seed"] = opts["seed"]
        if opts["stop"]:
            body["stop"] = opts["stop"]
        data = await asyncio.get_running_loop().run_in_executor(self.executor, self._post, body)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [c["message"].get("content") or "" for c in choices]
            reasons = [c.get("finish_reason") or "stop" for c in choices]
            usage = data.get("usage") or {}
            return Completion(texts, reasons, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                              completion_tokens=int(usage.get("completion_tokens") or 0))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise RequestError(502, "the upstream's answer is not a chat completion", type="upstream_error") from None
