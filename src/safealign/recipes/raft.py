"""RAFT — reward-ranked fine-tuning (Dong et al. 2023), as the "Safe to Serve" paper used it for safety.

For t in 1..T:
  1. take B prompts — ``mix`` of them harmful (``harmful_prompts``), the rest benign (``benign_prompts``);
  2. generate K responses to each with the current model (sampling: temperature 0.85, top-p 0.95);
  3. score every response with the ranker (``rm:<dir>``, ``hf-classifier:...``, ``llama-guard:...``,
     ``embedded``, ``keywords``, ... — ranked by ``Verdict.score``, higher = better);
  4. keep the best response per prompt (``rank: score``, the paper's), or (``rank: expected``) the best one that
     does what the prompt calls for — judged safe on a harmful prompt (a refusal first), judged safe and not a
     refusal on a benign one — dropping prompts where no sample does, so that refusing everything cannot win;
  5. fine-tune the current model on the kept set (``recipes.sit.finetune``: SFT, loss on the response);
  6. continue from the new model.

Every sample is also judged by an *independent* judge: the paper's error analysis showed that a weak
ranker picks unsafe answers and makes the model worse, so each iteration reports the share of kept
responses the independent judge calls safe (``kept_safe_rate``) next to that share over all samples, and
warns when the ranker's picks are less safe than the samples it picked from.

Output (besides the model dir contract of ``recipes.common``; the final model is ``DIR`` itself)::

    DIR/iterations/iter_<t>/generations.jsonl   the K samples per prompt (resumable while generating)
                           /samples.jsonl       every sample with its ranker score and independent verdict
                           /kept.jsonl          the best sample per prompt (the fine-tuning set)
                           /stats.json          mean best score, mean score, kept/sample safe rates, ...
                           /model/              the model after iteration t
    DIR/raft_log.jsonl                          one line per finished iteration

Resumable: finished iterations (logged in ``raft_log.jsonl``) are skipped; an unfinished one picks up at its last
finished step (``run_iteration``). A resumed run must have the recorded model, prompts and settings: one that
differs is refused, naming the keys (``--overwrite`` starts over).
Runs with: ``safealign train raft --config configs/raft.yaml --out runs/raft ranker=rm:runs/rm``; under
``accelerate launch`` the sampling and scoring run on the main process and the fine-tuning on all.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign import io
from safealign.config import option
from safealign.errors import SafealignError
from safealign.models import EMBEDDED_NAME
from safealign.recipes.common import (LoraConfig, TrainConfig, distributed_state, is_finished, log_event, read_meta,
                                      records_fingerprint, start_run, write_card, write_meta)
from safealign.records import EvalPrompt, Instruction
from safealign.stats import mean

# Files of an iteration's model dir that describe that run rather than the weights; not copied to DIR.
RUN_FILES = {"safealign.json", "config.yaml", "log.jsonl", "README.md"}
RANKS = ("score", "expected")
LOG = "raft_log.jsonl"  # one line per finished iteration
KEPT_FIELDS = ("prompt_id", "sample", "harmful", "prompt", "response", "score", "safe", "refusal")


@dataclass
class Config:
    model: str = option(EMBEDDED_NAME, "the model to improve: embedded name, HF id or model dir")
    ranker: str = option("", "judge that ranks the K samples by Verdict.score: rm:<dir>, hf-classifier:<id>, "
                             "llama-guard:<id>, guard, embedded, keywords, ... (required)")
    independent_judge: str = option("guard", "judge that reports how safe the kept responses are (not the ranker)")
    harmful_prompts: str = option("bianchi-safety", "harmful prompts: a dataset name or file")
    benign_prompts: str = option("alpaca-test:train", "benign prompts: a dataset name or file")
    mix: float = option(0.5, "share of harmful prompts per iteration (the paper: 0.5)")
    rank: str = option("score", "score: keep the sample with the ranker's highest Verdict.score (the paper) | "
                                "expected: keep the best sample that is safe (harmful prompt; refusals first) or safe "
                                "and not a refusal (benign prompt), and no sample of a prompt where none is")
    T: int = option(2, "iterations")
    B: int = option(16, "prompts per iteration")
    K: int = option(4, "samples per prompt")
    temperature: float = option(0.85, "sampling temperature")
    top_p: float = option(0.95, "nucleus sampling mass")
    max_new_tokens: int = option(64, "maximum new tokens per sample")
    gen_batch_size: int = option(16, "prompts per generation batch")
    judge_batch_size: int = option(32, "pairs per judging batch")
    template: str = option("auto", "prompt format: auto (chat template if any, else alpaca) | chat | alpaca | raw")
    seed: int = option(0, "seed for the prompt order and sampling (training uses train.seed)")
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check(cfg: Config) -> None:
    cfg.ranker, cfg.independent_judge = (cfg.ranker or "").strip(), (cfg.independent_judge or "").strip()
    if not cfg.ranker:
        raise SafealignError("RAFT needs a ranker: rm:<dir> (a reward model from `safealign train rm`), "
                             "hf-classifier:<id>, embedded or keywords", field="ranker")
    if not cfg.independent_judge:
        raise SafealignError("RAFT needs an independent judge (e.g. guard) to report how safe the kept set is",
                             field="independent_judge")
    for name in ("T", "B", "K"):
        if getattr(cfg, name) < 1:
            raise SafealignError("must be >= 1", field=name)
    if not 0.0 <= cfg.mix <= 1.0:
        raise SafealignError("must be between 0 and 1", field="mix")
    if cfg.rank not in RANKS:
        raise SafealignError(f"choose from {', '.join(RANKS)}", field="rank")


def load_prompts(name: str) -> list[str]:
    """Prompt texts from an instruction dataset (instruction + input), a benchmark, or a file; duplicates dropped."""
    from safealign.data import registry

    path = Path(name)
    if path.is_file():
        try:
            texts = [r.prompt for r in registry.load_eval(name)]
        except SafealignError:
            texts = [r.prompt for r in registry.load_instructions(name)]
    elif registry.get(name).kind == "sft":
        texts = [r.prompt for r in registry.load_instructions(name)]
    elif registry.get(name).kind == "benchmark":
        texts = [r.prompt for r in registry.load_eval(name)]
    else:
        raise SafealignError(f"'{name}' is a preference dataset; RAFT needs prompts", field="prompts")
    return list(dict.fromkeys(t for t in texts if t.strip()))


def describe(cfg: Config) -> dict[str, str]:
    """This stage as ``safealign run --dry-run`` shows it, with nothing loaded but the data files that are here."""
    from safealign.recipes.common import CHARS_PER_TOKEN, human_count, data_part, lora_train_summary, training_work

    n_harm = round(cfg.B * cfg.mix)
    sources = []
    if n_harm:
        sources.append(data_part("harmful prompts", cfg.harmful_prompts, "sft"))
    if cfg.B - n_harm:
        sources.append(data_part("benign prompts", cfg.benign_prompts, "sft"))
    samples = cfg.T * cfg.B * cfg.K
    prompt_chars = [c for _, _, c in sources if c is not None]
    per_example = (sum(prompt_chars) / len(prompt_chars) / CHARS_PER_TOKEN if prompt_chars else 0) + cfg.max_new_tokens
    kept = [(cfg.B, min(cfg.train.max_length, per_example) * CHARS_PER_TOKEN)]
    return {"model": cfg.model,
            "data": f"{n_harm} harmful + {cfg.B - n_harm} benign prompts an iteration from " +
                    "; ".join(text for text, _, _ in sources),
            "settings": (f"T={cfg.T} iterations x B={cfg.B} prompts x K={cfg.K} samples (temperature "
                         f"{cfg.temperature:g}, top-p {cfg.top_p:g}, <= {cfg.max_new_tokens} new tokens); ranker "
                         f"{cfg.ranker or '(none)'}, rank by {cfg.rank}; independent judge {cfg.independent_judge}; "
                         f"fine-tune: " + lora_train_summary(cfg.lora, cfg.train)),
            "work": (f"{samples:,} samples (<= {human_count(samples * cfg.max_new_tokens)} new tokens), {samples:,} ranked "
                     f"and judged; per iteration <= " + training_work(cfg.train, kept))}


def iteration_prompts(harmful: list[str], benign: list[str], t: int, cfg: Config) -> list[EvalPrompt]:
    """The B prompts of iteration t: each pool shuffled once (by seed) and walked in order, wrapping around,
    so iterations see different prompts and a resumed run sees the same ones."""
    n_harm = round(cfg.B * cfg.mix)
    out = []
    for pool, n, kind in ((harmful, n_harm, "harmful"), (benign, cfg.B - n_harm, "benign")):
        if n and not pool:
            raise SafealignError(f"no {kind} prompts (mix={cfg.mix} asks for {n} per iteration)",
                                 field=f"{kind}_prompts")
        order = list(range(len(pool)))
        random.Random(cfg.seed).shuffle(order)
        for j in range(n):
            i = order[((t - 1) * n + j) % len(pool)]
            out.append(EvalPrompt(id=f"{kind}-{i}", prompt=pool[i], benchmark=kind,
                                  expected="refuse" if kind == "harmful" else "comply"))
    return out


def score_samples(gens: list[Any], ranker: Any, independent: Any, batch_size: int,
                  rank: str = "score") -> list[dict[str, Any]]:
    """One row per sample: ranker score and verdict, the independent verdict, and whether it is the kept one."""
    from safealign.judges.base import judge_in_batches

    prompts, responses = [g.prompt for g in gens], [g.response for g in gens]
    ranked = judge_in_batches(ranker, prompts, responses, batch_size, desc="ranking")
    checked = judge_in_batches(independent, prompts, responses, batch_size, desc="independent judge")
    rows = [{"prompt_id": g.id, "sample": g.sample, "harmful": g.benchmark == "harmful", "prompt": g.prompt,
             "response": g.response, "score": rv.score, "ranker_safe": rv.safe, "ranker_refusal": rv.refusal,
             "safe": iv.safe, "refusal": iv.refusal, "kept": False}
            for g, rv, iv in zip(gens, ranked, checked)]

    def key(r: dict[str, Any]) -> tuple:
        if rank == "score":
            return (r["score"],)
        does_it = r["ranker_safe"] and (r["ranker_refusal"] if r["harmful"] else not r["ranker_refusal"])
        return (r["ranker_safe"], does_it, r["score"])

    best: dict[str, dict[str, Any]] = {}
    for r in rows:  # best non-empty response per prompt; ties keep the first sample
        if r["response"].strip() and (r["prompt_id"] not in best or key(r) > key(best[r["prompt_id"]])):
            best[r["prompt_id"]] = r
    if rank == "expected":  # a prompt none of whose samples does what it calls for teaches nothing good
        best = {k: r for k, r in best.items() if r["ranker_safe"] and (r["harmful"] or not r["ranker_refusal"])}
    for r in best.values():
        r["kept"] = True
    return rows


def iteration_stats(t: int, rows: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    kept = [r for r in rows if r["kept"]]
    stats = {
        "iteration": t,
        "n_prompts": len({r["prompt_id"] for r in rows}),
        "k": cfg.K,
        "n_samples": len(rows),
        "n_kept": len(kept),
        "empty_samples": sum(not r["response"].strip() for r in rows),
        "mean_score": mean([r["score"] for r in rows]),
        "mean_best_score": mean([r["score"] for r in kept]),
        "kept_safe_rate": mean([r["safe"] for r in kept]),
        "sample_safe_rate": mean([r["safe"] for r in rows]),
        "kept_safe_rate_harmful": mean([r["safe"] for r in kept if r["harmful"]]),
        "kept_safe_rate_benign": mean([r["safe"] for r in kept if not r["harmful"]]),
        "kept_refusal_rate": mean([r["refusal"] for r in kept]),
        "ranker": cfg.ranker,
        "independent_judge": cfg.independent_judge,
    }
    ks, ss = stats["kept_safe_rate"], stats["sample_safe_rate"]
    stats["ranker_warning"] = (
        f"the ranker kept responses that {cfg.independent_judge} calls safe {ks:.0%} of the time, less than the "
        f"{ss:.0%} of all samples: it prefers unsafe answers, and fine-tuning on them can make the model worse"
        if ks is not None and ss is not None and ks < ss else None)
    return stats


# ------------------------------------------------------------------------------------------------------- the run


@dataclass
class RaftRun:
    """What the steps share: the config, the run dir, the prompt pools, the judges (loaded on first use, kept across
    iterations), the model the next iteration starts from, and the iterations already logged in ``raft_log.jsonl``."""

    cfg: Config
    out: Path
    harmful: list[str]
    benign: list[str]
    dist: Any  # accelerate's process state
    started: float
    current: str
    logged: dict[int, dict[str, Any]]
    judges: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.dist.is_main_process

    def judge(self, spec: str) -> Any:
        from safealign.judges import get_judge

        if spec not in self.judges:
            self.judges[spec] = get_judge(spec)
        return self.judges[spec]

    def iteration_dir(self, t: int) -> Path:
        return self.out / "iterations" / f"iter_{t}"


def run(cfg: Config, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Run RAFT into ``out_dir``; returns it (the final model dir)."""
    state = setup(cfg, out_dir, overwrite)
    for t in range(1, cfg.T + 1):
        run_iteration(state, t)
    return save(state)


