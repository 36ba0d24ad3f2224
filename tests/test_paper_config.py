"""configs/paper.yaml is its header's table: every value set in the file has a row with the same value (and a
named source), and every row is set in the file to its value; the resolved config validates, and its dry-run plan
shows the authors' numbers (20k + n SIT examples, 8,066 DPO pairs of which 504 used, K=8 samples per RAFT prompt)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper.yaml"
ROW = re.compile(r"^# \| (?P<key>[a-z_][\w.]*) \| (?P<value>[^|]+?) \| (?P<source>.+) \|$")


def header_table() -> dict[str, tuple[object, str]]:
    rows = {}
    for line in PAPER.read_text().splitlines():
        m = ROW.match(line)
        if m and m["key"] != "setting":
            assert m["key"] not in rows, f"row {m['key']} twice"
            rows[m["key"]] = (yaml.safe_load(m["value"]), m["source"].strip())
    return rows


def leaves(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], obj


def test_every_value_in_the_file_equals_its_row_and_every_row_is_set():
    table = header_table()
    assert len(table) >= 40
    file_values = dict(leaves(yaml.safe_load(PAPER.read_text())))
    file_values.pop("seed")  # not a paper setting: the seed every stage starts from
    missing_rows = sorted(set(file_values) - set(table))
    assert not missing_rows, f"set in paper.yaml without a row in its table: {missing_rows}"
    unset_rows = sorted(set(table) - set(file_values))
    assert not unset_rows, f"rows of the table not set in paper.yaml: {unset_rows}"
    for key, (value, source) in table.items():
        assert file_values[key] == value, f"{key}: file {file_values[key]!r} vs table {value!r}"
        assert source, f"{key} names no source"


def test_authors_settings_are_the_ones_the_issue_names():
    table = {k: v for k, (v, _) in header_table().items()}
    assert (table["methods.sit.lora.quantize"], table["methods.sit.lora.r"], table["methods.sit.lora.alpha"],
            table["methods.sit.lora.dropout"], table["methods.sit.train.lr"], table["methods.sit.train.epochs"],
            table["methods.sit.train.max_length"], table["methods.sit.train.batch_size"],
            table["methods.sit.train.grad_accum"]) == ("4bit", 4, 16, 0.05, 1e-4, 4, 512, 32, 4)
    assert (table["methods.dpo.beta"], table["methods.dpo.train.lr"], table["methods.dpo.train.epochs"],
            table["methods.dpo.lora.r"], table["methods.dpo.train.max_length"]) == (0.1, 5e-5, 2, 8, 1536)
    assert (table["methods.raft.K"], table["methods.raft.temperature"], table["methods.raft.top_p"],
            table["methods.raft.max_new_tokens"], table["methods.raft.B"], table["methods.raft.T"]) == \
        (8, 0.85, 0.95, 120, 100, 5)


def test_dry_run_prints_the_authors_numbers_without_loading_a_model(tmp_path):
    """A real `safealign run configs/paper.yaml --dry-run` (no hub here: nothing may be downloaded or loaded)."""
    proc = subprocess.run([sys.executable, "-m", "safealign", "run", str(PAPER), "--out", str(tmp_path / "paper"),
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"^\[\d+/\d+\] (\S+):.*\n((?:    .*\n)*)", out, re.M)}
    for n in (100, 300, 500, 1000, 1500, 2000):
        sit = blocks[f"train/sit-n{n}"]
        assert "20,000 helpful (bianchi-alpaca" in sit and f"{n:,} safety of 2,483 (bianchi-safety)" in sit
        assert f"{20000 + n:,} examples" in sit and "quantize 4bit" in sit and "LoRA r=4 alpha=16" in sit
        assert "yahma/llama-7b-hf" in sit
    dpo = blocks["train/dpo"]
    assert "504 pairs of 8,066 (pku-saferlhf" in dpo and "beta 0.1" in dpo and "LoRA r=8" in dpo
    raft = blocks["train/raft"]
    assert "T=5 iterations x B=100 prompts x K=8 samples" in raft and "4,000 samples" in raft
    assert "quantize 4bit" in raft
    assert "llama-guard:meta-llama/LlamaGuard-7b" in blocks["eval/base"]
    assert not (tmp_path / "paper").exists() or not any((tmp_path / "paper").iterdir()), "a dry run wrote files"
