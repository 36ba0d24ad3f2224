"""A run's stages and its manifest (``DIR/manifest.json``): what ran, with which inputs, and how it ended."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign import io
from safealign.errors import SafealignError
from safealign.pipeline.config import PIPELINE_VERSION


@dataclass
class Stage:
    """One step of a run: ``action(out)`` writes into ``out``; ``settings`` (+ deps' hashes) is its input hash."""

    name: str
    settings: dict[str, Any]
    action: Callable[[Path], Any]
    out: Path
    deps: list[str] = field(default_factory=list)
    describe: Callable[[], dict[str, str]] | None = None  # what `run --dry-run` prints of it (safealign.dryrun)


class Manifest:
    """``DIR/manifest.json``, rewritten atomically on every change::

        {"version", "source" (the config file), "config" (resolved), "plan": [stage, ...] (this run's, in order),
         "models": {name: {"method", "train" (stage or null), "eval" (stage), "n_safety"}},
         "stages": {stage: {"input_hash", "status": running|failed|done, "outputs": [paths in DIR], "seconds",
                            "cpu_seconds", "attempts", "started", "finished", "error",
                            "inputs": {dependency: its "finished" when this stage started}}}}
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"version": PIPELINE_VERSION, "stages": {}}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except ValueError:
                raise SafealignError("corrupt run manifest; remove it to start over", file=str(path)) from None
            self.data.setdefault("stages", {})

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def update(self, stage: str | None = None, **fields: Any) -> None:
        if stage is None:
            self.data.update(fields)
        else:
            self.stages.setdefault(stage, {}).update(fields)
        io.write_json(self.path, self.data)


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_hashes(stages: list[Stage]) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for st in stages:
        missing = [d for d in st.deps if d not in hashes]
        if missing:
            raise ValueError(f"stage {st.name} depends on {missing}, which do not come before it")
        hashes[st.name] = stable_hash({"v": PIPELINE_VERSION, "stage": st.name, "settings": st.settings,
                                       "deps": {d: hashes[d] for d in st.deps}})
    return hashes
