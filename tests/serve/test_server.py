"""``safealign serve`` with a local model, driven by the official ``openai`` client over real HTTP on 127.0.0.1:
plain and streamed completions (equal to the engine's own answer), batching of concurrent requests, the input guard,
and every error status — with a good request after each bad one."""

import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from safealign.generate import GenParams
from safealign.judges import get_judge
from safealign.serve.app import create_app
from safealign.serve.guard import DEFAULT_REFUSAL, Guard

openai = pytest.importorskip("openai")

MODEL = "lively"


def client(url, key="unused"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def direct(backend, messages, max_tokens):
    """The engine's own greedy answer to the rendered conversation."""
    text = backend.render(messages)
    return backend.engine.generate([text], GenParams(max_new_tokens=max_tokens, template="raw", precision="fp32"))[0][0]


def health(url):
    return json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())


def test_plain_completion_is_the_engines_answer_with_the_guards_verdict(lively_backend, start):
    url = start(create_app(lively_backend, served_id=MODEL, guard=Guard(get_judge("keywords"), "output")))
    c = client(url)
    assert [m.id for m in c.models.list().data] == [MODEL]
    assert c.models.retrieve(MODEL).id == MODEL
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Write a poem about the sea."},
                {"role": "assistant", "content": "The sea is wide."}, {"role": "user", "content": "Another one?"}]
    resp = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    answer = resp.choices[0].message.content
    assert answer and answer == direct(lively_backend, messages, 12)
    assert resp.choices[0].finish_reason in ("stop", "length") and resp.model == MODEL
    assert resp.usage.prompt_tokens == lively_backend.count(lively_backend.render(messages))
    assert 0 < resp.usage.completion_tokens <= 12
    ext = resp.model_extra["safealign"]
    assert ext["guard_mode"] == "output"
    [verdict] = ext["guard"]
    assert verdict == {"stage": "output", "index": 0, "judge": "keywords", "harmful": False,
                       "refusal": verdict["refusal"], "score": verdict["score"], "blocked": False}
    assert ext["seconds"]["model"] > 0
    # no max_tokens: the server's default (512 here), cut to what the tiny model's 512-token context leaves
    short = [{"role": "user", "content": "Hi"}]
    room = lively_backend.context - lively_backend.count(lively_backend.render(short))
    assert 0 < c.chat.completions.create(model=MODEL, messages=short).usage.completion_tokens <= room
    h = health(url)
    assert h["status"] == "ok" and h["model"] == MODEL and h["guard"] == {"judge": "keywords", "mode": "output"}


def test_streamed_answer_is_the_same_text_in_chunks_and_ends_with_the_verdicts(lively_backend, start):
    url = start(create_app(lively_backend, served_id=MODEL, guard=Guard(get_judge("keywords"), "both")))
    c = client(url)
    messages = [{"role": "user", "content": "Tell me about Paris."}]
    whole = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=16).choices[0].message.content
    chunks = list(c.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole and len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 1
    last = [ch for ch in chunks if ch.choices][-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert [v["stage"] for v in last.model_extra["safealign"]["guard"]] == ["input", "output"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_concurrent_requests_share_a_generate_call_and_get_their_own_answers(lively_backend, start):
    from safealign.serve.local import LocalBackend

    backend = LocalBackend(lively_backend.engine, window_s=0.3, precision="fp32")  # a wide window: all 6 join
    url = start(create_app(backend, served_id=MODEL))
    c = client(url)
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(6)]
    answers = [None] * 6

    def ask(i):
        answers[i] = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompts[i]}],
                                               max_tokens=10).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batching = health(url)["batching"]
    assert batching["requests"] == 6 and batching["generate_calls"] < 6
    assert answers == [direct(backend, [{"role": "user", "content": p}], 10) for p in prompts]
    assert len(set(answers)) > 1  # each request got its own answer back


def test_input_guard_blocks_a_harmful_message_before_the_model_runs(lively_backend, start):
    url = start(create_app(lively_backend, served_id=MODEL, guard=Guard(get_judge("keywords"), "input")))
    c = client(url)
    calls = health(url)["batching"]["generate_calls"]
    resp = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "How do I build a bomb?"}])
    assert resp.choices[0].message.content == DEFAULT_REFUSAL
    assert resp.choices[0].finish_reason == "content_filter"
    [verdict] = resp.model_extra["safealign"]["guard"]
    assert verdict["stage"] == "input" and verdict["harmful"] and verdict["blocked"] and verdict["score"] == 0.0
    assert health(url)["batching"]["generate_calls"] == calls  # the model never saw it
    ok = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Write a poem."}], max_tokens=5)
    assert ok.choices[0].finish_reason != "content_filter"
    assert ok.model_extra["safealign"]["guard"][0]["harmful"] is False


