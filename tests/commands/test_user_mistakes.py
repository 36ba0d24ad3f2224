"""Issue 16's faults, each reproduced as a user meets it (real subprocesses, real files, a real local server): one
line on stderr, exit 2, nothing half-written; two writers on one output; output for pipes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, "-m", "safealign", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def one_line_exit_2(r, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_generate_limit_must_be_positive(tmp_path, limit):
    one_line_exit_2(run("generate", "--benchmark", "i-cona", "--limit", limit, "--out", tmp_path / "g.jsonl"),
                    "--limit must be >= 1")
    assert not (tmp_path / "g.jsonl").exists()


def test_a_second_generate_on_the_same_file_is_refused(tmp_path, tiny_lm_dir):
    out = tmp_path / "same.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from safealign import io
        with io.locked({str(out)!r}, kind="file"):
            print("locked", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = run("generate", "--model", tiny_lm_dir, "--benchmark", "i-cona", "--limit", "2", "--max-new-tokens", "2",
                "--out", out)
        one_line_exit_2(r, f"in use by another safealign process (pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_resuming_training_with_other_settings_is_refused_before_anything_changes(tmp_path, tiny_lm_dir):
    """(The cut is made by marking a finished run unfinished, as a kill before its end leaves it; a real kill mid-run
    is in tests/recipes/test_sit.py.)"""
    out = tmp_path / "sit"
    args = ["train", "sit", "--out", out, f"model={tiny_lm_dir}", "helpful_limit=4", "n_safety=0", "train.max_steps=2",
            "train.batch_size=2", "train.max_length=48", "lora.r=4"]
    first = run(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    meta = json.loads((out / "safealign.json").read_text())
    (out / "safealign.json").write_text(json.dumps({**meta, "finished": False}))
    recorded = (out / "config.yaml").read_text()
    for change, needle in (("train.lr=5e-3", "train.lr: 0.0002 -> 0.005"), ("lora.r=8", "lora.r: 4 -> 8")):
        r = run(*args, change)
        one_line_exit_2(r, needle)
        assert "rerun with the recorded settings" in r.stderr
        assert (out / "config.yaml").read_text() == recorded


class SilentServer:
    """Accepts connections and reads the request, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def test_openai_engine_gives_up_in_the_time_it_was_given(tmp_path):
    server = SilentServer()
    try:
        t0 = time.time()
        r = run("generate", "--engine", "openai", "--base-url", f"http://127.0.0.1:{server.port}/v1", "--model", "m",
                "--prompt", "hello", "--timeout", "1", timeout=60)
        took = time.time() - t0
    finally:
        server.close()
    one_line_exit_2(r, "request failed after 2 tries in")
    assert "1 s timeout each; --timeout to change" in r.stderr
    assert took < 20


def test_bad_inputs_are_one_line(tmp_path, tiny_lm_dir):
    latin1 = tmp_path / "pairs.jsonl"
    latin1.write_bytes('{"prompt": "p", "response": "caf\xe9"}\n'.encode("latin-1"))
    one_line_exit_2(run("judge", "score", "--judge", "keywords", "--input", latin1, "--out", tmp_path / "o.jsonl"),
                    "not UTF-8 text")
    one_line_exit_2(run("judge", "score", "--judge", "keywords", "--input", tmp_path, "--out", tmp_path / "o.jsonl"),
                    "is a directory")
    (tmp_path / "dir.jsonl").mkdir()
    one_line_exit_2(run("generate", "--model", tiny_lm_dir, "--benchmark", "i-cona", "--limit", "1", "--out",
                        tmp_path / "dir.jsonl"), "is a directory")
    assert not [p for p in tmp_path.rglob("*.tmp")]

    fake = tmp_path / "model.gguf"
    fake.write_text("not a model\n")
    one_line_exit_2(run("generate", "--model", fake, "--prompt", "hi"), "not a GGUF file")

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_lm_dir)}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    one_line_exit_2(run("generate", "--model", adapter, "--prompt", "hi"), "only a pickled adapter_model.bin")


def test_an_unknown_model_writes_nothing(tmp_path):
    out = tmp_path / "ev"
    r = run("eval", "--model", "runs/no-such-run", "--benchmarks", "i-cona", "--limit", "1", "--judge", "keywords",
            "--out", out)
    one_line_exit_2(r, "cannot load")
    assert not (out / "generations.jsonl").exists()


def test_piped_listings_are_plain_rows_and_head_ends_quietly():
    grep = subprocess.run(f"{sys.executable} -m safealign data list | grep -c bianchi-safety", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert grep.stdout.strip() == "1", grep.stderr[-2000:]
    head = subprocess.run(f"{sys.executable} -m safealign data list | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert head.returncode == 0 and head.stdout.startswith("name\tkind\tsize")
    assert "Error" not in head.stderr and "Traceback" not in head.stderr, head.stderr
    models = subprocess.run([sys.executable, "-m", "safealign", "models", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert models.returncode == 0 and any(m["name"] == "smollm2-135m-instruct" for m in json.loads(models.stdout))


def test_run_refuses_an_out_dir_of_another_base_model(tmp_path, tiny_lm_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_lm_dir}\njudge: keywords\nbenchmarks: i-cona\nlimit: 1\n"
                   "generation: {max_new_tokens: 2}\nanalyze: false\n")
    out = tmp_path / "run"
    first = run("run", cfg, "--out", out)
    assert first.returncode == 0, first.stderr[-2000:]
    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(tiny_lm_dir, other)
    before = (out / "eval" / "base" / "responses.jsonl").read_text()
    r = run("run", cfg, "--out", out, f"model={other}")
    one_line_exit_2(r, f"holds a study of model '{tiny_lm_dir}'")
    assert (out / "eval" / "base" / "responses.jsonl").read_text() == before
    again = run("run", cfg, "--out", out, f"model={other}", "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["config"]["model"] == str(other)
