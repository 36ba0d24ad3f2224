"""The CLI as a user runs it: real subprocesses, one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "safealign", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0 and "generate" in r.stdout and "data" in r.stdout


def test_data_list_json(data_dir):
    r = run("data", "list", "--json")
    assert r.returncode == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {"i-cona", "xstest", "pku-safe-pairs", "advbench", "harmbench", "donotanswer", "hh-harmless"} <= set(rows)
    assert rows["i-cona"]["size"] == "178" and "vinid/safety-tuned-llamas" in rows["i-cona"]["source"]


def test_generate_one_prompt(tiny_lm_dir):
    r = run("generate", "--model", str(tiny_lm_dir), "--prompt", "Hello there", "--max-new-tokens", "4",
            "--num-samples", "2", "--temperature", "1.0")
    assert r.returncode == 0, r.stderr[-1000:]
    assert [line[:3] for line in r.stdout.splitlines() if line.startswith("[")] == ["[0]", "[1]"]


@pytest.mark.parametrize("args,needle", [
    (["generate", "--benchmark", "no-such-benchmark", "--model", "x"], "unknown dataset"),
    (["generate", "--prompt", "  "], "empty prompt"),
    (["generate", "--prompt", "hi", "--model", "/no/such/dir"], "does not exist"),
    (["data", "show", "nope"], "unknown dataset"),
])
def test_user_errors_are_one_line_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("safealign: error:")


def test_malformed_prompts_file_names_file_and_line(tmp_path, tiny_lm_dir):
    p = tmp_path / "prompts.jsonl"
    p.write_text('{"prompt": "ok"}\n{"prompt": \n')
    r = run("generate", "--model", str(tiny_lm_dir), "--benchmark", str(p), "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and f"{p}:2:" in r.stderr and not (tmp_path / "o.jsonl").exists()
