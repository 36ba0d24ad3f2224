"""The ``safealign serve`` command: bad flags are one line and exit 2; the real command serves on 127.0.0.1 by
default (here ``--port 0``), asks for the key named by ``--api-key-env``, and its log holds neither the key nor any
request body."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from safealign.cli import main

openai = pytest.importorskip("openai")


@pytest.mark.parametrize("argv, message", [
    (["--guard", "nope"], "unknown judge 'nope'"),
    (["--api-key-env", "SA_TEST_UNSET_VARIABLE"], "SA_TEST_UNSET_VARIABLE is not set"),
    (["--guard", "keywords", "--model", "/nonexistent/model-dir"], "does not exist"),
    (["--guard", "keywords", "--model", "runs/no-such-run"], "neither a model dir here nor a hub id"),
    (["--upstream", "ftp://example.org/v1"], "http(s) URL"),
    (["--upstream", "http://127.0.0.1:9/v1", "--upstream-key-env", "SA_TEST_UNSET_VARIABLE", "--guard-mode", "off"],
     "SA_TEST_UNSET_VARIABLE is not set"),
    (["--upstream", "http://127.0.0.1:9/v1", "--guard-mode", "off"], "cannot reach the upstream"),
    (["--port", "70000"], "0-65535"),
    (["--max-batch", "0"], "max-batch"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("SA_TEST_UNSET_VARIABLE", raising=False)
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the error's one line, after a "loading ..." line at most
    assert message in err[-1] and err[-1].startswith("safealign: error:")
    assert len(err) <= 2 and "Traceback" not in "".join(err)


def test_the_command_serves_and_logs_no_body_or_key(lively_lm_dir, tmp_path):
    key, marker = "sk-cli-secret-4b1d", "MARKER-BODY-9e2c"
    env = {**os.environ, "SA_TEST_SERVE_KEY": key}
    cmd = [sys.executable, "-m", "safealign", "serve", "--model", str(lively_lm_dir), "--served-model-name", "lively",
           "--guard", "keywords", "--guard-mode", "both", "--port", "0", "--api-key-env", "SA_TEST_SERVE_KEY",
           "--max-new-tokens", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 90
        while not any(" at http://" in line for line in lines):
            assert proc.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.1)
        url = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", "".join(lines)).group(1)  # 127.0.0.1 by default
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        resp = c.chat.completions.create(model="lively", messages=[{"role": "user", "content": marker}])
        assert resp.model_extra["safealign"]["guard_mode"] == "both" and resp.usage.completion_tokens <= 16
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="lively", messages=[{"role": "oracle", "content": marker}])
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        reader.join(timeout=10)
    log = "".join(lines)
    assert rc == 0, log
    assert "POST /v1/chat/completions HTTP/1.1\" 200" in log and "GET /v1/models HTTP/1.1\" 401" in log
    assert key not in log and marker not in log and "oracle" not in log
