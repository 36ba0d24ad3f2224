"""Generation: records in, ``Generation`` lines out (appended to JSONL, resumable).

Engines:
- ``HFEngine``: a transformers causal LM, continuously batched: up to ``batch_size`` answers decode together
  over one left-padded KV cache; an answer that ends leaves the batch at once and, as soon as a quarter of
  the slots are free, waiting prompts are prefilled and merged in (their caches left-padded to the running
  length). The prompts' shared start (a chat template's system turn) is run once and its keys and values copied
  into each prefill; the cache grows in place rather than by concatenation. Greedy or sampling (temperature,
  top-p, top-k, seed), K samples per prompt, bf16 where the CPU or GPU computes it
  (``models.inference_precision``). ``benchmarks/generation.py`` measures it against a one-prompt-at-a-time
  loop and against transformers' own batched ``generate``.
- ``OpenAIEngine``: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, Ollama, TGI, ...);
  the API key comes from the environment and is never printed.

``generate_to_file`` appends one JSON line per finished (prompt, sample) and flushes it. Rerun with the
same output, it skips what is finished; a line cut by a kill -9 is dropped before appending again.
"""

from __future__ import annotations

import functools
import inspect
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

from safealign import io
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
    precision: str = option("auto", "HF engine: auto (bf16 on a GPU or a CPU with bf16 units, else fp32) | fp32 "
                                    "| bf16; the precision used is written on every line")

    def __post_init__(self) -> None:
        if self.num_samples > 1 and self.temperature <= 0:
            raise SafealignError("num_samples > 1 needs temperature > 0", field="num_samples")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.num_samples < 1:
            raise SafealignError("max_new_tokens, batch_size and num_samples must be >= 1", field="params")
        from safealign.models import INFERENCE_PRECISIONS

        if self.precision not in INFERENCE_PRECISIONS:
            raise SafealignError(f"unknown precision {self.precision!r} (choose from "
                                 f"{', '.join(INFERENCE_PRECISIONS)})", field="precision")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("batch_size")  # does not change the outputs' meaning
        d.pop("precision")  # the engine writes the precision it resolved to (``Engine.precision_for``)
        return d


class Engine(Protocol):
    name: str  # the model fingerprint written on every line

    def generate(self, prompts: Sequence[str], params: GenParams) -> list[list[str]]:
        """For each prompt (a user instruction), ``params.num_samples`` responses."""

    # optional: ``precision_for(params) -> str``, the precision its outputs are computed in (written on each line)


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

    def precision_for(self, params: GenParams) -> str:
        from safealign.models import inference_precision

        return inference_precision(params.precision, str(next(self.model.parameters()).device))

    def generate(self, prompts: Sequence[str], params: GenParams, on_batch=None) -> list[list[str]]:
        """Generate for all prompts; ``on_batch(indices, outputs)`` is called as prompts finish (all K samples).
        The model is cast to ``params.precision`` first (in place: a model passed in as ``model_obj`` is too)."""
        import torch

        from safealign.models import for_inference

        for_inference(self.model, str(next(self.model.parameters()).device), params.precision)
        texts = [self.format(p, params.template) for p in prompts]
        ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))  # long first: OOM shows early
        rows = [(i, k) for i in order for k in range(params.num_samples)]  # one row per (prompt, sample)
        results: list[list[str]] = [[""] * params.num_samples for _ in texts]
        left = [params.num_samples] * len(texts)  # samples still decoding, per prompt
        unfinished = len(texts)
        if params.temperature > 0:
            torch.manual_seed(params.seed)

        def finished(row: tuple[int, int], tokens: list[int]) -> int | None:
            i, k = row
            results[i][k] = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            left[i] -= 1
            return i if left[i] == 0 else None

        done: list[int] = []
        for row, tokens in continuous_decode(self.model, [ids[i] for i, _ in rows], rows, params, self._eos_ids(),
                                             self.tokenizer.pad_token_id):
            i = finished(row, tokens)
            if i is not None:
                done.append(i)
                unfinished -= 1
            if on_batch and done and (len(done) >= params.batch_size or unfinished == 0):
                on_batch(done, [results[i] for i in done])
                done = []
        if on_batch and done:
            on_batch(done, [results[i] for i in done])
        return results

    def _eos_ids(self) -> list[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None})


