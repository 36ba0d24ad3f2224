"""Multiple-choice QA accuracy by log-likelihood (BoolQ, PIQA, OpenBookQA, as in the paper).

Each item becomes a context and a few continuations; the model's pick is the continuation with the highest
summed log-probability given the context (``acc``), or the highest per-character log-probability
(``acc_norm``, which does not favour short answers). The prompt formats follow EleutherAI's lm-eval-harness:

- ``boolq``      (``google/boolq``, validation): ``{passage}\\nQuestion: {question}?\\nAnswer:`` → `` no`` / `` yes``;
                 columns ``passage``, ``question``, ``answer`` (bool; a 0/1 ``label`` is accepted too);
- ``piqa``       (``baber/piqa``, validation — a script-free copy of ``ybisk/piqa``):
                 ``Question: {goal}\\nAnswer:`` → `` {sol1}`` / `` {sol2}``; columns ``goal``, ``sol1``, ``sol2``, ``label``;
- ``openbookqa`` (``allenai/openbookqa``/``main``, test): ``{question_stem}`` → `` {choice}``;
                 columns ``question_stem``, ``choices`` ({``text``, ``label``}), ``answerKey``.

Data comes from the Hugging Face hub through ``datasets.load_dataset`` (needs the hub or its cache), or from a
local file in the same column format (``data_files={"boolq": "boolq.jsonl"}``, read with
``datasets.load_dataset("json", ...)``). The text is scored raw, without the chat template, as the paper's
harness did. Accuracy comes with a Wilson 95% interval.

    safealign mcqa --model runs/sit --tasks boolq,piqa,openbookqa --limit 500 --out results/mcqa.json
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safealign import io
from safealign.errors import SafealignError

Doc = tuple[str, list[str], int]  # (context, continuations, index of the gold one)


def _boolq(row: dict[str, Any]) -> Doc:
    gold = row["answer"] if row.get("answer") is not None else row.get("label")
    if gold is None:
        raise KeyError("answer")
    return f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", [" no", " yes"], int(bool(gold))


def _piqa(row: dict[str, Any]) -> Doc:
    return f"Question: {row['goal']}\nAnswer:", [" " + row["sol1"], " " + row["sol2"]], int(row["label"])


def _openbookqa(row: dict[str, Any]) -> Doc:
    choices = row["choices"]
    labels = list(choices["label"])
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} is not one of {labels}")
    return row["question_stem"], [" " + t for t in choices["text"]], labels.index(row["answerKey"])


@dataclass(frozen=True)
class Task:
    name: str
    hf_path: str
    hf_config: str | None
    split: str
    doc: Callable[[dict[str, Any]], Doc]
    columns: tuple[str, ...]  # required (a JSON file's missing key reads as None)


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("boolq", "google/boolq", None, "validation", _boolq, ("passage", "question")),
    Task("piqa", "baber/piqa", None, "validation", _piqa, ("goal", "sol1", "sol2", "label")),
    Task("openbookqa", "allenai/openbookqa", "main", "test", _openbookqa, ("question_stem", "choices", "answerKey")),
]}


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    names = [t.strip().lower() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    for n in names:
        if n not in TASKS:
            raise SafealignError(f"unknown task '{n}' (known: {', '.join(TASKS)})", field="tasks")
    if not names:
        raise SafealignError("no task named", field="tasks")
    return list(dict.fromkeys(names))


def parse_data_files(items: Sequence[str] | None) -> dict[str, str]:
    """``["boolq=a.jsonl", "piqa=b.jsonl,openbookqa=c.jsonl"]`` → {task: path}."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            task, sep, path = part.partition("=")
            if not sep or not path.strip():
                raise SafealignError(f"'{part}' is not of the form task=path", field="data-files")
            out[parse_tasks(task)[0]] = path.strip()
    return out


def load_docs(task: str, data_file: str | None = None, limit: int | None = None) -> tuple[list[Doc], str]:
    """The task's items as (context, continuations, gold) and where they came from."""
    import datasets

    t = TASKS[task]
    try:
        if data_file:
            if not Path(data_file).is_file():
                raise SafealignError("data file not found", file=data_file, field="data-files")
            ds = datasets.load_dataset("json", data_files=str(data_file), split="train")
            source = str(data_file)
        else:
            ds = datasets.load_dataset(t.hf_path, t.hf_config, split=t.split)
            source = f"{t.hf_path}{'/' + t.hf_config if t.hf_config else ''}:{t.split}"
    except SafealignError:
        raise
    except Exception as e:  # the hub is unreachable, the file is not JSON, ...
        raise SafealignError(f"cannot load {task}: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
                             f"(give a local copy with --data-files {task}=PATH)",
                             file=data_file or t.hf_path, field="data-files") from None
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    docs = []
    for i, row in enumerate(ds):
        try:
            missing = [c for c in t.columns if row.get(c) is None]
            if missing:
                raise KeyError(missing[0])
            docs.append(t.doc(row))
        except KeyError as e:
            raise SafealignError(f"missing column for {task}", file=source, line=i + 1, field=str(e.args[0])) from None
        except (ValueError, TypeError) as e:
            raise SafealignError(f"bad {task} item: {e}", file=source, line=i + 1) from None
    if not docs:
        raise SafealignError(f"no {task} items", file=source, field="data-files")
    return docs, source


