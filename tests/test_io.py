"""safealign.io: atomic writes, the JSONL rule for a half-written last line, one-line errors for bad input files, and
the output lock between two real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from safealign import io
from safealign.errors import SafealignError


def test_atomic_write_leaves_nothing_behind_and_refuses_a_directory(tmp_path):
    io.write_json(tmp_path / "a" / "x.json", {"k": "é"})
    assert json.loads((tmp_path / "a" / "x.json").read_text(encoding="utf-8")) == {"k": "é"}
    (tmp_path / "d").mkdir()
    with pytest.raises(SafealignError, match="is a directory") as e:
        io.write_text(tmp_path / "d", "x")
    assert e.value.file == str(tmp_path / "d")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "d", "x.json"]  # no temp file anywhere


def test_jsonl_rule_for_a_half_written_last_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')  # killed mid-line
    assert io.read_jsonl(f) == [{"a": 1}, {"a": 2}]
    io.repair_jsonl(f)
    assert f.read_text() == '{"a": 1}\n\n{"a": 2}\n'
    f.write_text('{"a": 1}\n{"a": 2}')  # only the newline was lost: the line counts, and gets its newline back
    assert io.read_jsonl(f) == [{"a": 1}, {"a": 2}]
    io.repair_jsonl(f)
    assert f.read_text() == '{"a": 1}\n{"a": 2}\n'
    f.write_text('{"a": 1}\nnot json\n{"a": 3}\n')  # a bad line that is not the last: an error naming it
    with pytest.raises(SafealignError) as e:
        io.read_jsonl(f)
    assert (e.value.file, e.value.line) == (str(f), 2)
    f.write_text('[1, 2]\n')
    with pytest.raises(SafealignError, match="JSON object"):
        io.read_jsonl(f)
    assert io.read_jsonl(tmp_path / "missing.jsonl", missing_ok=True) == []


def test_bad_text_input_is_one_error(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(SafealignError, match="not UTF-8") as e:
        io.read_jsonl(bad)
    assert e.value.line == 2
    with pytest.raises(SafealignError, match="is a directory"):
        io.read_text(tmp_path)
    with pytest.raises(SafealignError, match="not found"):
        io.read_text(tmp_path / "nope.txt")


def test_sha256_file(tmp_path):
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(b"abc" * 1000)
    assert io.sha256_file(f, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert io.sha256_file(f, chunk=7, limit=10) == hashlib.sha256(b"abcabcabca").hexdigest()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    """Two real processes: the first holds the lock on an output dir; the second is refused in one line."""
    out = tmp_path / "ev"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from safealign import io
        with io.locked({str(out)!r}):
            print("locked", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "safealign", "eval", "--benchmarks", "i-cona", "--limit", "1",
                                 "--judge", "keywords", "--out", str(out)], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.count("\n") == 1 and "in use by another safealign process (pid" in second.stderr
        assert f"pid {holder.pid}" in second.stderr
    finally:
        holder.kill()
        holder.wait()
    with io.locked(out):  # the holder died: the lock went with it
        pass
    assert io.lock_path(out) == (tmp_path / ".ev.lock").resolve()  # beside the output, never inside it
    assert not out.exists() or not any(p.name.endswith(".lock") for p in out.iterdir())
