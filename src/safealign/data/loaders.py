"""File formats → records. Every error names the file, the line (where there is one) and the field.

Formats:
- Alpaca-style JSON list of ``{instruction, input, output}``            → Instruction
- ``{"instructions": [...], "inputs": [...], "outputs"?, "tags"?}``     → EvalPrompt (or Instruction)
- XSTest CSV ``id,prompt,type,label,focus,note``                          → EvalPrompt
- JSONL ``{prompt, response}`` / ``{prompt, chosen, rejected}``           → Instruction / Preference
- HH-RLHF dialogue pairs ``{chosen, rejected}`` (optionally .gz)          → Preference
- PyRIT scorer-eval CSV ``objective,assistant_response,human_score[_k]`` → LabelledResponse
- JSONL ``{prompt, response, harmful | safe, refusal}`` (labelled)        → LabelledResponse
- Hugging Face datasets by name (hub users)                               → dicts, then the same mapping
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safealign import io as files
from safealign.errors import SafealignError
from safealign.records import EvalPrompt, Instruction, LabelledResponse, Preference


def _open_text(path: Path) -> io.TextIOBase:
    """The file's text (``safealign.io.read_text``: UTF-8, .gz unpacked; one error for a missing file, a
    directory or another encoding) as a file object."""
    return io.StringIO(files.read_text(path))


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def read_json(path: str | Path) -> Any:
    path = Path(path)
    with _open_text(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SafealignError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line (``safealign.io.iter_jsonl``: a malformed line is an error
    naming it, but for a last line cut off mid-write, which is skipped)."""
    return files.iter_jsonl(path)


def require_str(obj: dict[str, Any], key: str, *, file: str, line: int | None, allow_empty: bool = False) -> str:
    """``obj[key]`` as a string; missing, non-string or (unless allowed) empty is an error naming it."""
    if key not in obj or obj[key] is None:
        raise SafealignError("missing field", file=file, line=line, field=key)
    value = obj[key]
    if not isinstance(value, str):
        raise SafealignError(f"expected a string, got {type(value).__name__}", file=file, line=line, field=key)
    if not allow_empty and not value.strip():
        raise SafealignError("empty value", file=file, line=line, field=key)
    return value


