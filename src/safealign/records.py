"""The record types every stage shares. Loaders produce them; nothing downstream reads raw files.

records → generate → judge → metrics → report

A judged response (``JudgedResponse``) is a ``Generation`` with its ``Verdict``: a line of ``responses.jsonl``,
read back by ``safealign.eval.responses.read_responses``.
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
class LabelledResponse:
    """A response with known labels, for checking a judge: ``harmful`` (it gives real help toward harm) and
    ``refusal`` (it declines or deflects); None where the source does not say."""

    prompt: str
    response: str
    harmful: bool | None
    refusal: bool | None
    source: str
    category: str | None = None  # the source's harm category, where it has one


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


@dataclass(kw_only=True)
class JudgedResponse:
    """One line of a result dir's ``responses.jsonl`` (``safealign eval``): a response with the judge's verdict.

    ``safe`` / ``refusal`` / ``score`` are None only in a file that was never judged (readers that need a verdict
    say so); ``extra`` keeps the keys of a line this version does not know (files written by older versions
    carried ``params`` and ``reference``), so nothing read is lost.
    """

    id: str
    sample: int = 0
    benchmark: str | None = None
    expected: str | None = None
    category: str | None = None  # the prompt's category (harm tag, XSTest type)
    prompt: str
    response: str
    model: str | None = None
    judge: str | None = None  # the judge's spec, as reports print it
    judge_id: str | None = None  # names the exact judge (e.g. ``embedded@<hash>``)
    safe: bool | None = None
    refusal: bool | None = None
    score: float | None = None
    verdict_category: str | None = None  # the judge's category (e.g. ``truncated``, an LLM judge's harm type)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.id}#{self.sample}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON line, in the field order above (``extra`` last, flattened)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_parts(cls, g: Generation, v: Verdict, judge: str, judge_id: str) -> JudgedResponse:
        return cls(id=g.id, sample=g.sample, benchmark=g.benchmark, expected=g.expected, category=g.category,
                   prompt=g.prompt, response=g.response, model=g.model, judge=judge, judge_id=judge_id,
                   safe=bool(v.safe), refusal=bool(v.refusal), score=float(v.score), verdict_category=v.category)


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)
