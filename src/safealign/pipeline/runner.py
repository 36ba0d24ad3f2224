"""``run``: plan, lock the run dir, write its config and manifest, run the stages (here or in child processes);
``run_one_stage``: what a child process runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from safealign import dryrun, io
from safealign.config import to_dict
from safealign.errors import SafealignError
from safealign.pipeline.config import PIPELINE_VERSION, RunConfig
from safealign.pipeline.manifest import Manifest, Stage, input_hashes
from safealign.pipeline.plan import models_of, plan
from safealign.pipeline.scheduler import _log, run_lock, run_stages, stage_state


def run(cfg: RunConfig, out_dir: str | Path, source: str = "<config>", dry_run: bool = False,
        overwrite: bool = False) -> Path:
    """Run (or resume) the study described by ``cfg`` into ``out_dir``; returns the report's path."""
    run_dir = Path(out_dir)
    stages = plan(cfg, run_dir, source)  # validates everything before any work
    if cfg.jobs < 1:
        raise SafealignError("must be >= 1", file=source, field="jobs")
    if dry_run:
        dryrun.print_plan(stages, stage_state(stages, Manifest(run_dir / "manifest.json")), source, run_dir)  # stdout
        return run_dir / "report.html"
    with run_lock(run_dir):
        manifest = Manifest(run_dir / "manifest.json")
        recorded = (manifest.data.get("config") or {}).get("model")
        if recorded is not None and recorded != cfg.model:
            if not overwrite:
                raise SafealignError(f"holds a study of model '{recorded}', not '{cfg.model}': choose another --out, "
                                     "or pass --overwrite to start over in it", file=str(run_dir), field="model")
            for child in run_dir.iterdir():  # a safealign run dir (it has a manifest): its stages go
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            manifest = Manifest(run_dir / "manifest.json")
        cfg_dict = to_dict(cfg)
        io.write_text(run_dir / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))
        models = models_of(cfg, source)
        manifest.update(None, version=PIPELINE_VERSION, source=source, plan=[s.name for s in stages],
                        config=cfg_dict,
                        models={name: {"method": m["method"], "train": m["train"], "eval": f"eval/{name}",
                                       "n_safety": m["settings"].get("n_safety") if m["method"] == "sit" else None}
                                for name, m in models.items()})
        hashes = input_hashes(stages)
        threads = max(1, _cpu_count() // cfg.jobs)

        def spawn(st: Stage, log_path: Path) -> subprocess.Popen:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            cmd = [sys.executable, "-m", "safealign", "run", "--stage", st.name, "--expect-hash", hashes[st.name],
                   "--out", str(run_dir)]
            with open(log_path, "a") as fh:
                fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
                fh.flush()
                return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

        if cfg.jobs > 1:
            _log(f"{len(stages)} stages, up to {cfg.jobs} at once ({threads} thread(s) each); logs in {run_dir / 'logs'}")
        run_stages(stages, run_dir, manifest, jobs=cfg.jobs, spawn=spawn)
    return run_dir / "report.html"


def run_one_stage(run_dir: str | Path, name: str, expect_hash: str | None = None) -> None:
    """Run stage ``name`` of an existing run dir (its config.yaml), here; what ``jobs`` > 1 starts per stage."""
    run_dir = Path(run_dir)
    manifest = Manifest(run_dir / "manifest.json")
    source = manifest.data.get("source") or str(run_dir / "config.yaml")
    from safealign.config import load_config

    cfg = load_config(RunConfig, run_dir / "config.yaml")
    stages = plan(cfg, run_dir, source)
    by_name = {st.name: st for st in stages}
    if name not in by_name:
        raise SafealignError(f"no stage '{name}' in this run (stages: {', '.join(by_name)})", field="stage")
    if expect_hash and input_hashes(stages)[name] != expect_hash:
        raise SafealignError(f"the run's config.yaml changed under stage '{name}'", file=str(run_dir), field="stage")
    by_name[name].action(by_name[name].out)


def _die_with_parent() -> None:
    """In a stage's child process (Linux): get SIGTERM if the run is killed, so no orphan writes on."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