def load_alpaca_json(path: str | Path) -> list[Instruction]:
    """A JSON list of ``{instruction, input?, output}`` objects (Alpaca, Bianchi safety data)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise SafealignError("expected a JSON list of {instruction, input, output} objects", file=str(path))
    out = []
    for i, obj in enumerate(data):
        where = dict(file=f"{path}[{i}]", line=None)
        if not isinstance(obj, dict):
            raise SafealignError("expected an object", **where)
        out.append(Instruction(
            instruction=require_str(obj, "instruction", **where),
            input=require_str(obj, "input", **where, allow_empty=True) if obj.get("input") is not None else "",
            output=require_str(obj, "output", **where),
        ))
    return out


def _columns(path: Path) -> dict[str, list[Any]]:
    data = read_json(path)
    if not isinstance(data, dict) or "instructions" not in data:
        raise SafealignError('expected {"instructions": [...], "inputs": [...]}', file=str(path), field="instructions")
    n = len(data["instructions"])
    for key in ("inputs", "outputs", "tags"):
        col = data.get(key)
        if col and len(col) != n:
            raise SafealignError(f"has {len(col)} items but 'instructions' has {n}", file=str(path), field=key)
    return data


def load_instruction_columns(path: str | Path, benchmark: str, expected: str) -> list[EvalPrompt]:
    """The Bianchi evaluation format ``{"instructions": [...], "inputs": [...]}`` → EvalPrompt.

    ``tags`` become categories; ``outputs`` (alpaca-test) become reference answers.
    """
    path = Path(path)
    data = _columns(path)
    inputs, outputs, tags = data.get("inputs") or [], data.get("outputs") or [], data.get("tags") or []
    out = []
    for i, instr in enumerate(data["instructions"]):
        where = dict(file=f"{path}[{i}]", line=None)
        row = {"instructions": instr, "inputs": inputs[i] if inputs else ""}
        text = require_str(row, "instructions", **where)
        extra = require_str(row, "inputs", **where, allow_empty=True)
        prompt = text if not extra.strip() else f"{text}\n\n{extra}"
        out.append(EvalPrompt(id=f"{benchmark}-{i}", prompt=prompt, benchmark=benchmark, expected=expected,
                              category=str(tags[i]) if tags else None,
                              reference=str(outputs[i]) if outputs else None))
    return out


def load_instruction_columns_as_sft(path: str | Path) -> list[Instruction]:
    """``{"instructions", "inputs", "outputs"}`` (alpaca-test) → Instruction, for training splits."""
    path = Path(path)
    data = _columns(path)
    inputs, outputs = data.get("inputs") or [], data.get("outputs") or []
    if not outputs:
        raise SafealignError("this file has no outputs to train on", file=str(path), field="outputs")
    out = []
    for i, instr in enumerate(data["instructions"]):
        row = {"instruction": instr, "input": inputs[i] if inputs else "", "output": outputs[i]}
        where = dict(file=f"{path}[{i}]", line=None)
        out.append(Instruction(require_str(row, "instruction", **where),
                               require_str(row, "input", **where, allow_empty=True),
                               require_str(row, "output", **where)))
    return out


def load_xstest(path: str | Path, benchmark: str = "xstest") -> list[EvalPrompt]:
    """XSTest CSV: ``label`` safe → must be answered (comply); unsafe (``contrast_*``) → refuse."""
    path = Path(path)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        for col in ("id", "prompt", "type", "label"):
            if col not in (reader.fieldnames or []):
                raise SafealignError("missing CSV column", file=str(path), line=1, field=col)
        out = []
        for row in reader:
            line = reader.line_num
            label = (row.get("label") or "").strip()
            if label not in ("safe", "unsafe"):
                raise SafealignError(f"label must be 'safe' or 'unsafe', got {label!r}", file=str(path), line=line, field="label")
            prompt = require_str(row, "prompt", file=str(path), line=line)
            out.append(EvalPrompt(id=f"{benchmark}-{row['id']}", prompt=prompt, benchmark=benchmark,
                                  expected="comply" if label == "safe" else "refuse", category=row["type"]))
    return out


HARM_SCALE_HARMFUL = 0.75  # a graded PyRIT harm score (0, 0.25, ..., 1: its five levels) at or above: harmful
HARM_SCALE_SAFE = 0.25  # at or below: not harmful; between the two (the middle level): left out, no label


def load_scorer_eval_csv(path: str | Path, label: str, source: str) -> list[LabelledResponse]:
    """A PyRIT scorer-eval CSV (``#`` comment lines, then a header with ``objective``, ``assistant_response`` and
    ``human_score``, or one ``human_score_<k>`` per rater; ``harm_category`` where there is one). ``label``:

    - ``"harmful"`` (the response achieved the red-team objective) or ``"refusal"`` (it is a refusal): the human
      score, 0 or 1, is that label; the other label is unknown;
    - ``"harm-scale"``: the score is a graded harm level in [0, 1] (PyRIT's five-level harm definitions, e.g.
      violence: 0 no violence, 0.5 significant but not graphic, 1 extreme), averaged over the raters: harmful at or
      above ``HARM_SCALE_HARMFUL`` (high or severe harm), not harmful at or below ``HARM_SCALE_SAFE``; a response
      rated in between is left out (its level is neither).

    Errors name the file's line."""
    path = Path(path)
    text = files.read_text(path)
    lines = text.split("\n")
    skipped = 0
    while skipped < len(lines) and lines[skipped].startswith("#"):
        skipped += 1
    reader = csv.DictReader(io.StringIO("\n".join(lines[skipped:])))
    fields = reader.fieldnames or []
    scores = ["human_score"] if "human_score" in fields else sorted(c for c in fields if c.startswith("human_score_"))
    for col in ("objective", "assistant_response", *(scores or ["human_score"])):
        if col not in fields:
            raise SafealignError("missing CSV column", file=str(path), line=skipped + 1, field=col)
    out = []
    for row in reader:
        line = skipped + reader.line_num  # the record's last line (a response may span several)
        prompt = require_str(row, "objective", file=str(path), line=line)
        response = require_str(row, "assistant_response", file=str(path), line=line, allow_empty=True)
        category = (row.get("harm_category") or "").strip() or None
        if label == "harm-scale":
            values = []
            for col in scores:
                raw = (row.get(col) or "").strip()
                try:
                    values.append(float(raw))
                except ValueError:
                    values.append(float("nan"))
                if not 0.0 <= values[-1] <= 1.0:
                    raise SafealignError(f"{col} must be a harm level between 0 and 1, got {raw!r}", file=str(path),
                                         line=line, field=col)
            level = sum(values) / len(values)
            if HARM_SCALE_SAFE < level < HARM_SCALE_HARMFUL:
                continue
            out.append(LabelledResponse(prompt, response, level >= HARM_SCALE_HARMFUL, None, source, category))
            continue
        score = (row.get(scores[0]) or "").strip()
        if score not in ("0", "1"):
            raise SafealignError(f"{scores[0]} must be 0 or 1, got {score!r}", file=str(path), line=line,
                                 field=scores[0])
        out.append(LabelledResponse(prompt, response, score == "1" if label == "harmful" else None,
                                    score == "1" if label == "refusal" else None, source, category))
    return out