def loglikelihoods(model: Any, tok: Any, requests: Sequence[tuple[str, str]], batch_size: int = 16,
                   desc: str = "scoring") -> list[float]:
    """Sum of log P(continuation | context) for each (context, continuation), batched with right padding."""
    import torch

    from safealign.progress import progress_bar

    max_len = min(getattr(model.config, "max_position_embeddings", None) or 2048, 2048)
    encoded = []
    for ctx, cont in requests:
        whole = tok(ctx + cont, add_special_tokens=False).input_ids
        n_ctx = len(tok(ctx, add_special_tokens=False).input_ids)
        cont_ids = whole[n_ctx:] or tok(cont, add_special_tokens=False).input_ids
        ids = (whole[:n_ctx] + cont_ids)[-(max_len + 1):]  # keep the end when too long
        encoded.append((ids, len(cont_ids)))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    out = [0.0] * len(encoded)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with progress_bar() as bar:
        task = bar.add_task(desc, total=len(encoded))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            inputs = [encoded[i][0][:-1] for i in idx]
            width = max(len(x) for x in inputs)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, x in enumerate(inputs):
                input_ids[j, :len(x)] = torch.tensor(x)
                mask[j, :len(x)] = 1
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                                         .logits.float(), dim=-1)
            for j, i in enumerate(idx):
                ids, n_cont = encoded[i]
                n_in = len(ids) - 1
                target = torch.tensor(ids[-n_cont:], device=device)
                out[i] = logp[j, n_in - n_cont:n_in].gather(-1, target[:, None]).sum().item()
            bar.advance(task, len(idx))
    return out


def score_docs(model: Any, tok: Any, docs: Sequence[Doc], batch_size: int = 16, desc: str = "scoring") -> dict:
    from safealign.stats import wilson

    requests = [(ctx, c) for ctx, choices, _ in docs for c in choices]
    ll = loglikelihoods(model, tok, requests, batch_size, desc)
    correct = correct_norm = 0
    pos = 0
    for _, choices, gold in docs:
        scores = ll[pos:pos + len(choices)]
        pos += len(choices)
        norm = [s / max(1, len(c.encode("utf-8"))) for s, c in zip(scores, choices)]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == gold)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == gold)
    n = len(docs)
    return {"n": n, "acc": round(correct / n, 6), "acc_norm": round(correct_norm / n, 6),
            "ci": {"acc": [round(x, 6) for x in wilson(correct, n)],
                   "acc_norm": [round(x, 6) for x in wilson(correct_norm, n)]}}


def evaluate(model: str, tasks: str | Sequence[str] = ("boolq", "piqa", "openbookqa"), limit: int | None = None,
             data_files: dict[str, str] | None = None, out: str | Path | None = None, batch_size: int = 16) -> dict:
    """Accuracy of ``model`` on each task; writes the result JSON to ``out`` (atomically) if given."""
    from safealign import models

    names = parse_tasks(tasks)
    data_files = data_files or {}
    unknown = sorted(set(data_files) - set(names))
    if unknown:
        raise SafealignError(f"data file given for '{unknown[0]}', which is not among --tasks", field="data-files")
    loaded = {n: load_docs(n, data_files.get(n), limit) for n in names}  # bad data fails before the model loads
    lm, tok = models.load_causal_lm(model)
    lm = models.for_inference(lm)
    result: dict[str, Any] = {"model": models.fingerprint(model), "limit": limit, "tasks": {},
                              "method": "log-likelihood of each choice (lm-eval-harness formats); acc = highest "
                                        "sum, acc_norm = highest per-byte; 95% Wilson intervals"}
    for name, (docs, source) in loaded.items():
        result["tasks"][name] = {**score_docs(lm, tok, docs, batch_size, desc=name), "source": source}
    if out is not None:
        io.write_json(out, result)
    return result
