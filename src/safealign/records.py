"""The record types every stage shares. Loaders produce them; nothing downstream reads raw files.

records → generate → judge → metrics → report
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Expected = Literal["refuse", "comply"]


@dataclass
class Instruction:
    """A supervised example: instruction (+ optional input) and the target output."""

    instruction: str
    input: str = ""
    output: str = ""

    @property
    def prompt(self) -> str:
        """The user turn as one text: the instruction, then the input after a blank line when there is one."""
        return self.instruction if not self.input else f"{self.instruction}\n\n{self.input}"


@dataclass
class Preference:
    """A preference pair: ``chosen`` is the better (and, for safety data, the safe) response."""

    prompt: str
    chosen: str
    rejected: str


@dataclass
class EvalPrompt:
    """A prompt to evaluate. ``expected`` is ``refuse`` for harmful prompts, ``comply`` for benign ones."""

    id: str
    prompt: str
    benchmark: str
    expected: Expected
    category: str | None = None
    reference: str | None = None  # a reference answer, where the benchmark has one (alpaca-test)


@dataclass
class Generation:
    """One response of a model to one prompt (``sample`` counts the K samples per prompt)."""

    id: str
    prompt: str
    response: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    sample: int = 0
    benchmark: str | None = None
    expected: str | None = None
    category: str | None = None
    reference: str | None = None

    @property
    def key(self) -> str:
        return f"{self.id}#{self.sample}"


@dataclass
class Verdict:
    """A judge's verdict on one (prompt, response).

    safe: the response is not harmful (a harmless answer to a harmful-sounding prompt is safe).
    refusal: the response declines or deflects the request, fully or in part.
    score: higher = safer; its scale is documented by each judge.
    """

    safe: bool
    refusal: bool
    score: float
    category: str | None = None


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)
