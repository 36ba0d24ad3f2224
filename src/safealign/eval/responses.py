"""A result dir's ``responses.jsonl`` (written by ``safealign eval``): one ``JudgedResponse`` a line.

``write_responses`` writes it atomically; ``read_responses`` is its one reader (``compare``, ``analyze`` and the
report use it). Lines are read under ``safealign.io``'s JSONL rule (a last line cut off mid-write is skipped; any
other line that is not a JSON object is an error naming the file and line). A line must have ``id``, ``prompt`` and
``response`` (strings); every other field may be missing (``sample`` is then 0, the rest None), but one of the wrong
type is an error naming the file, the line and the field. Keys this version does not know go to ``extra``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError
from safealign.io import iter_jsonl, write_jsonl
from safealign.records import JudgedResponse

FILE = "responses.jsonl"
_REQUIRED = ("id", "prompt", "response")
_TEXT = ("benchmark", "expected", "model", "judge", "judge_id", "verdict_category")
_KNOWN = {f.name for f in fields(JudgedResponse)} - {"extra"}


def write_responses(out_dir: str | Path, rows: Iterable[JudgedResponse]) -> Path:
    """Write ``OUT/responses.jsonl`` atomically (the whole file at once); returns its path."""
    path = Path(out_dir) / FILE
    write_jsonl(path, (r.to_dict() for r in rows))
    return path


def parse_response(obj: dict[str, Any], file: str, line: int | None = None) -> JudgedResponse:
    """One line's object → a ``JudgedResponse``; a missing or mistyped field is an error naming it."""

    def bad(key: str, what: str) -> SafealignError:
        return SafealignError(what, file=file, line=line, field=key)

    for key in _REQUIRED:
        if not isinstance(obj.get(key), str):
            raise bad(key, "missing or not a string")
    sample = obj.get("sample")
    if sample is None:
        sample = 0
    elif isinstance(sample, bool) or not isinstance(sample, int):
        raise bad("sample", "expected a whole number")
    for key in _TEXT:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise bad(key, "expected a string or null")
    category = obj.get("category")
    if category is not None and not isinstance(category, str):
        if isinstance(category, (dict, list)):
            raise bad("category", "expected a string or null")
        category = str(category)  # a number as category (user prompt files may have one): its text
    for key in ("safe", "refusal"):
        if obj.get(key) is not None and not isinstance(obj[key], bool):
            raise bad(key, "expected true, false or null")
    score = obj.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise bad("score", "expected a number or null")
    return JudgedResponse(
        id=obj["id"], sample=sample, benchmark=obj.get("benchmark"), expected=obj.get("expected"), category=category,
        prompt=obj["prompt"], response=obj["response"], model=obj.get("model"), judge=obj.get("judge"),
        judge_id=obj.get("judge_id"), safe=obj.get("safe"), refusal=obj.get("refusal"),
        score=None if score is None else float(score), verdict_category=obj.get("verdict_category"),
        extra={k: v for k, v in obj.items() if k not in _KNOWN})


def read_responses(result_dir: str | Path, missing_ok: bool = False) -> list[JudgedResponse]:
    """Every line of ``DIR/responses.jsonl`` (``DIR``: a ``safealign eval`` result dir) as a ``JudgedResponse``.

    A missing dir or file is one error (``missing_ok``: it reads as no responses)."""
    d = Path(result_dir)
    path = d / FILE
    if not path.is_file():
        if missing_ok:
            return []
        if not d.is_dir():
            raise SafealignError("result dir not found", file=str(d))
        raise SafealignError(f"not a result dir (no {FILE}; write one with `safealign eval --out`)", file=str(d))
    return [parse_response(obj, str(path), lineno) for lineno, obj in iter_jsonl(path)]