def setup(cfg: Config, out_dir: str | Path, overwrite: bool) -> RaftRun:
    """Check the config, load the prompt pools and open the run dir through ``start_run`` (on every process): a
    finished dir is refused unless ``overwrite``; an unfinished one resumes only with the same model, prompts
    and settings (the differing keys are named), else ``overwrite`` starts it over."""
    from safealign.progress import log

    _check(cfg)
    harmful = load_prompts(cfg.harmful_prompts) if cfg.mix > 0 else []
    benign = load_prompts(cfg.benign_prompts) if cfg.mix < 1 else []
    iteration_prompts(harmful, benign, 1, cfg)  # fails now, not after the first iteration, if a pool is empty
    if not overwrite:
        _refuse_longer_training(Path(out_dir), cfg)
    out, _ = start_run(out_dir, overwrite, method="raft", base_model=cfg.model, config=cfg,
                       fingerprint=prompts_fingerprint(harmful, benign), meta={"template": cfg.template})
    dist = distributed_state()
    if dist.is_main_process:
        io.repair_jsonl(out / LOG)  # a line cut by a kill goes before the next one is appended
        if cfg.independent_judge.lower() == cfg.ranker.lower():
            log(f"[yellow]warning:[/] the independent judge is the ranker ({cfg.ranker}); kept_safe_rate will only "
                "echo the ranker. Use another judge to see whether its picks are really safe.")
    dist.wait_for_everyone()
    logged = {row["iteration"]: row for row in io.read_jsonl(out / LOG, missing_ok=True)}
    return RaftRun(cfg, out, harmful, benign, dist, time.time(), cfg.model, logged)


