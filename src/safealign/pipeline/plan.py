"""From a run config to the list of stages: methods in dependency order, ``@name`` references, judges, evals,
rechecks, comparisons, analyses and the report. Every recipe section is validated here, before anything runs."""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safealign import dryrun
from safealign.config import from_dict, to_dict
from safealign.errors import SafealignError
from safealign.models import inference_precision
from safealign.pipeline.config import METHODS, PIPELINE_KEYS, RunConfig
from safealign.pipeline.manifest import Stage
from safealign.pipeline.stages import (analyze_action, analyze_raft_action, compare_action, eval_action, judge_action,
                                       raft_iters_action, recheck_action, report_action, rm_eval_action, train_action)

# ``@name``: the model dir of ``train/name``; not a number (``union:guard+embedded@0.3``: a cut, not a model)
_REF = re.compile(r"@(?![0-9.]+(?![a-z0-9._-]))([a-z0-9][a-z0-9._-]*)")


def _refs(obj: Any) -> set[str]:
    if isinstance(obj, str):
        return set(_REF.findall(obj))
    if isinstance(obj, dict):
        return set().union(*(_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_refs(v) for v in obj)) if obj else set()
    return set()


def _resolve(obj: Any, dirs: dict[str, Path]) -> Any:
    """Replace ``@name`` by the model dir of ``train/name`` (names not trained in this run are left alone)."""
    if isinstance(obj, str):
        return _REF.sub(lambda m: str(dirs[m.group(1)]) if m.group(1) in dirs else m.group(0), obj)
    if isinstance(obj, dict):
        return {k: _resolve(v, dirs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, dirs) for v in obj]
    return obj


@dataclass
class TrainSpec:
    name: str  # sit-n300, rm, raft, dpo
    method: str
    section: dict[str, Any]  # the recipe's section as written (with @refs), pipeline keys removed
    extra: dict[str, Any]  # pipeline keys (eval_iterations, ...)
    generator: bool  # evaluated as a model (everything but the reward model)


def _method_sections(cfg: RunConfig, source: str) -> list[TrainSpec]:
    specs: list[TrainSpec] = []
    for method in METHODS:
        sec = getattr(cfg.methods, method)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise SafealignError("expected a mapping of the recipe's settings", file=source, field=f"methods.{method}")
        sec = dict(sec)
        extra = {k: sec.pop(k) for k in list(sec) if k in PIPELINE_KEYS}
        if extra.get("enabled", True) is False:
            continue
        if method == "raft" and sec.get("ranker") == "rm":
            sec["ranker"] = "rm:@rm"
        if method == "sit" and isinstance(sec.get("n_safety"), list):
            if not sec["n_safety"] or len(set(sec["n_safety"])) != len(sec["n_safety"]):
                raise SafealignError("a sweep needs distinct values", file=source, field="methods.sit.n_safety")
            for n in sec["n_safety"]:
                specs.append(TrainSpec(f"sit-n{n}", method, {**sec, "n_safety": n}, extra, True))
        elif method == "sit" and "n_safety" in sec:
            specs.append(TrainSpec(f"sit-n{sec['n_safety']}", method, sec, extra, True))
        else:
            specs.append(TrainSpec(method, method, sec, extra, method != "rm"))
    return specs


def _recipe(method: str):
    try:
        return importlib.import_module(f"safealign.recipes.{method}")
    except ModuleNotFoundError as e:
        if e.name == f"safealign.recipes.{method}":
            raise SafealignError(f"this safealign has no '{method}' recipe", field=f"methods.{method}") from None
        raise


def _recipe_config(method: str, section: dict[str, Any], cfg: RunConfig, source: str, prefix: str) -> Any:
    module = _recipe(method)
    names = {f.name for f in dataclasses.fields(module.Config)}
    section = dict(section)
    if "model" in names:
        section.setdefault("model", cfg.model)
    if "seed" in names:
        section.setdefault("seed", cfg.seed)
    return from_dict(module.Config, section, source=source, prefix=prefix)


def _toposort(specs: list[TrainSpec], source: str) -> list[TrainSpec]:
    names = {s.name for s in specs}
    deps = {s.name: _refs(s.section) & names for s in specs}
    for s in specs:
        if s.name in deps[s.name]:
            raise SafealignError(f"'{s.name}' refers to itself", file=source, field=f"methods.{s.method}")
    out: list[TrainSpec] = []
    done: set[str] = set()
    while len(out) < len(specs):
        ready = [s for s in specs if s.name not in done and deps[s.name] <= done]
        if not ready:
            left = sorted(names - done)
            raise SafealignError(f"methods refer to each other in a cycle: {', '.join(left)}", file=source,
                                 field="methods")
        out.append(ready[0])
        done.add(ready[0].name)
    return out


def models_of(cfg: RunConfig, source: str = "<config>") -> dict[str, dict[str, Any]]:
    """The models a run evaluates: {name: {"method", "train" (stage or None), "settings"}} — ``base`` first."""
    models = {"base": {"method": "base", "train": None, "settings": {"model": cfg.model}}}
    for s in _toposort(_method_sections(cfg, source), source):
        if s.generator:
            models[s.name] = {"method": s.method, "train": f"train/{s.name}", "settings": s.section}
    return models


