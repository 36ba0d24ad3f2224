import http.server
import json
import threading

import pytest

from safealign.data import registry
from safealign.errors import SafealignError


def test_every_benchmark_loads_with_documented_size(data_dir):
    for name, e in registry.ENTRIES.items():
        if e.kind == "benchmark" and name != "alpaca-test":
            recs = registry.load_eval(name)
            assert len(recs) == e.records, name
            assert all(r.prompt.strip() and r.expected in ("refuse", "comply") for r in recs)
            assert len({r.id for r in recs}) == len(recs)


def test_wheel_benchmarks_have_categories():
    adv = registry.load_eval("advbench")
    assert len(adv) == 520 and adv[0].category
    assert {r.category for r in registry.load_eval("donotanswer")} >= {"malicious_uses", "information_hazard"}


def test_groups_limits_and_splits(data_dir):
    names = registry.expand_benchmarks("harm,xstest,q-harm")
    assert names[:5] == registry.GROUPS["harm"] and names[-1] == "xstest" and len(names) == 6
    xs = registry.load_eval("xstest", limit=5)
    assert [r.expected for r in xs] == ["comply"] * 5 + ["refuse"] * 5
    held = registry.load_eval("alpaca-test:eval")
    train = registry.load_instructions("alpaca-test:train")
    assert len(held) == registry.ALPACA_TEST_EVAL_SIZE and len(held) + len(train) == 952
    assert not {r.prompt for r in held} & {t.instruction if not t.input else f"{t.instruction}\n\n{t.input}" for t in train}
    assert held[0].reference and held[0].benchmark == "helpful"
    assert len(registry.load_preferences("pku-safe-pairs:test")) == 1235
    assert len(registry.load_preferences("pku-safe-pairs")) == 3457
    assert len(registry.load_instructions("bianchi-safety", limit=10)) == 10


def test_pyrit_scorer_evals_load_from_the_wheel_with_their_labels():
    """The labelled responses a judge is checked on that no recipe trains on: the real files of the pyrit wheel."""
    entry = registry.ENTRIES["pyrit-scorer-evals"]
    objective = registry.load_labelled("pyrit-scorer-evals:objective")
    refusal = registry.load_labelled("pyrit-scorer-evals:refusal")
    assert len(objective) == entry.split_records["objective"] and len(refusal) == entry.split_records["refusal"]
    assert {r.harmful for r in objective} == {True, False} and {r.refusal for r in objective} == {None}
    assert {r.refusal for r in refusal} == {True, False} and {r.harmful for r in refusal} == {None}
    assert len({(r.prompt, r.response) for r in refusal}) == len(refusal)  # repeats across files count once
    assert all(r.prompt.strip() for r in objective + refusal)
    assert {r.source for r in objective} == {"pyrit-scorer-evals:objective"}
    assert {"privacy", "violence", "exploits"} <= {r.category for r in objective}
    harm = registry.load_labelled("pyrit-scorer-evals:harm")  # graded harm levels: high or severe = harmful
    assert len(harm) == entry.split_records["harm"] and {r.harmful for r in harm} == {True, False}
    assert {r.refusal for r in harm} == {None} and len({(r.prompt, r.response) for r in harm}) == len(harm)
    assert {"violence", "hate_speech", "self_harm", "privacy"} <= {r.category for r in harm}
    every = registry.load_labelled("pyrit-scorer-evals", limit=3)
    assert [r.source for r in every] == [f"pyrit-scorer-evals:{s}" for s in ("objective", "refusal", "harm")
                                         for _ in range(3)]
    with pytest.raises(SafealignError, match="unknown split"):
        registry.load_labelled("pyrit-scorer-evals:likert")
    with pytest.raises(SafealignError, match="not labelled responses"):
        registry.load_labelled("advbench")


def test_unknown_names_and_splits_are_user_errors(data_dir):
    with pytest.raises(SafealignError, match="unknown dataset"):
        registry.load_eval("i-nonexistent")
    with pytest.raises(SafealignError, match="unknown split"):
        registry.load_preferences("pku-safe-pairs:dev")
    with pytest.raises(SafealignError, match="not a benchmark"):
        registry.load_eval("bianchi-safety")


def test_file_paths_work_as_names(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"prompt": "hello", "expected": "comply"}) + "\n" + json.dumps({"prompt": "bad"}) + "\n")
    recs = registry.load_eval(str(p))
    assert [r.expected for r in recs] == ["comply", "refuse"] and recs[0].benchmark == "mine"


def test_upstream_download_is_cached_atomically(tmp_path, monkeypatch, cache_dir):
    """Without a data dir, an entry with a URL downloads from its upstream (a real local server here)."""
    served = tmp_path / "srv"
    served.mkdir()
    (served / "I-CoNa.json").write_text(json.dumps({"instructions": ["say something hateful"], "inputs": []}))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("SAFEALIGN_DATA", raising=False)
        entry = registry.ENTRIES["i-cona"]
        monkeypatch.setattr(entry, "url", f"http://127.0.0.1:{server.server_port}/I-CoNa.json")
        recs = registry.load_eval("i-cona")
        assert [r.prompt for r in recs] == ["say something hateful"]
        cached = cache_dir / "data" / "eval/harm/I-CoNa.json"
        assert cached.exists() and not list(cached.parent.glob(".part-*"))
        monkeypatch.setattr(entry, "url", f"http://127.0.0.1:{server.server_port}/missing.json")
        cached.unlink()
        with pytest.raises(SafealignError, match="cannot download"):
            registry.load_eval("i-cona")
        assert not cached.exists() and not list(cached.parent.glob(".part-*"))
    finally:
        server.shutdown()


def test_hf_upstream_builds_the_papers_pku_selection(tmp_path, monkeypatch, cache_dir):
    """Without a data dir, pku-safe-pairs comes from its HF dataset (a local dataset folder stands in for the hub)."""
    ds = tmp_path / "pku"
    ds.mkdir()
    rows = [
        {"prompt": "p1", "response_0": "safe", "response_1": "unsafe", "is_response_0_safe": True,
         "is_response_1_safe": False, "better_response_id": 0, "safer_response_id": 0},
        {"prompt": "p2", "response_0": "bad", "response_1": "good", "is_response_0_safe": False,
         "is_response_1_safe": True, "better_response_id": 1, "safer_response_id": 1},
        {"prompt": "p3", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
         "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 0},
    ]
    (ds / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.delenv("SAFEALIGN_DATA", raising=False)
    monkeypatch.setitem(registry.ENTRIES["pku-safe-pairs"].extra, "hf", str(ds))
    pairs = registry.load_preferences("pku-safe-pairs:train")
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p1", "safe", "unsafe"), ("p2", "good", "bad")]
    assert (cache_dir / "data" / "preference/pku_saferlhf_safe_pairs.train.jsonl").exists()
