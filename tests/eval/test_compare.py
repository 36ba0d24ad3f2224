"""Position-swapped pairwise comparison: a real tiny LM judge read by its logits, and an OpenAI-compatible judge
served over HTTP on 127.0.0.1 by the test (a fair one and a position-biased one)."""

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from http_helpers import send_json  # tests/http_helpers.py
from safealign.errors import SafealignError
from safealign.eval.compare import compare, pair_up
from safealign.eval.responses import read_responses
from safealign.judges.pairwise import build_prompt, parse_letter

FIX = Path(__file__).parent / "fixtures"
A, B = FIX / "results" / "base", FIX / "results" / "tuned"
ANSWER = re.compile(r"\[The Start of Assistant (A|B)'s Answer\]\n(.*?)\n\[The End", re.S)


class JudgeServer:
    """An OpenAI-compatible chat server; ``mode`` "longer" names the longer answer, "first" always says A."""

    def __init__(self, mode: str):
        self.mode, self.requests = mode, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                answers = dict(ANSWER.findall(body["messages"][-1]["content"]))
                letter = "A" if outer.mode == "first" or len(answers["A"]) >= len(answers["B"]) else "B"
                send_json(self, {"choices": [{"message": {"role": "assistant", "content": f"{letter}."}}]})

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server(request):
    s = JudgeServer(request.param)
    yield s
    s.close()


def expected_longer():
    wins = {"a": 0, "b": 0, "tie": 0}
    for ra, rb in pair_up(read_responses(A), read_responses(B)):
        la, lb = len(ra.response), len(rb.response)
        wins["a" if la > lb else "b" if lb > la else "tie"] += 1
    return wins


@pytest.mark.parametrize("server", ["longer"], indirect=True)
def test_openai_judge_fair_and_resumable(server, tmp_path):
    s = compare(A, B, "openai:judge", tmp_path, limit=3, base_url=server.url)
    assert s["n"] == 3 and server.requests == 6  # each pair asked in both orders
    s = compare(A, B, "openai:judge", tmp_path, base_url=server.url)
    assert s["n"] == 8 and server.requests == 16  # the rerun only judged the 5 new pairs
    want = expected_longer()
    assert (s["win_a"]["k"], s["tie"]["k"], s["win_b"]["k"]) == (want["a"], want["tie"], want["b"])
    assert s["order_flip_rate"]["k"] == want["tie"] and s["invalid"] == 0
    assert s["win_a"]["ci"][0] <= s["win_a"]["rate"] <= s["win_a"]["ci"][1]
    items = [json.loads(x) for x in (tmp_path / "compare_items.jsonl").read_text().splitlines()]
    assert len(items) == 8 and all(it["winner"] in ("a", "b", "tie") for it in items)
    assert json.loads((tmp_path / "compare.json").read_text())["n"] == 8
    assert "order flip" in (tmp_path / "compare.md").read_text()


@pytest.mark.parametrize("server", ["first"], indirect=True)
def test_position_bias_is_reported_as_ties(server, tmp_path):
    s = compare(A, B, "openai:judge", tmp_path, base_url=server.url)
    assert s["tie"]["rate"] == 1.0 and s["win_a"]["k"] == s["win_b"]["k"] == 0
    assert s["order_flip_rate"]["rate"] == 1.0 and s["first_position_rate"]["rate"] == 1.0
    with pytest.raises(SafealignError, match="another judge"):
        compare(A, B, "openai:other", tmp_path, base_url=server.url)


def test_hf_judge_reads_letter_logits(tiny_lm_dir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("SAFEALIGN_DEVICE", "cpu")
    monkeypatch.setenv("SAFEALIGN_PRECISION", "fp32")  # batched and unbatched must agree to 1e-4

    from safealign.judges.pairwise import HFPairJudge
    from safealign.models import format_prompt

    s = compare(A, B, f"hf:{tiny_lm_dir}", tmp_path, limit=4, batch_size=3)  # batches of 3 pairs: padding matters
    items = [json.loads(x) for x in (tmp_path / "compare_items.jsonl").read_text().splitlines()]
    assert s["n"] == 4 and s["win_a"]["k"] + s["tie"]["k"] + s["win_b"]["k"] == 4
    judge = HFPairJudge(str(tiny_lm_dir))
    for it in items:  # each batched, left-padded verdict equals an unbatched forward pass
        for key, (x, y) in (("ab", ("response_a", "response_b")), ("ba", ("response_b", "response_a"))):
            text = format_prompt(judge.tok, build_prompt(it["prompt"], it[x], it[y]))
            ids = judge.tok(text, return_tensors="pt", add_special_tokens=False).input_ids.to(judge.model.device)
            with torch.inference_mode():
                logp = torch.log_softmax(judge.model(ids).logits[0, -1].float(), -1)
            a, b = (torch.logsumexp(logp[judge.letter_ids[c]], 0) for c in "AB")
            assert it[f"p_first_{key}"] == pytest.approx(torch.sigmoid(a - b).item(), abs=1e-4)
            assert it[f"pick_{key}"] == ("A" if a > b else "B")
        assert it["followed_position"] == (it["pick_ab"] == it["pick_ba"])


def test_parse_letter_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert parse_letter("B") == "B" and parse_letter("Assistant A is better.") == "A"
    assert parse_letter("Both are fine") is None
    with pytest.raises(SafealignError, match="needs --base-url"):
        compare(A, B, "openai:x", tmp_path)
    with pytest.raises(SafealignError, match="unknown pairwise judge 'gpt:x'"):
        compare(A, B, "gpt:x", tmp_path / "u")
    r = subprocess.run([sys.executable, "-m", "safealign", "compare", "--a", str(A), "--b", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "result dir not found" in r.stderr and r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("server", ["longer"], indirect=True)
def test_openai_judge_takes_openai_base_url_and_a_cut_line_is_judged_again(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # what `safealign eval --base-url` sets for an openai: judge
    compare(A, B, "openai:judge", tmp_path, limit=3)
    assert server.requests == 6
    items = tmp_path / "compare_items.jsonl"
    lines = items.read_text().splitlines(keepends=True)
    items.write_text("".join(lines[:2]) + lines[2][:20])  # killed while writing the third line
    s = compare(A, B, "openai:judge", tmp_path, limit=3)
    assert s["n"] == 3 and server.requests == 8  # only the cut pair is asked again (both orders)
    assert [json.loads(x)["id"] for x in items.read_text().splitlines()] == [
        json.loads(x)["id"] for x in lines]
