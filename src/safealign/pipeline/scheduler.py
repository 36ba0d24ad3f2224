"""Running a plan's stages: skip what is done, resume what was cut, redo what changed; one process or ``jobs`` at once."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from safealign import io
from safealign.errors import SafealignError
from safealign.pipeline.manifest import Manifest, Stage, input_hashes


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One ``safealign run`` per run dir at a time (``io.locked``: released if the process dies)."""
    with io.locked(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        yield


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stage_state(stages: list[Stage], manifest: Manifest) -> dict[str, str]:
    """For each stage: ``done`` (skip it), ``resume`` (cut before the end, same inputs: continue in place),
    ``changed`` (its settings changed), ``stale`` (a stage it depends on is redone, or was redone after it) or
    ``new``; changed and stale stages start over."""
    hashes = input_hashes(stages)
    state: dict[str, str] = {}
    for st in stages:
        rec = manifest.stages.get(st.name)
        if rec is None:
            state[st.name] = "new"
        elif rec.get("input_hash") != hashes[st.name]:
            state[st.name] = "changed"
        elif any(state[d] != "done" or (rec.get("inputs") or {}).get(d) != manifest.stages[d].get("finished")
                 for d in st.deps):
            state[st.name] = "stale"
        elif rec.get("status") == "done" and st.out.exists():
            state[st.name] = "done"
        else:
            state[st.name] = "resume"
    return state


def run_stages(stages: list[Stage], run_dir: Path, manifest: Manifest | None = None,
               log: Callable[[str], None] = _log, jobs: int = 1,
               spawn: Callable[[Stage, Path], subprocess.Popen] | None = None) -> Manifest:
    """Run ``stages``, skipping the finished ones whose input hash is unchanged.

    ``jobs`` > 1 (with ``spawn``, which starts one stage in a child process writing to the given log file) runs up
    to ``jobs`` stages at once as soon as the stages they depend on are done; otherwise they run here, in order.
    """
    manifest = manifest or Manifest(run_dir / "manifest.json")
    hashes = input_hashes(stages)
    state = stage_state(stages, manifest)
    number = {st.name: i for i, st in enumerate(stages, 1)}
    t_run = time.time()

    def head(st: Stage) -> str:
        return f"[{number[st.name]}/{len(stages)}] {st.name}"

    def begin(st: Stage) -> dict[str, Any]:
        rec = dict(manifest.stages.get(st.name, {}))
        if state[st.name] in ("changed", "stale"):
            log(f"{head(st)}: " + ("settings changed" if state[st.name] == "changed" else "an input was redone")
                + ", redoing it")
            _remove(st.out, run_dir)
            rec = {}
        elif state[st.name] == "resume":
            log(f"{head(st)}: resuming")
        else:
            log(f"{head(st)} ...")
        manifest.update(st.name, input_hash=hashes[st.name], status="running", started=time.time(), error=None,
                        outputs=[_rel(st.out, run_dir)], seconds=float(rec.get("seconds", 0.0)),
                        attempts=int(rec.get("attempts", 0)) + 1,
                        inputs={d: manifest.stages[d].get("finished") for d in st.deps})
        return rec

    def end(st: Stage, rec: dict[str, Any], t0: float, cpu: float, error: str | None = None) -> None:
        fields: dict[str, Any] = {"seconds": float(rec.get("seconds", 0.0)) + time.time() - t0}
        if error is None:
            fields.update(status="done", finished=time.time(), cpu_seconds=float(rec.get("cpu_seconds", 0.0)) + cpu)
            log(f"{head(st)}: done in {_fmt_seconds(time.time() - t0)}")
        else:
            fields.update(status="failed", error=error)
        manifest.update(st.name, **fields)

    done = set()
    for st in stages:
        if state[st.name] == "done":
            log(f"{head(st)}: up to date ({manifest.stages[st.name].get('seconds', 0):.1f} s before), skipped")
            done.add(st.name)
    todo = [st for st in stages if st.name not in done]

    if jobs <= 1 or spawn is None:
        for st in todo:
            rec, t0, c0 = begin(st), time.time(), _cpu_seconds()
            try:
                st.action(st.out)
            except BaseException as e:
                end(st, rec, t0, 0.0, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                raise
            end(st, rec, t0, _cpu_seconds() - c0)
    else:
        _run_parallel(todo, done, run_dir, jobs, spawn, begin, end, log)
    log(f"all {len(stages)} stages finished; this run took {_fmt_seconds(time.time() - t_run)}")
    return manifest


def stage_log(run_dir: Path, name: str) -> Path:
    return run_dir / "logs" / f"{name}.log"


def _run_parallel(todo: list[Stage], done: set[str], run_dir: Path, jobs: int,
                  spawn: Callable[[Stage, Path], subprocess.Popen], begin: Callable, end: Callable,
                  log: Callable[[str], None]) -> None:
    """Up to ``jobs`` child processes at once; a stage starts when every stage it depends on is done."""
    running: dict[int, tuple[Stage, dict[str, Any], float, subprocess.Popen]] = {}
    failure: str | None = None
    last_beat = time.time()
    try:
        while todo or running:
            if failure is None:
                for st in list(todo):
                    if len(running) >= jobs:
                        break
                    if all(d in done for d in st.deps):
                        todo.remove(st)
                        rec = begin(st)
                        path = stage_log(run_dir, st.name)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        proc = spawn(st, path)
                        running[proc.pid] = (st, rec, time.time(), proc)
            if not running:
                break  # what is left waits on a failed stage
            time.sleep(0.2)
            for pid in list(running):
                got, status, usage = os.wait4(pid, os.WNOHANG)
                if got == 0:
                    continue
                st, rec, t0, proc = running.pop(pid)
                proc.returncode = code = os.waitstatus_to_exitcode(status)
                if code == 0:
                    end(st, rec, t0, usage.ru_utime + usage.ru_stime)
                    done.add(st.name)
                    continue
                last = _last_line(stage_log(run_dir, st.name))
                end(st, rec, t0, 0.0, f"exit {code}: {last}")
                failure = failure or f"stage {st.name} failed ({last}); its log: {stage_log(run_dir, st.name)}"
                for other in list(running):  # stop the others; a rerun resumes them
                    running[other][3].terminate()
            if running and time.time() - last_beat > 60:
                last_beat = time.time()
                log("  running: " + ", ".join(f"{st.name} ({_fmt_seconds(time.time() - t0)})"
                                              for st, _, t0, _ in running.values()))
    except BaseException:
        for st, rec, t0, proc in running.values():
            proc.terminate()
        for st, rec, t0, proc in running.values():
            proc.wait()
            end(st, rec, t0, 0.0, "interrupted")
        raise
    if failure:
        raise SafealignError(failure)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), to tell work from waiting."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60)} s"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _remove(path: Path, run_dir: Path) -> None:
    """Remove a stage's old outputs, never anything outside the run dir."""
    p, root = path.resolve(), run_dir.resolve()
    if p == root or root not in p.parents:
        raise ValueError(f"refusing to remove {p}: not inside {root}")
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