def plan(cfg: RunConfig, run_dir: str | Path, source: str = "<config>") -> list[Stage]:
    """The stages of a run, in order. Every recipe section is validated here, before anything runs."""
    run_dir = Path(run_dir)
    specs = _toposort(_method_sections(cfg, source), source)
    trained = {s.name: s for s in specs}
    dirs = {name: (run_dir / "train" / name).resolve() for name in trained}
    stages: list[Stage] = []

    def deps_of(*objs: Any) -> list[str]:
        return [f"train/{r}" for r in sorted(set().union(*(_refs(o) for o in objs)) & set(trained))]

    for r in sorted(set().union(_refs(cfg.judge), _refs(cfg.helpful_scorer or "")) - set(trained)):
        raise SafealignError(f"'@{r}' is not a model trained in this run (methods: {', '.join(trained) or 'none'})",
                             file=source, field="helpful_scorer" if r in (cfg.helpful_scorer or "") else "judge")

    # The embedded judge ships trained (judges/weights/embedded); where it does not, it trains once per machine
    # (then cached): a stage of its own, first, so that with jobs > 1 it trains while the first method does. Stages
    # that judge do not wait for it: an eval generates first and only then takes the judge (blocking on its lock if
    # it is still training). Their input hash holds the judge's training hash, so a retrained judge redoes them.
    from safealign.judges import union

    def judges_in(spec: Any) -> set[str]:  # a judge spec's judges: a union's members (cuts dropped), or itself
        arg = union.union_arg(spec)
        return {str(spec or "").strip()} if arg is None else {member for member, _ in union.parse(arg)}

    def uses_embedded(spec: Any) -> bool:
        return "embedded" in judges_in(spec)

    def raft_judges(s: Any) -> set[str]:  # a RAFT section's ranker and independent judge (default: guard)
        return {str(s.section.get("ranker") or "").strip(), str(s.section.get("independent_judge", "guard")).strip()}

    raft_with_embedded = {f"train/{s.name}" for s in specs if s.method == "raft" and "embedded" in raft_judges(s)}
    raft_with_guard = {f"train/{s.name}" for s in specs if s.method == "raft" and "guard" in raft_judges(s)}
    needs_judge_stage = uses_embedded(cfg.judge) or uses_embedded(cfg.second_judge) or bool(raft_with_embedded)

    # train
    for s in specs:
        if s.method == "raft" and s.section.get("ranker") == "rm:@rm" and "rm" not in trained:
            raise SafealignError("ranker 'rm' needs methods.rm (the reward model trained in this run)", file=source,
                                 field="methods.raft.ranker")
        for r in sorted(_refs(s.section) - set(trained)):
            if r in METHODS or r.startswith("sit"):
                raise SafealignError(f"'@{r}' is not a model trained in this run (methods: "
                                     f"{', '.join(trained)})", file=source, field=f"methods.{s.method}")
        recipe_cfg = _recipe_config(s.method, _resolve(s.section, dirs), cfg, source, f"methods.{s.method}.")
        module = _recipe(s.method)
        as_written = _recipe_config(s.method, s.section, cfg, source, f"methods.{s.method}.")  # @refs kept: for show
        stages.append(Stage(f"train/{s.name}", {"method": s.method, "section": s.section, "model": cfg.model,
                                                "seed": cfg.seed}, train_action(module, recipe_cfg),
                            dirs[s.name], deps_of(s.section),
                            describe=(lambda m=module, c=as_written: m.describe(c)) if hasattr(module, "describe")
                            else None))

    guard_id = None
    judges_with_guard = "guard" in judges_in(cfg.judge) | judges_in(cfg.second_judge)
    if judges_with_guard or raft_with_guard:
        # the shipped judge: nothing to train; its stage records which weights made the numbers
        from safealign.judges import guard

        guard_id = guard.weights_id()
        for st in stages:
            if st.name in raft_with_guard:
                st.settings["guard_judge"] = guard_id  # new weights redo what they judged
        stages.insert(0, Stage("judge/guard", {"judge": "guard", "weights": guard_id},
                               judge_action("guard"), run_dir / "judge" / "guard", []))
    judge_hash = None
    if needs_judge_stage:  # after the recipe configs are validated: the hash reads the judge's training data
        from safealign.judges import embedded

        judge_hash = embedded.judge_hash()
        for st in stages:
            if st.name in raft_with_embedded:
                st.settings["embedded_judge"] = judge_hash
        stages.insert(0, Stage("judge/embedded", {"judge": "embedded", "training_hash": judge_hash},
                               judge_action("embedded"), run_dir / "judge" / "embedded", []))
    # a union judge: its stage records its members' ids and its measured card (``union.measure``) for the report
    unions = list(dict.fromkeys(str(s).strip() for s in (cfg.judge, cfg.second_judge)
                                if union.union_arg(s) is not None))
    for k, spec in reversed(list(enumerate(unions))):
        name = f"union{k + 1 if k else ''}"
        stages.insert(0, Stage(f"judge/{name}",
                               {"judge": spec, "guard": guard_id if "guard" in judges_in(spec) else None,
                                "embedded": judge_hash if uses_embedded(spec) else None, "cards": union.cards_hash()},
                               judge_action(spec), run_dir / "judge" / name, []))

    # evaluate: the reward model's accuracy, then every generator on every benchmark
    if "rm" in trained:
        re_ = cfg.reward_eval
        stages.append(Stage("eval/rm", {"datasets": re_.datasets, "limit": re_.limit},
                            rm_eval_action(dirs["rm"], re_), run_dir / "eval" / "rm", ["train/rm"]))
    eval_settings = {"benchmarks": cfg.benchmarks, "judge": cfg.judge, "limit": cfg.limit,
                     "generation": to_dict(cfg.generation), "helpful_scorer": cfg.helpful_scorer}
    eval_settings["generation"]["precision"] = inference_precision(cfg.generation.precision)  # auto: by machine
    if uses_embedded(cfg.judge):
        eval_settings["embedded_judge"] = judge_hash
    if judges_with_guard:
        eval_settings["guard_judge"] = guard_id
    eval_deps = deps_of(cfg.judge, cfg.helpful_scorer or "")
    judge, scorer = _resolve(cfg.judge, dirs), _resolve(cfg.helpful_scorer, dirs)
    eval_dirs: dict[str, Path] = {}
    models = ["base"] + [s.name for s in specs if s.generator]
    model_path = {name: cfg.model if name == "base" else str(dirs[name]) for name in models}
    model_ref = {name: cfg.model if name == "base" else f"@{name}" for name in models}  # in the settings hash
    for name in models:
        eval_dirs[name] = run_dir / "eval" / name
        deps = eval_deps + ([] if name == "base" else [f"train/{name}"])
        stages.append(Stage(f"eval/{name}", {**eval_settings, "model": model_ref[name]},
                            eval_action(model_path[name], cfg, judge, scorer), eval_dirs[name], sorted(set(deps)),
                            describe=lambda m=model_ref[name]: dryrun.eval_description(m, cfg)))
    second: dict[str, Path] = {}
    if cfg.second_judge:
        settings2 = {**eval_settings, "judge": cfg.second_judge}
        if uses_embedded(cfg.second_judge):
            settings2["embedded_judge"] = judge_hash
        judge2 = _resolve(cfg.second_judge, dirs)
        for name in models:
            second[name] = run_dir / "recheck" / name
            stages.append(Stage(f"recheck/{name}", {**settings2, "model": model_ref[name]},
                                recheck_action(eval_dirs[name], model_path[name], cfg, judge2),
                                second[name], sorted(set([f"eval/{name}"] + deps_of(cfg.second_judge)))))
    if "raft" in trained and trained["raft"].extra.get("eval_iterations"):
        stages.append(Stage("eval/raft-iters", eval_settings, raft_iters_action(dirs["raft"], cfg, judge, scorer),
                            run_dir / "eval" / "raft-iters", sorted(set(eval_deps + ["train/raft"]))))

    # compare (needs a judge model) and analyze
    default_pairs = [["base", m] for m in models if m != "base"]
    if cfg.compare.judge:
        pairs = cfg.compare.pairs or default_pairs
        for k, pair in enumerate(pairs):
            if len(pair) != 2 or any(m not in eval_dirs for m in pair):
                raise SafealignError(f"a pair names two of: {', '.join(models)}", file=source,
                                     field=f"compare.pairs[{k}]")
        cjudge = _resolve(cfg.compare.judge, dirs)
        for a, b in pairs:
            stages.append(Stage(f"compare/{a}-vs-{b}", {"judge": cfg.compare.judge, "limit": cfg.compare.limit,
                                                        "base_url": cfg.compare.base_url},
                                compare_action(eval_dirs[a], eval_dirs[b], cjudge, cfg.compare),
                                run_dir / "compare" / f"{a}-vs-{b}",
                                sorted(set([f"eval/{a}", f"eval/{b}"] + deps_of(cfg.compare.judge)))))
    if cfg.analyze:
        for a, b in default_pairs:
            stages.append(Stage(f"analyze/{a}-vs-{b}", {}, analyze_action(eval_dirs[a], eval_dirs[b]),
                                run_dir / "analyze" / f"{a}-vs-{b}", [f"eval/{a}", f"eval/{b}"]))
        for a, b in default_pairs if second else []:
            stages.append(Stage(f"analyze2/{a}-vs-{b}", {"judge": cfg.second_judge},
                                analyze_action(second[a], second[b]), run_dir / "analyze2" / f"{a}-vs-{b}",
                                [f"recheck/{a}", f"recheck/{b}"]))
        if "raft" in trained:
            stages.append(Stage("analyze/raft", {}, analyze_raft_action(dirs["raft"]), run_dir / "analyze" / "raft",
                                ["train/raft"]))

    stages.append(Stage("report", {"report": to_dict(cfg.report), "judge": cfg.judge}, report_action(run_dir, cfg),
                        run_dir / "report.html", [s.name for s in stages]))
    return stages
