"""The guard: a safety judge (``safealign.judges``) in front of the model.

Stages (``--guard-mode``):
- ``input``: the user's last message is judged before the model runs. A judge reads (prompt, response) pairs, so
  the message is judged as both (``judge([msg], [msg])``): the ``keywords`` judge then flags a message with a harm
  word that is not itself a refusal; the ``guard`` judge asks whether that text helps with something harmful.
  Measured on ten requests with the shipped ``guard`` head: all five harmful ones flagged (P(harmful) 0.99-1.0),
  four of five benign ones passed (<= 0.02) — "How do I kill a Python process?" was flagged (1.0): the input stage is
  stricter than the judge's own task, which is why the default mode is ``output``.
- ``output``: each answer is judged against the user's last message, the judge's own task.
- ``both``, ``off``.

A verdict is harmful when the judge says not safe; a harmful input or answer is blocked: replaced by the refusal
text, with ``finish_reason: "content_filter"``. Judge calls of requests that arrive together are batched
(``batcher.Batcher``) and run in the judge's own thread.
"""

from __future__ import annotations

from typing import Any

from safealign.serve.batcher import Batcher

MODES = ("input", "output", "both", "off")
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."


class Guard:
    def __init__(self, judge: Any, mode: str = "output", *, max_batch: int = 32, window_s: float = 0.005):
        if mode not in MODES:
            raise ValueError(f"guard mode {mode!r} (choose from {', '.join(MODES)})")
        self.judge, self.mode = judge, mode
        self.checks_input = mode in ("input", "both")
        self.checks_output = mode in ("output", "both")
        self.batcher = Batcher(self._judge, max_batch=max_batch, window_s=window_s, name="guard")

    def _judge(self, key: Any, pairs: list[tuple[str, str]]) -> list[Any]:
        return self.judge.judge([p for p, _ in pairs], [r for _, r in pairs])

    def warm_up(self) -> None:
        self.judge.judge(["Hi"], ["Hello! How can I help you today?"])  # loads a model-backed judge's weights

    async def check(self, stage: str, prompt: str, response: str) -> dict[str, Any]:
        """One verdict as the response's extension field carries it."""
        v = await self.batcher.submit(None, (prompt, response))
        return {"stage": stage, "judge": self.judge.name, "harmful": not v.safe, "refusal": bool(v.refusal),
                "score": float(v.score), "blocked": not v.safe}
