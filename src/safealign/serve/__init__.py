"""``safealign serve``: a model behind an OpenAI-compatible endpoint, with a safety judge as its guard.

    safealign serve --model runs/quickstart/dpo                      # the guard judge checks every answer
    safealign serve --upstream http://127.0.0.1:8001/v1 --guard guard --guard-mode both   # guard a vLLM server

What it supports:
- ``POST /v1/chat/completions`` (``messages`` with system / developer / user / assistant turns, text content or
  text parts; ``max_tokens`` or ``max_completion_tokens``, ``temperature``, ``top_p``, ``n``, ``seed``, ``stop``,
  ``stream``, ``stream_options.include_usage``), ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``,
  and a chat page at ``/`` (``static/index.html``: no external resources; ``/#q=TEXT`` asks TEXT on load).
  Not supported, and a 400 that says so: tools, logprobs, penalties, logit_bias, a JSON response format.
  Defaults differ from OpenAI's: ``temperature`` defaults to 0 (greedy, as everywhere in safealign), and
  ``max_tokens`` to ``--max-new-tokens`` (256; also the most a request may ask for) or the room left in the context.
- Backends: a local model (``local.LocalBackend``: any ``--model`` safealign accepts, rendered with its chat
  template, batched) or ``--upstream URL`` (``upstream.UpstreamBackend``: another OpenAI-compatible server; its key
  from the variable ``--upstream-key-env`` names).
- ``model`` in a request must be the served id (``--served-model-name``, default ``--model`` as given, e.g.
  ``runs/quickstart/dpo``); another is a 404.

The guard (``guard.Guard``; ``--guard JUDGE``, default ``guard``; ``--guard-mode input|output|both|off``, default
``output``): the judge reads the user's last message (input), each answer (output), or both. A harmful one is
replaced by the refusal text (``--refusal``) with ``finish_reason: "content_filter"``; with a blocked input the model
does not run. The verdicts come back in the extension field ``safealign`` of the response (and of the last chunk of a
stream)::

    "safealign": {
      "guard_mode": "output",
      "guard": [{"stage": "input" | "output", "index": 0 (output only: the choice), "judge": "guard",
                 "harmful": false, "refusal": false, "score": 0.97, "blocked": false}],
      "seconds": {"guard": 0.12, "model": 0.85}     # time spent in the judge and in the model (or upstream)
    }

``harmful`` = the judge's ``not safe``; ``refusal`` and ``score`` (higher = safer, the judge's own scale) are the
judge's verdict as ``safealign judge`` reports it. With the ``openai`` client: ``resp.model_extra["safealign"]``.
The guard is as good as its judge: the default ``guard`` judge misses some plain-prose harmful answers (its docstring
has the figures); a DPO model's vague "how to make a bomb" answer passed it with score 0.74 in a manual check.

Streaming. Answers are never streamed token by token: the local engine (batched) and the upstream request
(unstreamed) produce each answer whole; it is judged, then sent as server-sent events in word-sized chunks (or the
refusal instead). So no text reaches the client before the guard has read the whole answer — the price is that the
first chunk comes when the answer is done. The same holds with the guard off (the chunks still come from a finished
answer).

Batching (``batcher.Batcher``): requests that arrive within ``--batch-window-ms`` (5 ms), or while the model is busy,
go to one ``generate`` call of up to ``--max-batch`` (32) — only requests with equal settings (max_tokens,
temperature, top_p, seed, n) share a call; the guard's judge calls are batched the same way, in their own thread.
``benchmarks/serve.py`` measures what it buys. On the embedded SmolLM2 (2 CPU cores, bf16, 32 new tokens), a burst of
64 concurrent requests: 10.95 requests/s batched vs 1.02 with ``--max-batch 1`` (10.7x; p95 latency 5.8 s vs 59.5 s;
one at a time: 0.94 requests/s, p50 1.0 s), 0 errors; the ``guard`` judge on the output takes 9% of a lone request's
latency and leaves 0.78x of the burst's requests/s. With sampling, a seed reproduces an answer only within the same
batch.

Errors are OpenAI's error object ``{"error": {"message", "type", "param", "code"}}``: malformed JSON or a schema
error 400, a prompt that does not fit the model's context with ``max_tokens`` 400 (``context_length_exceeded``), an
unknown model 404, a body over ``--max-request-bytes`` (1 MB; counted before parsing) 413, a body that is not
``application/json`` 415, a missing or wrong key 401 when ``--api-key-env`` is set, an upstream failure 502. The server
keeps serving after every one.

Security: binds 127.0.0.1 unless ``--host`` says otherwise (and warns when it listens beyond this machine without a
key); on a loopback address it answers only requests addressed to it as ``localhost``, ``127.0.0.1`` or ``::1`` (the
``Host`` header; ``--allowed-host`` adds names), so that a web page cannot reach it through DNS rebinding (403); keys come only from environment variables named by flags and are never printed or logged; the access log
has method, path and status, never bodies, keys or the page's question (it travels in the URL fragment, which
browsers do not send); models load with ``trust_remote_code=False``.
"""