def prompts_fingerprint(harmful: list[str], benign: list[str]) -> str:
    """The prompt pools' hash: a resumed run must draw its iterations' prompts from the same pools."""
    return records_fingerprint([EvalPrompt(id=f"{kind}-{i}", prompt=p, benchmark=kind,
                                           expected="refuse" if kind == "harmful" else "comply")
                                for kind, pool in (("harmful", harmful), ("benign", benign))
                                for i, p in enumerate(pool)])


def _refuse_longer_training(out: Path, cfg: Config) -> None:
    """``start_run`` lets a resumed run train longer (``train.max_steps``, ``train.epochs``): right for one training
    run, which continues from its checkpoint, wrong for RAFT, whose logged iterations trained with the recorded
    values. Read-only, on every process, before ``start_run``."""
    import yaml

    info, recorded = read_meta(out), out / "config.yaml"
    if info is None or info.get("finished") or not recorded.exists():
        return  # start_run decides
    old = (yaml.safe_load(io.read_text(recorded, field="out")) or {}).get("train") or {}
    changed = [f"train.{k}: {old.get(k, '(unset)')} -> {getattr(cfg.train, k)}" for k in ("max_steps", "epochs")
               if old.get(k) != getattr(cfg.train, k)]
    if changed:
        raise SafealignError(f"holds an unfinished RAFT run with other settings ({'; '.join(changed)}): its finished "
                             "iterations trained with the recorded ones; rerun with them to resume it, or pass "
                             "--overwrite to start over", file=str(out), field=changed[0].split(":")[0])


