"""Judges: (prompt, response) batches → Verdict(safe, refusal, score, category). See ``base.py``."""

from safealign.judges.base import Judge, get_judge, register

__all__ = ["Judge", "get_judge", "register"]