def continuous_decode(model: Any, prompt_ids: Sequence[list[int]], keys: Sequence[Any], params: GenParams,
                      eos_ids: Sequence[int], pad_id: int):
    """Yield ``(key, new token ids)`` as each row's answer ends (at an EOS token, not included, or at
    ``max_new_tokens``). At most ``params.batch_size`` rows decode at once over one KV cache; a finished row
    leaves the batch at the next step, and waiting prompts are prefilled and merged in when a quarter of the
    slots (or all, at the start) are free. Rows are padded before their own tokens (after the prompts' shared
    start, which is run once: ``_shared_prefix``); each keeps its own position ids, so padding never shifts a
    row's positions and a row's answer does not depend on which rows share its batch (up to floating-point
    rounding: of the quickstart's 390 greedy fp32 answers, one differs from the answer this decoder gave before it
    ran the shared start once, and it is now the one ``generate`` gives that prompt alone)."""
    import torch
    from transformers import DynamicCache
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    device = next(model.parameters()).device
    warpers = LogitsProcessorList()
    sampling = params.temperature > 0
    if sampling:
        warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
    eos = torch.tensor(list(eos_ids) or [-1], device=device)
    # transformers 5 renamed forward's ``past_key_values`` to ``cache``
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    waiting = list(range(len(prompt_ids)))[::-1]  # a stack: pop() takes the next row in order
    refill_at = max(1, params.batch_size // 4)

    running: list[int] = []          # row index per batch position
    out: list[list[int]] = [[] for _ in prompt_ids]
    cache = mask = pos = last = None  # the running batch's KV cache, attention mask, next positions, last tokens
    step_logits = None  # the running rows' next-token logits (set after each decoding step)

    def new_cache():
        c = DynamicCache()  # plain full-length layers (a sliding-window model masks them itself)
        if getattr(c, "layer_class_to_replicate", None) is not None:
            c.layer_class_to_replicate = _in_place_layer()
        return c

    # The prompts' shared start (the chat template's system turn: 24 of a prompt's 44 tokens on the quickstart's
    # benchmarks) is run once; each prefill copies its keys and values and reads only the rest of its prompts.
    shared = _shared_prefix(prompt_ids)
    prefix_states = None
    if shared:
        with torch.inference_mode():
            c = new_cache()
            model(input_ids=torch.tensor([prompt_ids[0][:shared]], device=device),
                  position_ids=torch.arange(shared, device=device)[None], use_cache=True, logits_to_keep=1,
                  **{cache_kw: c})
            prefix_states = [(layer.keys, layer.values) for layer in c.layers]

    def prefill(new: list[int]):
        width = max(len(prompt_ids[r]) for r in new) - shared
        ids = torch.full((len(new), width), pad_id, dtype=torch.long)
        m = torch.zeros((len(new), shared + width), dtype=torch.long)
        m[:, :shared] = 1
        for j, r in enumerate(new):
            p = prompt_ids[r][shared:]
            ids[j, width - len(p):] = torch.tensor(p)
            m[j, shared + width - len(p):] = 1
        ids, m = ids.to(device), m.to(device)
        position = (m.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        c = new_cache()
        for i, (k, v) in enumerate(prefix_states or []):  # [prefix | padding | rest of prompt], padding masked
            c.update(k.expand(len(new), -1, -1, -1), v.expand(len(new), -1, -1, -1), i)
        logits = model(input_ids=ids, attention_mask=m, position_ids=position, use_cache=True, logits_to_keep=1,
                       **{cache_kw: c}).logits[:, -1, :]
        return c, m, position[:, -1] + 1, logits

    def merge(c1, m1, c2, m2):
        """One cache for two batches: the shorter is left-padded (zeros, masked out) to the longer's length."""
        w = max(m1.shape[1], m2.shape[1])

        def pad(t, n, dim):
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for l1, l2 in zip(c1.layers, c2.layers):
            l1.keys = torch.cat([pad(l1.keys, w - m1.shape[1], 2), pad(l2.keys, w - m2.shape[1], 2)])
            l1.values = torch.cat([pad(l1.values, w - m1.shape[1], 2), pad(l2.values, w - m2.shape[1], 2)])
        return c1, torch.cat([pad(m1, w - m1.shape[1], 1), pad(m2, w - m2.shape[1], 1)])

    def choose(logits):
        logits = logits.float()
        if not sampling:
            return logits.argmax(-1)
        scores = warpers(None, logits)
        return torch.multinomial(torch.softmax(scores, -1), 1).squeeze(1)

    with torch.inference_mode():
        while waiting or running:
            free = params.batch_size - len(running)
            logits = None
            if waiting and (free >= refill_at or not running):
                new = [waiting.pop() for _ in range(min(free, len(waiting)))]
                c, m, p, new_logits = prefill(new)
                if running:
                    # the running rows' next-token logits come from their last step; the new rows' from prefill
                    cache, mask = merge(cache, mask, c, m)
                    pos = torch.cat([pos, p])
                    logits = torch.cat([step_logits, new_logits])
                else:
                    cache, mask, pos, logits = c, m, p, new_logits
                running += new
            else:
                logits = step_logits
            last = choose(logits)
            ended = torch.isin(last, eos).tolist()
            keep = []
            for j, (r, token) in enumerate(zip(running, last.tolist())):
                if not ended[j]:
                    out[r].append(token)
                if ended[j] or len(out[r]) >= params.max_new_tokens:
                    yield keys[r], out[r]
                else:
                    keep.append(j)
            if len(keep) < len(running):
                running = [running[j] for j in keep]
                if not running:
                    cache = mask = pos = None
                    continue
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, pos, last = mask[index], pos[index], last[index]
                used = mask.any(0)  # drop columns that are padding in every row left, when that pays for the copy
                if int((~used).sum()) >= max(8, mask.shape[1] // 4):
                    mask = mask[:, used]
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[:, :, used], layer.values[:, :, used]
            mask = torch.cat([mask, mask.new_ones((len(running), 1))], dim=1)
            step_logits = model(input_ids=last[:, None], attention_mask=mask, position_ids=pos[:, None],
                                use_cache=True, **{cache_kw: cache}).logits[:, -1, :]
            pos = pos + 1


def _shared_prefix(prompt_ids: Sequence[list[int]], least: int = 8) -> int:
    """The number of leading tokens every prompt shares, if at least ``least`` and each prompt has a token after
    them (its first logits come from its own tokens); else 0."""
    if len(prompt_ids) < 2:
        return 0
    first, n = prompt_ids[0], min(len(p) for p in prompt_ids) - 1
    for p in prompt_ids[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return n if n >= least else 0


@functools.cache
def _in_place_layer():
    """transformers' ``DynamicLayer``, appending a step's keys and values in place (the class, made once).

    ``DynamicLayer.update`` concatenates the whole cache with the new token at every step: O(length) copying per
    layer per step, 27% of a decoding step's CPU time at 64 rows x ~150 tokens (torch profiler, fp32, one thread).
    This layer keeps each tensor in a buffer with room for more tokens and hands attention a view of the filled
    part, so a step copies one token's states. When the keys or values were replaced from outside (the decoder's
    merge of new rows, its drop of all-padding columns), the next update buffers them afresh. The same numbers
    reach attention either way (tests/test_generate.py checks the layer against ``DynamicLayer`` and the answers
    against ``generate``'s)."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class InPlaceLayer(DynamicLayer):
        room = 64  # extra token slots a (re)allocated buffer gets beyond a quarter of its length

        def _buffered(self) -> bool:
            """Whether keys and values are still the views this layer handed out (not replaced from outside)."""
            views = getattr(self, "_views", None)
            return views is not None and self.keys is views[0] and self.values is views[1]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.device, self.is_initialized = key_states.device, True
                self.keys, self.values = key_states.new_empty(0), value_states.new_empty(0)
            n, add = self.get_seq_length(), key_states.shape[-2]
            if not self._buffered() or n + add > self._keys_buffer.shape[-2]:
                capacity = n + add + max(self.room, (n + add) // 4)
                buffers = []
                for old, new in ((self.keys, key_states), (self.values, value_states)):
                    buffer = new.new_empty((*new.shape[:2], capacity, new.shape[-1]))
                    if n:
                        buffer[:, :, :n] = old
                    buffers.append(buffer)
                self._keys_buffer, self._values_buffer = buffers
            self._keys_buffer[:, :, n:n + add] = key_states
            self._values_buffer[:, :, n:n + add] = value_states
            self.keys, self.values = self._keys_buffer[:, :, :n + add], self._values_buffer[:, :, :n + add]
            self._views = (self.keys, self.values)
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if not self._buffered():
                return super().batch_select_indices(indices)
            n = self.get_seq_length()
            self._keys_buffer, self._values_buffer = self._keys_buffer[indices], self._values_buffer[indices]
            self.keys, self.values = self._keys_buffer[:, :, :n], self._values_buffer[:, :, :n]
            self._views = (self.keys, self.values)

    return InPlaceLayer


class OpenAIEngine:
    """An OpenAI-compatible chat-completions endpoint. ``api_key_env`` names the variable holding the key.

    Each request waits at most ``timeout`` seconds for an answer and is tried ``retries`` times in all (on a timeout,
    a lost connection, HTTP 429 or 5xx; a short pause between tries); the error after the last try says how long it
    waited in all."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 retries: int = 2):
        if not base_url:
            raise SafealignError("the openai engine needs --base-url", field="base_url")
        if timeout <= 0 or retries < 1:
            raise SafealignError("needs timeout > 0 and retries >= 1", field="timeout")
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
        last, t0 = "", time.monotonic()
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
            if attempt + 1 < self.retries:
                time.sleep(min(2 ** attempt, 8) * 0.5)
        raise SafealignError(f"request failed after {self.retries} tries in {time.monotonic() - t0:.0f} s "
                             f"({self.timeout:g} s timeout each; --timeout to change): {last}", file=url,
                             field="base_url")

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
                api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0) -> Engine:
    if engine == "hf":
        return HFEngine(model)
    if engine == "openai":
        return OpenAIEngine(base_url or "", model or "default", api_key_env, timeout=timeout)
    raise SafealignError(f"unknown engine '{engine}' (hf | openai)", field="engine")


def read_generations(path: str | Path, repair: bool = False) -> list[Generation]:
    """Read a generations JSONL (``safealign.io``'s rule: a last line cut by a kill is skipped). With ``repair``,
    the file is first made to end with a complete line, so that it can be appended to."""
    path = Path(path)
    if not path.exists():
        return []
    if repair:
        io.repair_jsonl(path)
    out: list[Generation] = []
    for lineno, obj in io.iter_jsonl(path):
        try:
            out.append(Generation(**obj))
        except TypeError:
            raise SafealignError("malformed generation line", file=str(path), line=lineno) from None
    return out


def generate_to_file(engine: Engine, records: Sequence[EvalPrompt], params: GenParams, out: str | Path,
                     desc: str = "generating") -> list[Generation]:
    """Generate for every record (``num_samples`` each) into ``out``, skipping what is already there."""
    from safealign.progress import progress_bar

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = read_generations(out, repair=True)
    pdict = params.as_dict()
    if hasattr(engine, "precision_for"):
        pdict["precision"] = engine.precision_for(params)
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
    if hasattr(engine, "prepare"):
        engine.prepare()  # a lazily loaded model loads (or fails, in one line) before the progress bar shows
    sink: list[Any] = []  # the output, opened at the first finished batch: a model that fails to load writes nothing
    try:
        with progress_bar() as bar:
            task = bar.add_task(desc, total=len(records), completed=len(records) - len(todo))

            def write(idx: list[int], outs: list[list[str]]) -> None:
                rows = []
                for i, responses in zip(idx, outs):
                    r = todo[i]
                    for k, resp in enumerate(responses):
                        rows.append(asdict(Generation(id=r.id, prompt=r.prompt, response=resp, model=engine.name,
                                                      params=pdict, sample=k, benchmark=r.benchmark,
                                                      expected=r.expected, category=r.category,
                                                      reference=r.reference)))
                if not sink:
                    sink.append(open(out, "a", encoding="utf-8"))  # noqa: SIM115 (closed below)
                io.append_jsonl(sink[0], rows)  # whole lines only; a cut one is repaired on the next run
                bar.advance(task, len(idx))

            engine.generate([r.prompt for r in todo], params, on_batch=write)
    finally:
        for f in sink:
            f.close()
    return _ordered(read_generations(out), records)


def _rewrite(path: Path, gens: list[Generation]) -> None:
    io.write_jsonl(path, [asdict(g) for g in gens])


def _ordered(gens: Iterable[Generation], records: Sequence[EvalPrompt]) -> list[Generation]:
    rank = {r.id: i for i, r in enumerate(records)}
    return sorted((g for g in gens if g.id in rank), key=lambda g: (rank[g.id], g.sample))