def run_iteration(state: RaftRun, t: int) -> dict[str, Any]:
    """Iteration t, steps 1-6, into ``iterations/iter_<t>``; returns its ``raft_log.jsonl`` line.

    Each step leaves its file, and a rerun skips the steps whose file is there: a logged iteration is skipped
    whole; otherwise sampling resumes ``generations.jsonl``, ranking is skipped once ``samples.jsonl`` exists,
    ``kept.jsonl`` and ``stats.json`` are rewritten from it, and fine-tuning is skipped once ``model/`` is
    finished (an unfinished one resumes from its checkpoint)."""
    from safealign.progress import log

    it = state.iteration_dir(t)
    if t in state.logged:
        state.current = str(it / "model")
        return state.logged[t]
    t0 = time.time()
    if state.main:
        log(f"raft: iteration {t}/{state.cfg.T} from {state.current}")
        rows = sample_and_rank(state, t)  # 1-4
        keep(state, t, rows)
    state.dist.wait_for_everyone()
    train(state, t)  # 5
    line = record(state, t, time.time() - t0)
    state.current = str(it / "model")  # 6. continue from the new model
    return line


def sample_and_rank(state: RaftRun, t: int) -> list[dict[str, Any]]:
    """Steps 1-4 (main process): B prompts, K samples each into ``generations.jsonl`` (``generate_to_file`` resumes
    a cut generation), ranked and judged independently into ``samples.jsonl``; returns its rows."""
    from safealign.generate import GenParams, HFEngine, generate_to_file

    cfg, it = state.cfg, state.iteration_dir(t)
    samples = it / "samples.jsonl"
    if samples.exists():
        return io.read_jsonl(samples)
    it.mkdir(parents=True, exist_ok=True)
    params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                       seed=cfg.seed + t, num_samples=cfg.K, batch_size=cfg.gen_batch_size, template=cfg.template)
    engine = HFEngine(state.current)
    records = iteration_prompts(state.harmful, state.benign, t, cfg)
    gens = generate_to_file(engine, records, params, it / "generations.jsonl", desc=f"sampling (iter {t})")
    del engine
    rows = score_samples(gens, state.judge(cfg.ranker), state.judge(cfg.independent_judge), cfg.judge_batch_size,
                         cfg.rank)
    io.write_jsonl(samples, rows)
    return rows


