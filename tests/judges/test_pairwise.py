"""The pairwise judge registry (``judges/pairwise.py``): names, errors, and the URL an ``openai:`` judge uses.
Judging itself is tested through ``safealign compare`` in ``tests/eval/test_compare.py``."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from http_helpers import send_json  # tests/http_helpers.py
from safealign.errors import SafealignError
from safealign.judges.pairwise import HFPairJudge, OpenAIPairJudge, build_prompt, get_pairwise_judge


@pytest.fixture()
def letter_server():
    """An OpenAI-compatible server on 127.0.0.1 that always answers "B"."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            send_json(self, {"choices": [{"message": {"role": "assistant", "content": "B"}}]})

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("spec, message", [
    ("gpt4:judge", "unknown pairwise judge 'gpt4:judge' (known: hf:<model>, openai:<model>, or a model spec)"),
    ("", "no judge given"),
])
def test_unknown_or_empty_spec_is_one_line(spec, message):
    with pytest.raises(SafealignError) as e:
        get_pairwise_judge(spec)
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.field == "judge"


def test_openai_judge_uses_the_given_url_else_openai_base_url(letter_server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SafealignError, match=r"needs --base-url \(or OPENAI_BASE_URL\)"):
        get_pairwise_judge("openai:j")
    monkeypatch.setenv("OPENAI_BASE_URL", letter_server)
    j = get_pairwise_judge("openai:j", timeout=5)
    assert isinstance(j, OpenAIPairJudge) and j.id == f"openai:j@{letter_server}" and j.engine.timeout == 5
    assert j.prefer([build_prompt("q", "a", "b")] * 3) == [("B", None)] * 3
    other = get_pairwise_judge("openai:j", base_url="http://127.0.0.1:9/v1")  # --base-url wins over the variable
    assert other.id == "openai:j@http://127.0.0.1:9/v1"


def test_a_bare_model_spec_or_hf_prefix_is_a_local_lm(tiny_lm_dir):
    for spec in (str(tiny_lm_dir), f"hf:{tiny_lm_dir}"):
        j = get_pairwise_judge(spec, batch_size=3)
        assert isinstance(j, HFPairJudge) and j.name == f"hf:{tiny_lm_dir}" and j.batch_size == 3
