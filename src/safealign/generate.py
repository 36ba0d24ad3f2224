"""Generation: records in, ``Generation`` lines out (appended to JSONL, resumable).

Engines:
- ``HFEngine``: batched transformers generation — left padding, length-sorted batches, KV cache,
  greedy or sampling (temperature, top-p, top-k, seed), K samples per prompt, stop at EOS.
- ``OpenAIEngine``: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, Ollama, TGI, ...);
  the API key comes from the environment and is never printed.

``generate_to_file`` appends one JSON line per finished (prompt, sample) and flushes it. Rerun with the
same output, it skips what is finished; a line cut by a kill -9 is dropped before appending again.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from safealign.config import option
from safealign.errors import SafealignError
from safealign.records import EvalPrompt, Generation


@dataclass
class GenParams:
    max_new_tokens: int = option(128, "maximum new tokens per response")
    temperature: float = option(0.0, "sampling temperature; 0 means greedy decoding")
    top_p: float = option(1.0, "nucleus sampling mass (sampling only)")
    top_k: int = option(0, "top-k sampling; 0 disables it (sampling only)")
    seed: int = option(0, "random seed for sampling")
    num_samples: int = option(1, "responses per prompt (K); K > 1 needs temperature > 0")
    batch_size: int = option(32, "prompts per batch (HF engine) or concurrent requests (openai engine)")
    template: str = option("auto", "prompt format: auto (chat template if any, else alpaca) | chat | alpaca | raw")

    def __post_init__(self) -> None:
        if self.num_samples > 1 and self.temperature <= 0:
            raise SafealignError("num_samples > 1 needs temperature > 0", field="num_samples")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.num_samples < 1:
            raise SafealignError("max_new_tokens, batch_size and num_samples must be >= 1", field="params")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("batch_size")  # does not change the outputs' meaning
        return d


class Engine(Protocol):
    name: str  # the model fingerprint written on every line

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[list[str]]:
        """For each prompt (a user instruction), ``params.num_samples`` responses."""


class HFEngine:
    """Batched generation with a transformers causal LM (see ``safealign.models`` for ``--model``)."""

    def __init__(self, model: str | None = None, *, model_obj: Any = None, tokenizer: Any = None,
                 name: str | None = None, show_progress: bool = True):
        from safealign import models

        if model_obj is None:
            model_obj, tokenizer = models.load_causal_lm(model)
            model_obj = models.for_inference(model_obj)  # a GPU when there is one (SAFEALIGN_DEVICE overrides)
            name = name or models.fingerprint(model)
        self.model, self.tokenizer = model_obj, tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name or getattr(model_obj.config, "_name_or_path", "model")
        self.show_progress = show_progress

    def format(self, prompt: str, template: str) -> str:
        from safealign.models import format_prompt

        return format_prompt(self.tokenizer, prompt, template=template)

    def generate(self, prompts: Sequence[str], params: GenParams, on_batch=None) -> list[list[str]]:
        """Generate for all prompts; ``on_batch(indices, outputs)`` is called as each batch finishes."""
        import torch

        texts = [self.format(p, params.template) for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # long first: OOM shows early
        results: list[list[str]] = [[] for _ in texts]
        sampling = params.temperature > 0
        gen_kw: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, do_sample=sampling,
                                      num_return_sequences=params.num_samples,
                                      pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
        if sampling:
            gen_kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        device = next(self.model.parameters()).device
        for b, start in enumerate(range(0, len(order), params.batch_size)):
            idx = order[start:start + params.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            if sampling:
                torch.manual_seed(params.seed + b)
            with torch.inference_mode():
                out = self.model.generate(**enc, **gen_kw)
            new = out[:, enc.input_ids.shape[1]:]
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            batch_out = []
            for j, i in enumerate(idx):
                results[i] = [d.strip() for d in decoded[j * params.num_samples:(j + 1) * params.num_samples]]
                batch_out.append(results[i])
            if on_batch:
                on_batch(idx, batch_out)
        return results


class OpenAIEngine:
    """An OpenAI-compatible chat-completions endpoint. ``api_key_env`` names the variable holding the key."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 retries: int = 3):
        if not base_url:
            raise SafealignError("the openai engine needs --base-url", field="base_url")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}@{self.base_url}"
        self._key = os.environ.get(api_key_env, "")
        self.timeout, self.retries = timeout, retries

    def chat(self, messages: list[dict[str, str]], **params: Any) -> list[str]:
        body = json.dumps({"model": self.model, "messages": messages, **params}).encode()
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.retries):
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                    data = json.loads(resp.read())
                return [c["message"]["content"] or "" for c in data["choices"]]
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = str(getattr(e, "reason", e))
            except (KeyError, ValueError, TypeError):
                raise SafealignError("the server's answer is not an OpenAI chat completion", file=url) from None
            time.sleep(min(2 ** attempt, 8) * 0.5)
        raise SafealignError(f"request failed: {last}", file=url, field="base_url")

    def generate(self, prompts: Sequence[str], params: GenParams, on_batch=None) -> list[list[str]]:
        kw: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": params.temperature,
                              "n": params.num_samples, "seed": params.seed}
        if params.temperature > 0:
            kw["top_p"] = params.top_p

        def one(p: str) -> list[str]:
            return [r.strip() for r in self.chat([{"role": "user", "content": p}], **kw)]

        results: list[list[str]] = [[] for _ in prompts]
        with ThreadPoolExecutor(max_workers=params.batch_size) as pool:
            for start in range(0, len(prompts), params.batch_size):
                idx = list(range(start, min(start + params.batch_size, len(prompts))))
                outs = list(pool.map(one, [prompts[i] for i in idx]))
                for i, o in zip(idx, outs):
                    results[i] = o
                if on_batch:
                    on_batch(idx, outs)
        return results


