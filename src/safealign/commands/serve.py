"""``safealign serve``: a model behind an OpenAI-compatible endpoint, with a safety judge as its guard
(see ``safealign.serve`` for what the server does)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from safealign.errors import SafealignError
from safealign.serve.guard import DEFAULT_REFUSAL, MODES


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model (or guard another server) behind an OpenAI-compatible endpoint")
    p.add_argument("--model", default=None,
                   help="smollm2-135m-instruct (embedded default), a model dir (e.g. runs/quickstart/dpo), a Hugging "
                        "Face id or a .gguf file; with --upstream: the upstream's model name (default: the first it "
                        "lists)")
    p.add_argument("--served-model-name", default=None,
                   help="the id clients send as `model` and /v1/models lists (default: --model as given)")
    p.add_argument("--upstream", default=None, metavar="URL",
                   help="forward to this OpenAI-compatible server (vLLM, TGI, Ollama), e.g. http://127.0.0.1:8001/v1, "
                        "instead of loading a model")
    p.add_argument("--upstream-key-env", default=None, metavar="NAME",
                   help="environment variable holding the upstream's API key (never printed)")
    p.add_argument("--guard", default="guard", metavar="JUDGE",
                   help="the safety judge: guard (default), keywords, embedded, ... (see `safealign judge --help`)")
    p.add_argument("--guard-mode", default="output", choices=MODES,
                   help="what the judge checks: the user's message (input), the answer (output, default), both, off")
    p.add_argument("--refusal", default=DEFAULT_REFUSAL, help="the text that replaces a blocked message or answer")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="environment variable holding the key clients must send (Authorization: Bearer); "
                        "default: no key")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port; the one taken is printed)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name requests may use besides the loopback ones (repeatable). On a loopback --host, "
                        "requests addressed by any other name get a 403 (a guard against DNS rebinding from web "
                        "pages); on another --host, only the names given here are checked, if any")
    p.add_argument("--max-batch", type=int, default=32, help="requests generated (and judged) together at most")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long a request waits for others to join its batch")
    p.add_argument("--max-request-bytes", type=int, default=1_000_000, help="larger request bodies get a 413")
    p.add_argument("--max-new-tokens", type=int, default=256,
                   help="max_tokens when a request gives none, and the most it may ask for")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="local model: auto = bf16 on a GPU or a CPU with bf16 units, else fp32")
    p.add_argument("--upstream-timeout", type=float, default=120.0, help="seconds to wait for the upstream")
    p.add_argument("--no-access-log", action="store_true",
                   help="do not log requests (the access log has method, path and status, never bodies or keys)")
    p.set_defaults(func=run)


def _secret(name: str, flag: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SafealignError(f"the environment variable {name} is not set or empty", field=flag)
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise SafealignError("must be 0-65535", field="port")
    for flag in ("max_batch", "max_request_bytes", "max_new_tokens"):
        if getattr(args, flag) < 1:
            raise SafealignError("must be >= 1", field=flag.replace("_", "-"))
    if args.batch_window_ms < 0 or args.upstream_timeout <= 0:
        raise SafealignError("--batch-window-ms must be >= 0 and --upstream-timeout > 0", field="batch-window-ms")
    if not args.refusal.strip():
        raise SafealignError("the refusal text is empty", field="refusal")
    api_key = _secret(args.api_key_env, "api-key-env") if args.api_key_env else None
    if args.upstream and args.precision != "auto":
        raise SafealignError("--precision is for a local model, not --upstream", field="precision")

    from safealign.serve.app import LOOPBACK_NAMES, bind, create_app, serve_forever
    from safealign.serve.guard import Guard

    window = args.batch_window_ms / 1000
    guard = None
    if args.guard_mode != "off":
        from safealign.judges import get_judge

        guard = Guard(get_judge(args.guard), args.guard_mode, max_batch=args.max_batch, window_s=window)
    if args.upstream:
        from safealign.serve.upstream import UpstreamBackend

        backend = UpstreamBackend(args.upstream, args.model, key_env=args.upstream_key_env,
                                  timeout=args.upstream_timeout)
        served = args.served_model_name or backend.model
    else:
        if args.upstream_key_env:
            raise SafealignError("--upstream-key-env needs --upstream", field="upstream-key-env")
        from safealign.generate import HFEngine
        from safealign.models import resolve_model
        from safealign.progress import status
        from safealign.serve.local import LocalBackend

        model = args.model or "smollm2-135m-instruct"
        resolve_model(model)  # a missing path fails here, in one line
        with status(f"loading {model}"):
            try:
                engine = HFEngine(model, show_progress=False)
            except OSError as e:  # e.g. a mistyped run dir, taken for a Hugging Face id that is not cached
                raise SafealignError(f"not a model directory, and loading it as a Hugging Face id failed "
                                     f"({str(e).splitlines()[0]})", file=model, field="model") from None
            backend = LocalBackend(engine, max_batch=args.max_batch, window_s=window, precision=args.precision)
            backend.warm_up()
        served = args.served_model_name or model.rstrip("/")
    if guard is not None:
        from safealign.progress import status

        with status(f"loading the guard judge ({guard.judge.name})"):
            guard.warm_up()
    extra = {h.strip().lower() for h in args.allowed_host if h.strip()}
    allowed = (LOOPBACK_NAMES | extra) if _loopback(args.host) else ((extra | {args.host.lower()}) if extra else None)
    app = create_app(backend, served_id=served, guard=guard, api_key=api_key, refusal=args.refusal,
                     max_request_bytes=args.max_request_bytes, max_new_tokens=args.max_new_tokens,
                     allowed_hosts=allowed)
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        raise SafealignError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})", field="port") from None
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    where = f"upstream {backend.base_url}" if args.upstream else "local"
    print(f"safealign serve: '{served}' ({where}) at http://{host}:{port}/v1 — chat page http://{host}:{port}/ — "
          f"guard {guard.judge.name + ' on ' + guard.mode if guard else 'off'}"
          f"{', API key required' if api_key else ''}", file=sys.stderr, flush=True)
    if not _loopback(args.host) and api_key is None:
        print(f"safealign serve: warning: listening on {args.host} with no --api-key-env: anyone who can reach this "
              "port can use the model", file=sys.stderr, flush=True)
    serve_forever(app, sock, access_log=not args.no_access_log)
    print("safealign serve: stopped", file=sys.stderr, flush=True)
    return 0
