import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from http_helpers import send_json  # tests/http_helpers.py
from safealign.errors import SafealignError
from safealign.generate import GenParams, HFEngine, OpenAIEngine, generate_to_file, read_generations
from safealign.records import EvalPrompt


def prompts(n, bench="t"):
    return [EvalPrompt(f"{bench}-{i}", f"Question number {i}: " + "tell me more " * (i % 4), bench, "comply") for i in range(n)]


class Counting:
    """A real engine that counts the prompts it was asked to generate for."""

    def __init__(self, engine):
        self.engine, self.name, self.seen = engine, engine.name, 0

    def generate(self, texts, params, on_batch=None):
        self.seen += len(texts)
        return self.engine.generate(texts, params, on_batch=on_batch)

    def precision_for(self, params):
        return self.engine.precision_for(params)


@pytest.fixture(scope="module")
def engine(tiny_lm_dir):
    return HFEngine(str(tiny_lm_dir))


def test_samples_seeds_and_greedy(engine):
    p = GenParams(max_new_tokens=6, temperature=1.0, num_samples=3, seed=1, batch_size=2)
    a = engine.generate(["a b", "c d e", "f"], p)
    assert [len(x) for x in a] == [3, 3, 3]
    assert a == engine.generate(["a b", "c d e", "f"], p)  # same seed, same samples
    g = GenParams(max_new_tokens=6)
    assert engine.generate(["a b"], g) == engine.generate(["a b"], g)
    with pytest.raises(SafealignError, match="temperature"):
        GenParams(num_samples=2)


def _one_by_one(engine, texts, max_new, eos):
    """Reference answers: transformers' own ``generate``, one prompt at a time (no padding), fp32."""
    import torch

    tok, out = engine.tokenizer, []
    for t in texts:
        enc = tok(engine.format(t, "auto"), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            ids = engine.model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                                        pad_token_id=tok.pad_token_id)[0, enc.input_ids.shape[1]:].tolist()
        out.append(ids[:ids.index(eos)] if eos in ids else ids)
    return out


@pytest.fixture(scope="module")
def lively_engine(lively_lm_dir):
    """The tiny LM with large random weights (conftest), so that greedy answers differ between prompts and steps."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(lively_lm_dir)
    model = LlamaForCausalLM.from_pretrained(lively_lm_dir)
    return HFEngine(model_obj=model.eval(), tokenizer=tok, name="lively")


@pytest.mark.parametrize("shared", [True, False])
def test_continuous_batching_matches_one_prompt_at_a_time(lively_engine, shared):
    """Rows end at different steps (a common token made the EOS), leave the batch, and waiting prompts of other
    lengths are merged in; every answer is still the one ``generate`` gives that prompt alone — with the prompts'
    shared start ("Question number", as a chat template's system turn) run once and copied into each prefill, and
    without one."""
    from safealign.generate import _shared_prefix, continuous_decode

    engine = lively_engine
    texts = [p.prompt if shared else f"{i}: a question, " + "tell me more " * (i % 4) for i, p in enumerate(prompts(9))]
    first = _one_by_one(engine, texts, 12, eos=-1)
    def end_lengths(t):
        return {ids.index(t) if t in ids else 12 for ids in first}

    eos = max({t for ids in first for t in ids}, key=lambda t: len(end_lengths(t)))  # answers end at many steps
    expected = _one_by_one(engine, texts, 12, eos)
    assert len({len(x) for x in expected}) > 2  # answers do end at different lengths
    tok = engine.tokenizer
    ids = [tok(engine.format(t, "auto"), add_special_tokens=False).input_ids for t in texts]
    assert (_shared_prefix(ids) >= 8) == shared
    for batch_size in (1, 3, 9):
        p = GenParams(max_new_tokens=12, batch_size=batch_size, precision="fp32")
        got = dict(continuous_decode(engine.model, ids, list(range(9)), p, [eos], tok.pad_token_id))
        assert [got[i] for i in range(9)] == expected, batch_size


def test_shared_prefix():
    from safealign.generate import _shared_prefix

    start = list(range(10))
    assert _shared_prefix([start + [50, 51], start + [60], start + [50, 70]]) == 10
    assert _shared_prefix([start + [50], start]) == 9  # each prompt keeps a token of its own to read
    assert _shared_prefix([start + [50], start[:7] + [1, 2, 3]]) == 0  # fewer than 8 shared: not worth a pass
    assert _shared_prefix([start + [50]]) == 0 and _shared_prefix([start + [50]] * 3) == 10  # K samples of one


def test_in_place_layer_holds_what_dynamic_layer_holds():
    """Prefill, single-token steps past the buffer's room, rows leaving, and states replaced from outside (a merge,
    a dropped column): the in-place layer returns the same keys and values as transformers' concatenating one."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from safealign.generate import _in_place_layer

    torch.manual_seed(0)
    ours, theirs = _in_place_layer()(), DynamicLayer()

    def both(k, v):
        a, b = ours.update(k, v), theirs.update(k.clone(), v.clone())
        assert all(torch.equal(x, y) for x, y in zip(a, b)) and ours.get_seq_length() == theirs.get_seq_length()

    both(torch.randn(4, 2, 5, 3), torch.randn(4, 2, 5, 3))
    for _ in range(80):
        both(torch.randn(4, 2, 1, 3), torch.randn(4, 2, 1, 3))
    index = torch.tensor([0, 2, 3])
    ours.batch_select_indices(index)
    theirs.batch_select_indices(index)
    both(torch.randn(3, 2, 1, 3), torch.randn(3, 2, 1, 3))
    for layer in (ours, theirs):  # a column dropped from outside, as the decoder does
        layer.keys, layer.values = layer.keys[:, :, 1:], layer.values[:, :, 1:]
    for _ in range(3):
        both(torch.randn(3, 2, 1, 3), torch.randn(3, 2, 1, 3))
    assert ours.get_seq_length() == 5 + 80 + 1 - 1 + 3


