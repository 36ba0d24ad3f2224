"""Multiple-choice QA by log-likelihood on local files in each task's Hugging Face column format, loaded through
datasets.load_dataset("json", ...), with a real tiny LM."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from safealign.errors import SafealignError
from safealign.eval import mcqa

FIX = Path(__file__).parent / "fixtures"
FILES = {t: str(FIX / f"mcqa_{t}.jsonl") for t in ("boolq", "piqa", "openbookqa")}


def test_docs_follow_the_harness_formats():
    docs, source = mcqa.load_docs("boolq", FILES["boolq"])
    assert source == FILES["boolq"] and len(docs) == 4
    ctx, choices, gold = docs[0]
    assert ctx.endswith("\nQuestion: is paris the capital of france?\nAnswer:") and choices == [" no", " yes"] and gold == 1
    (ctx, choices, gold), = mcqa.load_docs("openbookqa", FILES["openbookqa"], limit=1)[0]
    assert ctx == "The sun is responsible for" and len(choices) == 4 and gold == 3
    assert mcqa.load_docs("piqa", FILES["piqa"])[0][1][2] == 1


def test_batched_loglikelihood_equals_one_by_one(tiny_lm_dir):
    import torch

    from safealign.models import load_causal_lm

    model, tok = load_causal_lm(str(tiny_lm_dir))
    reqs = [("The capital of France is", " Paris."), ("Step one:", " open the file and read the lines."),
            ("Hi", " there")]
    batched = mcqa.loglikelihoods(model, tok, reqs, batch_size=3)
    for (ctx, cont), got in zip(reqs, batched):
        c = tok(ctx, add_special_tokens=False).input_ids
        ids = tok(ctx + cont, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        want = sum(logp[i - 1, ids[i]].item() for i in range(len(c), len(ids)))
        assert got == pytest.approx(want, abs=1e-4)


def test_evaluate_and_cli(tiny_lm_dir, tmp_path):
    res = mcqa.evaluate(str(tiny_lm_dir), "boolq,openbookqa", limit=2, data_files={k: FILES[k] for k in ("boolq", "openbookqa")},
                        out=tmp_path / "r.json")
    assert set(res["tasks"]) == {"boolq", "openbookqa"} and res["tasks"]["boolq"]["n"] == 2
    for r in res["tasks"].values():
        assert r["acc"] in (0, 0.5, 1) and r["ci"]["acc"][0] <= r["acc"] <= r["ci"]["acc"][1]
    assert json.loads((tmp_path / "r.json").read_text()) == res
    out = tmp_path / "cli.json"
    args = [sys.executable, "-m", "safealign", "mcqa", "--model", str(tiny_lm_dir), "--tasks", "piqa",
            "--data-files", f"piqa={FILES['piqa']}", "--out", str(out)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["tasks"]["piqa"]["n"] == 3 and "piqa" in r.stdout


def test_bad_input(tmp_path):
    with pytest.raises(SafealignError, match="unknown task"):
        mcqa.parse_tasks("boolq,hellaswag")
    with pytest.raises(SafealignError, match="task=path"):
        mcqa.parse_data_files(["boolq"])
    bad = tmp_path / "piqa.jsonl"
    bad.write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n{"goal": "g", "sol1": "a", "label": 1}\n')
    with pytest.raises(SafealignError) as e:
        mcqa.load_docs("piqa", str(bad))
    assert (e.value.line, e.value.field) == (2, "sol2")
    with pytest.raises(SafealignError, match="not found"):
        mcqa.load_docs("piqa", str(tmp_path / "missing.jsonl"))
