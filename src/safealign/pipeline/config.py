"""The run config (``RunConfig``: what ``configs/*.yaml`` hold) and its sections; ``load_run_config``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.config import option
from safealign.generate import GenParams
from safealign.judges.union import DEFAULT as DEFAULT_JUDGE

PIPELINE_VERSION = 1  # part of every input hash; bump when a stage's meaning changes
METHODS = ("sit", "rm", "raft", "dpo")  # the order they train in, unless references say otherwise
PIPELINE_KEYS = {"enabled", "eval_iterations"}  # keys of a method section the pipeline reads, not the recipe


@dataclass
class Methods:
    sit: dict[str, Any] | None = option(None, "SIT (safealign.recipes.sit.Config); n_safety may be a list: one model "
                                              "per value (the sweep). enabled: false skips it")
    rm: dict[str, Any] | None = option(None, "reward model (safealign.recipes.rm.Config)")
    raft: dict[str, Any] | None = option(None, "RAFT (safealign.recipes.raft.Config); ranker: rm = the reward model "
                                               "of this run; eval_iterations: true evaluates every iteration")
    dpo: dict[str, Any] | None = option(None, "DPO (safealign.recipes.dpo.Config)")


@dataclass
class CompareConfig:
    judge: str | None = option(None, "pairwise judge (a judge model, e.g. openai:<model>); unset: no compare stages")
    pairs: list[list[str]] | None = option(None, "model pairs [a, b]; default: base vs every trained model")
    limit: int | None = option(None, "compare at most N prompts per pair")
    base_url: str | None = option(None, "OpenAI-compatible server for an openai:<model> judge")
    api_key_env: str = option("OPENAI_API_KEY", "environment variable holding that server's API key")


@dataclass
class RewardEval:
    datasets: list[str] = option(["pku-safe-pairs:test", "hh-harmless"], "preference sets for the RM's accuracy")
    limit: int | None = option(None, "first N pairs of each set")


@dataclass
class ReportConfig:
    examples: int = option(5, "prompts shown side by side (base vs each method)")
    title: str | None = option(None, "report title (default: the config file's name)")


@dataclass
class RunConfig:
    model: str = option("smollm2-135m-instruct", "base model: embedded name, HF id, model dir or .gguf")
    seed: int = option(0, "seed for every method and for sampling, unless a section sets its own")
    judge: str = option(DEFAULT_JUDGE, f"safety judge for every eval: {DEFAULT_JUDGE} (both shipped judges: "
                        "harmful when either finds it so, unless it is degenerate text or a short plain decline; a "
                        "refusal when both do or a safe answer is off-topic), "
                        "guard, embedded, keywords, hf-classifier:M, llama-guard:M, openai:M, rm:DIR or "
                        "union:J1+J2[@S] (src/safealign/judges/)")
    second_judge: str | None = option(None, "a second safety judge that re-reads every eval's answers (nothing is "
                                            "generated again); the report shows each method's effect under both, so "
                                            "that a method trained against `judge` (RAFT ranked by it) is also seen "
                                            "by a judge it was not trained against")
    helpful_scorer: str | None = option(None, "reward scorer for helpfulness, e.g. rm:@rm (the RM of this run)")
    benchmarks: str = option("harm,xstest,benign,helpful", "benchmarks and groups to evaluate every model on")
    limit: int | None = option(None, "first N prompts of each benchmark (XSTest: N of each half)")
    generation: GenParams = field(default_factory=GenParams, metadata={"help": "generation settings for evals"})
    methods: Methods = field(default_factory=Methods, metadata={"help": "methods to train"})
    compare: CompareConfig = field(default_factory=CompareConfig, metadata={"help": "pairwise comparisons"})
    analyze: bool = option(True, "write confusion tables / flips for base vs every method, and RAFT's iterations")
    reward_eval: RewardEval = field(default_factory=RewardEval, metadata={"help": "reward-model accuracy"})
    report: ReportConfig = field(default_factory=ReportConfig, metadata={"help": "report settings"})
    jobs: int = option(1, "stages run at once, each in its own process with cores/jobs threads (on a small CPU, 2 "
                          "finishes a run sooner than 1 process using both cores); logs go to DIR/logs/")


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    from safealign.config import load_config

    return load_config(RunConfig, path, overrides)