def test_precision_is_written_and_checked(engine, tmp_path):
    out = tmp_path / "g.jsonl"
    generate_to_file(engine, prompts(2), GenParams(max_new_tokens=3, precision="fp32"), out)
    assert json.loads(out.read_text().splitlines()[0])["params"]["precision"] == "fp32"
    with pytest.raises(SafealignError, match="another model or parameters"):
        generate_to_file(engine, prompts(3), GenParams(max_new_tokens=3, precision="bf16"), out)
    with pytest.raises(SafealignError, match="unknown precision"):
        GenParams(precision="fp8")


def test_generate_to_file_writes_and_resumes(engine, tmp_path):
    out = tmp_path / "g.jsonl"
    recs = prompts(5)
    p = GenParams(max_new_tokens=4, batch_size=2, temperature=0.7, num_samples=2)
    c = Counting(engine)
    gens = generate_to_file(c, recs, p, out)
    assert c.seen == 5 and len(gens) == 10 and [g.id for g in gens[:2]] == ["t-0", "t-0"]
    line = json.loads(out.read_text().splitlines()[0])
    assert {"id", "prompt", "response", "model", "params", "sample"} <= set(line) and line["params"]["temperature"] == 0.7
    c2 = Counting(engine)
    assert generate_to_file(c2, recs, p, out) == gens and c2.seen == 0
    # a line cut mid-write (kill -9) is dropped; that prompt alone is redone
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:25])
    c3 = Counting(engine)
    again = generate_to_file(c3, recs, p, out)
    assert c3.seen == 1 and len(again) == 10 and len(read_generations(out)) == 10
    with pytest.raises(SafealignError, match="another model or parameters"):
        generate_to_file(engine, recs, GenParams(max_new_tokens=9), out)


def test_kill_9_midway_loses_nothing_finished(tiny_lm_dir, tmp_path):
    bench = tmp_path / "many.jsonl"
    bench.write_text("".join(json.dumps({"prompt": f"prompt {i} " + "word " * (i % 7)}) + "\n" for i in range(60)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "safealign", "generate", "--model", str(tiny_lm_dir), "--benchmark", str(bench),
           "--out", str(out), "--max-new-tokens", "24", "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_generations(out, repair=True)
    assert 3 <= len(first) < 60
    done_before = {g.id: g.response for g in first}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = read_generations(out)
    assert len(final) == 60 and len({g.id for g in final}) == 60
    assert all(next(g.response for g in final if g.id == i) == r for i, r in done_before.items())


def test_openai_engine_against_a_local_server(engine, monkeypatch):
    """A real HTTP server on 127.0.0.1 answering chat completions with the tiny model."""
    seen_auth = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen_auth.append(self.headers.get("Authorization"))
            if body["messages"][0]["content"] == "fail":
                self.send_response(400)
                self.end_headers()
                return
            params = GenParams(max_new_tokens=body["max_tokens"], temperature=body["temperature"] or 0.0,
                               num_samples=body.get("n", 1), seed=body.get("seed", 0))
            outs = engine.generate([body["messages"][0]["content"]], params)[0]
            send_json(self, {"choices": [{"index": i, "message": {"role": "assistant", "content": o}}
                                           for i, o in enumerate(outs)]})

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SAFEALIGN_TEST_KEY", "sk-secret-123")
        remote = OpenAIEngine(f"http://127.0.0.1:{server.server_port}/v1", "tiny", api_key_env="SAFEALIGN_TEST_KEY")
        p = GenParams(max_new_tokens=5, batch_size=2)
        assert remote.generate(["a b", "c d e"], p) == engine.generate(["a b", "c d e"], p)
        assert seen_auth[0] == "Bearer sk-secret-123"
        assert "sk-secret" not in remote.name
        with pytest.raises(SafealignError) as e:
            remote.generate(["fail"], p)
        assert "HTTP 400" in str(e.value) and "sk-secret" not in str(e.value)
    finally:
        server.shutdown()