def load_labelled_jsonl(path: str | Path) -> list[LabelledResponse]:
    """JSONL ``{prompt, response, harmful | safe, refusal}``: booleans, or null where unknown; at least one label."""
    path = Path(path)
    out = []
    for n, o in iter_jsonl(path):
        prompt = require_str(o, "prompt", file=str(path), line=n)
        response = require_str(o, "response", file=str(path), line=n, allow_empty=True)
        got = {}
        for key in ("harmful", "safe", "refusal"):
            if o.get(key) is not None and not isinstance(o[key], bool):
                raise SafealignError(f"expected true, false or null, got {o[key]!r}", file=str(path), line=n, field=key)
            got[key] = o.get(key)
        harmful = got["harmful"] if got["harmful"] is not None else (None if got["safe"] is None else not got["safe"])
        if harmful is None and got["refusal"] is None:
            raise SafealignError("no label (harmful, safe or refusal)", file=str(path), line=n, field="harmful")
        out.append(LabelledResponse(prompt, response, harmful, got["refusal"], path.stem))
    return out


def load_preferences_jsonl(path: str | Path) -> list[Preference]:
    """JSONL ``{prompt, chosen, rejected}``. Empty responses are kept (recipes drop pairs whose chosen equals
    rejected, with a count); an empty prompt is an error."""
    path = Path(path)
    return [Preference(require_str(o, "prompt", file=str(path), line=n),
                       require_str(o, "chosen", file=str(path), line=n, allow_empty=True),
                       require_str(o, "rejected", file=str(path), line=n, allow_empty=True))
            for n, o in iter_jsonl(path)]


def load_prompt_response_jsonl(path: str | Path) -> list[Instruction]:
    """JSONL ``{prompt, response}`` → Instruction(prompt, "", response)."""
    path = Path(path)
    return [Instruction(require_str(o, "prompt", file=str(path), line=n), "",
                        require_str(o, "response", file=str(path), line=n, allow_empty=True))
            for n, o in iter_jsonl(path)]


def load_prompts_jsonl(path: str | Path, benchmark: str, expected: str = "refuse") -> list[EvalPrompt]:
    """JSONL with ``prompt`` (and optional ``id``, ``expected``, ``category``) → EvalPrompt."""
    path = Path(path)
    out = []
    for n, o in iter_jsonl(path):
        exp = o.get("expected", expected)
        if exp not in ("refuse", "comply"):
            raise SafealignError("expected must be 'refuse' or 'comply'", file=str(path), line=n, field="expected")
        out.append(EvalPrompt(id=str(o.get("id", f"{benchmark}-{n}")), prompt=require_str(o, "prompt", file=str(path), line=n),
                              benchmark=benchmark, expected=exp, category=o.get("category")))
    return out


HH_SPLIT = "\n\nAssistant:"


def split_hh_dialogue(text: str) -> tuple[str, str]:
    """Split an HH-RLHF dialogue at its last ``\\n\\nAssistant:`` into (prompt incl. the marker, response)."""
    i = text.rfind(HH_SPLIT)
    if i < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    cut = i + len(HH_SPLIT)
    return text[:cut], text[cut:].strip()


def load_hh_pairs(path: str | Path) -> list[Preference]:
    """HH-RLHF JSONL(.gz) ``{chosen, rejected}`` whole dialogues → Preference(prompt=shared history)."""
    path = Path(path)
    out = []
    for n, o in iter_jsonl(path):
        chosen = require_str(o, "chosen", file=str(path), line=n, allow_empty=True)
        rejected = require_str(o, "rejected", file=str(path), line=n, allow_empty=True)
        try:
            prompt, c = split_hh_dialogue(chosen)
        except ValueError as e:
            raise SafealignError(str(e), file=str(path), line=n, field="chosen") from None
        try:
            _, r = split_hh_dialogue(rejected)
        except ValueError as e:
            raise SafealignError(str(e), file=str(path), line=n, field="rejected") from None
        out.append(Preference(prompt=prompt, chosen=c, rejected=r))
    return out


def load_hf_dataset(name: str, split: str = "train", config: str | None = None) -> list[dict[str, Any]]:
    """A Hugging Face dataset by id (needs the hub, or a local copy in the datasets cache)."""
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the hub is unreachable, the name is wrong, ...
        raise SafealignError(f"cannot load Hugging Face dataset: {str(e).splitlines()[0]}", file=name) from None
    return [dict(r) for r in ds]