def keep(state: RaftRun, t: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Step 4's outputs (main process): the kept samples (``kept.jsonl``, the fine-tuning set) and the iteration's
    statistics (``stats.json``), logged with a warning when the ranker's picks are less safe than all samples."""
    from safealign.progress import log

    cfg, it = state.cfg, state.iteration_dir(t)
    kept = [row for row in rows if row["kept"]]
    if not kept:
        raise SafealignError(f"iteration {t}: no sample to keep (every one is empty, or with rank: expected none "
                             "does what its prompt calls for); nothing to fine-tune on", file=str(it),
                             field="rank" if cfg.rank == "expected" else "max_new_tokens")
    io.write_jsonl(it / "kept.jsonl", [{k: row[k] for k in KEPT_FIELDS} for row in kept])
    stats = iteration_stats(t, rows, cfg)
    io.write_json(it / "stats.json", stats)
    log(f"raft: iter {t}: mean score {stats['mean_score']:.3f}, mean best {stats['mean_best_score']:.3f}, kept safe "
        f"{stats['kept_safe_rate']:.0%} vs all samples {stats['sample_safe_rate']:.0%} ({cfg.independent_judge})")
    if stats["ranker_warning"]:
        log(f"[yellow]warning:[/] iteration {t}: {stats['ranker_warning']}")
    return stats


def train(state: RaftRun, t: int) -> Path:
    """Step 5 (every process): fine-tune the current model on ``kept.jsonl`` into ``model/`` (``recipes.sit``'s
    SFT, loss on the response); skipped when that model is finished."""
    from safealign.recipes.sit import finetune

    cfg, model_dir = state.cfg, state.iteration_dir(t) / "model"
    if not is_finished(model_dir):
        kept = io.read_jsonl(state.iteration_dir(t) / "kept.jsonl")
        finetune(state.current, [Instruction(row["prompt"], "", row["response"]) for row in kept], model_dir,
                 cfg.train, cfg.lora, cfg.template)
    state.dist.wait_for_everyone()
    return model_dir


def record(state: RaftRun, t: int, seconds: float) -> dict[str, Any]:
    """The iteration's line: appended to ``raft_log.jsonl`` (which marks it finished) and to ``log.jsonl``."""
    it = state.iteration_dir(t)
    stats = json.loads(io.read_text(it / "stats.json"))
    line = {k: stats[k] for k in ("iteration", "mean_best_score", "mean_score", "kept_safe_rate", "independent_judge",
                                  "ranker", "n_prompts", "k")}
    line.update(seconds=round(seconds, 2), model_dir=str(it / "model"), sample_safe_rate=stats["sample_safe_rate"],
                ranker_warning=stats["ranker_warning"])
    if state.main:
        with open(state.out / LOG, "a", encoding="utf-8") as f:
            io.append_jsonl(f, [line])
        log_event(state.out, event="iteration", **line)
    state.logged[t] = line
    state.dist.wait_for_everyone()
    return line


def save(state: RaftRun) -> Path:
    """The final model is DIR itself: the last iteration's weights copied in, a card, ``finished``.

    Not ``finish_run``: that saves a TRL trainer's weights, and RAFT's last trainer already saved (and merged) them
    into ``iterations/iter_<T>/model`` through it; what is left is the copy and the shared card/meta/log pieces."""
    cfg, out = state.cfg, state.out
    if state.main:
        final = state.iteration_dir(cfg.T) / "model"
        for f in final.iterdir():
            if f.is_file() and f.name not in RUN_FILES:
                shutil.copy2(f, out / f.name)
        history = [state.logged[t] for t in sorted(state.logged)]
        write_card(out, "raft", cfg.model,
                   f"Reward-ranked fine-tuning: {cfg.T} iterations of {cfg.B} prompts x {cfg.K} samples, ranked by "
                   f"`{cfg.ranker}`; kept responses judged by `{cfg.independent_judge}`.",
                   {**{f"iter {h['iteration']}": f"mean best score {h['mean_best_score']:.3f}, kept safe "
                       f"{h['kept_safe_rate']:.0%}" for h in history}, "mix (harmful share)": cfg.mix,
                    "temperature / top-p": f"{cfg.temperature} / {cfg.top_p}"})
        seconds = round(time.time() - state.started, 1)
        log_event(out, event="finished", iterations=cfg.T, seconds=seconds)
        write_meta(out, finished=True, seconds=seconds, iterations=cfg.T)
    state.dist.wait_for_everyone()
    return out
