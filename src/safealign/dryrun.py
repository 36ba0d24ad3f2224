"""``safealign run CONFIG --dry-run``: the plan a GPU user reads before spending hours on it.

Per stage: whether it would run, and for training and evaluation stages the model, the data and its size, the key
settings (LoRA rank, quantization, epochs, lengths, RAFT's T x B x K) and the work it will do (examples, optimizer
steps, tokens). Nothing is loaded or downloaded: data files that are here are read and counted (tokens estimated
at ``recipes.common.CHARS_PER_TOKEN`` characters a token); a dataset that is not here is counted from its
documented size and says so, with its length bounded by ``max_length``. Each recipe describes its own stage
(``describe(cfg)`` in ``recipes/<method>.py``); the evaluation stages are described here.
"""

from __future__ import annotations

from typing import Any

from safealign.data import registry
from safealign.errors import SafealignError


def eval_description(model: str, cfg: Any) -> dict[str, str]:
    """An ``eval/<model>`` stage: its benchmarks and prompt counts, generation settings and judge."""
    from safealign.recipes.common import human_count

    parts, total, known = [], 0, True
    for name in registry.expand_benchmarks(cfg.benchmarks):
        try:
            info = registry.peek(name, "benchmark")
        except SafealignError as e:
            info = {"n": None, "where": f"missing: {e.message}"}
        n = info["n"]
        if n is not None and cfg.limit:
            n = min(n, 2 * cfg.limit if registry.split_name(name)[0] == "xstest" else cfg.limit)  # XSTest: N a half
        if n is None:
            known = False
        total += n or 0
        here = "" if info["where"] in (name, registry.split_name(name)[0]) else f" ({info['where']})"
        parts.append(f"{name} {n if n is not None else '?'}{here}")
    g = cfg.generation
    sampling = "greedy" if g.temperature == 0 else f"temperature {g.temperature:g}, top-p {g.top_p:g}"
    scorer = f"; helpfulness reward {cfg.helpful_scorer}" if cfg.helpful_scorer else ""
    return {"model": model, "data": ", ".join(parts),
            "settings": f"<= {g.max_new_tokens} new tokens, {sampling}, batch {g.batch_size}, precision {g.precision}; "
                        f"judge {cfg.judge}{scorer}",
            "work": f"{total:,} prompts{'' if known else ' and more'}, <= {human_count(total * g.max_new_tokens)} new "
                    f"tokens, {total:,} verdicts"}


def print_plan(stages: list[Any], state: dict[str, str], source: str, run_dir: Any, say=print) -> None:
    """One block per stage: its state, then the description lines of stages that have one."""
    say(f"plan of {source} -> {run_dir}: {len(stages)} stages (dry run: nothing is loaded or run)")
    for i, st in enumerate(stages, 1):
        what = "up to date" if state[st.name] == "done" else f"would run ({state[st.name]})"
        say(f"[{i}/{len(stages)}] {st.name}: {what}")
        info = st.describe() if st.describe else {}
        for key in ("model", "data", "settings", "work"):
            if info.get(key):
                say(f"    {key:<9}{info[key]}")
