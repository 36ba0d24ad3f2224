import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

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
            data = json.dumps({"choices": [{"index": i, "message": {"role": "assistant", "content": o}}
                                           for i, o in enumerate(outs)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