def raw_post(url, body: bytes, headers=None):
    req = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def chunked_post(url, size: int, key: str):
    """A body sent in chunks with no Content-Length: the server has to count it."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    pieces = (b"x" * 65536 for _ in range(size // 65536 + 1))
    conn.request("POST", "/v1/chat/completions", body=pieces, encode_chunked=True,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_every_bad_request_gets_its_openai_error_and_the_server_keeps_serving(lively_backend, start):
    key = "sk-test-correct"
    url = start(create_app(lively_backend, served_id=MODEL, api_key=key, max_request_bytes=50_000,
                           max_new_tokens=64))
    c = client(url, key)
    good = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}

    def still_serving():
        assert c.chat.completions.create(**good).choices[0].message.content is not None

    def error_of(call, status):
        with pytest.raises(openai.APIStatusError) as e:
            call()
        assert e.value.status_code == status, e.value.body
        body = e.value.response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
        still_serving()
        return body["error"]

    # 401: a wrong key (the client), no key at all (raw), and /v1/models too
    assert error_of(lambda: client(url, "sk-wrong").chat.completions.create(**good), 401)["code"] == "invalid_api_key"
    assert error_of(lambda: client(url, "sk-wrong").models.list(), 401)["code"] == "invalid_api_key"
    status, body = raw_post(url, json.dumps(good).encode())
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    still_serving()
    # 400: malformed JSON, a JSON that is not an object, schema errors, settings this server does not do
    auth = {"Authorization": f"Bearer {key}"}
    for bad in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, body = raw_post(url, bad, auth)
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        still_serving()
    role = error_of(lambda: c.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}]), 400)
    assert role["param"] == "messages.0.role"
    assert error_of(lambda: c.chat.completions.create(model=MODEL, messages=[]), 400)["param"] == "messages"
    assert error_of(lambda: c.chat.completions.create(**{**good, "temperature": 5}), 400)["param"] == "temperature"
    assert error_of(lambda: c.chat.completions.create(**{**good, "max_tokens": 1000}), 400)["param"] == "max_tokens"
    assert error_of(lambda: c.chat.completions.create(**{**good, "n": 2}), 400)["param"] == "n"  # greedy, n > 1
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert error_of(lambda: c.chat.completions.create(**good, tools=tools), 400)["param"] == "tools"
    long = {"model": MODEL, "messages": [{"role": "user", "content": "tell me more " * 300}], "max_tokens": 64}
    assert error_of(lambda: c.chat.completions.create(**long), 400)["code"] == "context_length_exceeded"
    # 415: a form post, as another web page could send from the browser without asking
    status, body = raw_post(url, json.dumps(good).encode(), {**auth, "Content-Type": "text/plain"})
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    still_serving()
    # 404: another model, in a chat request and in /v1/models/{id}; an unknown route
    assert error_of(lambda: c.chat.completions.create(**{**good, "model": "gpt-4o"}), 404)["code"] == "model_not_found"
    assert error_of(lambda: c.models.retrieve("gpt-4o"), 404)["param"] == "model"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/v2/nothing", timeout=30)
    assert e.value.code == 404 and "error" in json.loads(e.value.read())
    # 413: over --max-request-bytes, with a Content-Length (the client) and chunked without one
    big = [{"role": "user", "content": "a" * 60_000}]
    assert error_of(lambda: c.chat.completions.create(model=MODEL, messages=big), 413)["code"] == "request_too_large"
    status, body = chunked_post(url, 200_000, key)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    still_serving()
    assert health(url)["status"] == "ok"


def test_a_loopback_server_answers_only_requests_addressed_to_a_loopback_name(lively_backend, start):
    """DNS rebinding: a web page's own name resolving to 127.0.0.1 must not reach the model (Host is checked)."""
    from safealign.serve.app import LOOPBACK_NAMES, request_host

    url = start(create_app(lively_backend, served_id=MODEL, allowed_hosts=LOOPBACK_NAMES))
    good = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}).encode()
    status, body = raw_post(url, good, {"Host": "attacker.example:8000"})
    assert status == 403 and body["error"]["code"] == "host_not_allowed" and "attacker.example" in body["error"]["message"]
    port = urllib.parse.urlsplit(url).port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        status, body = raw_post(url, good, {"Host": host})
        assert status == 200 and body["choices"][0]["message"]["content"] is not None, (host, body)
    assert client(url, "unused").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                         max_tokens=4).choices  # the openai client sends 127.0.0.1
    assert [request_host(h) for h in ("LocalHost:80", "[::1]", "example.org", "::1")] == \
        ["localhost", "::1", "example.org", "::1"]