def make_engine(model: str | None = None, engine: str = "hf", base_url: str | None = None,
                api_key_env: str = "OPENAI_API_KEY") -> Engine:
    if engine == "hf":
        return HFEngine(model)
    if engine == "openai":
        return OpenAIEngine(base_url or "", model or "default", api_key_env)
    raise SafealignError(f"unknown engine '{engine}' (hf | openai)", field="engine")


def read_generations(path: str | Path, repair: bool = False) -> list[Generation]:
    """Read a generations JSONL. With ``repair``, a last line cut by a kill -9 (no newline) is removed."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")  # ``tail`` is whatever follows the last newline
    out: list[Generation] = []
    for lineno, raw in enumerate(complete, 1):
        if raw.strip():
            out.append(_parse_generation(raw, path, lineno))
    if tail.strip():
        try:
            out.append(_parse_generation(tail, path, len(complete) + 1))
            if repair:  # complete JSON, only the newline was lost
                with open(path, "ab") as f:
                    f.write(b"\n")
        except SafealignError:
            if not repair:
                raise
            with open(path, "r+b") as f:
                f.truncate(len(data) - len(tail))
    return out


def _parse_generation(raw: bytes, path: Path, lineno: int) -> Generation:
    try:
        return Generation(**json.loads(raw))
    except (ValueError, TypeError):
        raise SafealignError("malformed generation line", file=str(path), line=lineno) from None


def generate_to_file(engine: Engine, records: Sequence[EvalPrompt], params: GenParams, out: str | Path,
                     desc: str = "generating") -> list[Generation]:
    """Generate for every record (``num_samples`` each) into ``out``, skipping what is already there."""
    from safealign.progress import progress_bar

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = read_generations(out, repair=True)
    pdict = params.as_dict()
    for g in existing[:1]:
        if g.model != engine.name or g.params != pdict:
            raise SafealignError(
                f"holds generations of another model or parameters ({g.model}); use another output",
                file=str(out), field="model" if g.model != engine.name else "params")
    counts: dict[str, int] = {}
    for g in existing:
        counts[g.id] = counts.get(g.id, 0) + 1
    partial = {i for i, c in counts.items() if c < params.num_samples}
    if partial:  # a batch cut midway: drop its lines so the prompt is redone whole
        existing = [g for g in existing if g.id not in partial]
        _rewrite(out, existing)
    done = {i for i, c in counts.items() if i not in partial}
    todo = [r for r in records if r.id not in done]
    if len({r.id for r in records}) != len(records):
        raise SafealignError("duplicate prompt ids", field="id")
    if not todo:
        return _ordered(existing, records)
    with progress_bar() as bar, open(out, "a", encoding="utf-8") as f:
        task = bar.add_task(desc, total=len(records), completed=len(records) - len(todo))

        def write(idx: list[int], outs: list[list[str]]) -> None:
            lines = []
            for i, responses in zip(idx, outs):
                r = todo[i]
                for k, resp in enumerate(responses):
                    g = Generation(id=r.id, prompt=r.prompt, response=resp, model=engine.name, params=pdict,
                                   sample=k, benchmark=r.benchmark, expected=r.expected, category=r.category,
                                   reference=r.reference)
                    lines.append(json.dumps(asdict(g), ensure_ascii=False) + "\n")
            f.write("".join(lines))  # whole lines only; a cut one is repaired on the next run
            f.flush()
            os.fsync(f.fileno())
            bar.advance(task, len(idx))

        engine.generate([r.prompt for r in todo], params, on_batch=write)
    return _ordered(read_generations(out), records)


def _rewrite(path: Path, gens: list[Generation]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(asdict(g), ensure_ascii=False) + "\n" for g in gens), encoding="utf-8")
    os.replace(tmp, path)


def _ordered(gens: Iterable[Generation], records: Sequence[EvalPrompt]) -> list[Generation]:
    rank = {r.id: i for i, r in enumerate(records)}
    return sorted((g for g in gens if g.id in rank), key=lambda g: (rank[g.id], g.sample))
