"""The Judge interface and registry.

A judge is one small module with a class that has ``name`` and
``judge(prompts, responses) -> list[Verdict]``; it registers a factory under a short name:

    @register("keywords")
    def make(arg: str | None) -> Judge: ...

``get_judge("hf-classifier:OpenAssistant/reward-model-deberta-v3-large-v2")`` imports the module that owns
the name (``MODULES`` below) and calls its factory with the text after the first colon.

To add a judge: copy a sibling module, register a new name, and add it to ``MODULES``.

Pairwise judges (a prompt and two answers → which is better; ``safealign compare``) have their own registry in
``pairwise.py``: ``get_pairwise_judge("hf:<model>" | "openai:<model>" | "<model spec>", base_url=, api_key_env=,
timeout=)``; register one there with ``@register_pairwise("name")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol

from safealign.errors import SafealignError
from safealign.records import Verdict


class Judge(Protocol):
    name: str  # the full spec, e.g. "embedded" or "llama-guard:meta-llama/Llama-Guard-3-1B"; reports print it

    def judge(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, response) pair, in order."""


MODULES: dict[str, str] = {
    "guard": "safealign.judges.guard",
    "keywords": "safealign.judges.keywords",
    "embedded": "safealign.judges.embedded",
    "hf-classifier": "safealign.judges.hf_classifier",
    "llama-guard": "safealign.judges.llama_guard",
    "openai": "safealign.judges.openai_judge",
    "rm": "safealign.judges.reward_model",
    "union": "safealign.judges.union",
}

_FACTORIES: dict[str, Callable[[str | None], Judge]] = {}


def register(name: str) -> Callable[[Callable[[str | None], Judge]], Callable[[str | None], Judge]]:
    def deco(factory: Callable[[str | None], Judge]) -> Callable[[str | None], Judge]:
        _FACTORIES[name] = factory
        return factory

    return deco


def get_judge(spec: str) -> Judge:
    """``name[:arg]`` → a ready judge. Unknown names are a user error listing the known ones."""
    name, _, arg = (spec or "").partition(":")
    name = name.strip().lower()
    if name not in MODULES:
        raise SafealignError(f"unknown judge '{spec}' (known: {', '.join(MODULES)})", field="judge")
    if name not in _FACTORIES:
        importlib.import_module(MODULES[name])
    return _FACTORIES[name](arg.strip() or None)


def judge_in_batches(judge: Judge, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32,
                     desc: str = "judging") -> list[Verdict]:
    """Run ``judge`` over many pairs with a progress bar."""
    from safealign.progress import progress_bar

    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    out: list[Verdict] = []
    with progress_bar() as bar:
        task = bar.add_task(f"{desc} ({judge.name})", total=len(prompts))
        for i in range(0, len(prompts), batch_size):
            out += judge.judge(prompts[i:i + batch_size], responses[i:i + batch_size])
            bar.advance(task, len(prompts[i:i + batch_size]))
    return out
