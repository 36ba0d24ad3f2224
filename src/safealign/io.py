"""Reading and writing safealign's files: one set of rules for every module (the bottom layer: it imports nothing of
safealign but ``errors``).

- **Atomic writes** (``write_text``, ``write_json``, ``write_jsonl``, ``write_bytes``): a temporary file beside the
  target, then a rename; a kill leaves the old file or the new one, never half of one, and no temporary behind
  when the write itself fails. A directory where a file is to go is one error naming it.
- **JSONL** (``read_jsonl``, ``iter_jsonl``, ``append_jsonl``, ``repair_jsonl``): one JSON object a line, written
  whole. The rule for a half-written last line (a writer killed mid-line): a final line without its newline that
  does not parse is skipped by readers and cut off by ``repair_jsonl`` before anyone appends; one that parses only
  lost its newline and counts. Any other line that is not a JSON object is an error naming the file and line.
- **Text input** (``read_text``): UTF-8; a file that is not UTF-8, a directory or a missing file is one error.
- **Locks** (``locked``): an exclusive lock on an output that is appended to or resumed, held while a command writes
  it; a second writer gets one line naming the holder (pid, command, since when). The lock dies with its process.
- **Hashes** (``sha256_file``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from safealign.errors import SafealignError

# ------------------------------------------------------------------------------------------------ atomic writes


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise SafealignError("is a directory, not a file", file=str(path), field="out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise SafealignError(f"cannot write: {e.strerror or e}", file=str(path), field="out") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


_TEMP_SUFFIX = ".tmp"  # write_bytes writes ``.<name>.<pid>.tmp`` beside ``<name>`` first


def leftover_temps(path: str | Path) -> list[Path]:
    """The temp files that writers of ``path`` killed mid-write left beside it (``write_bytes`` removes its own
    otherwise)."""
    path = Path(path)
    prefix = f".{path.name}."
    if not path.parent.is_dir():
        return []
    return [p for p in path.parent.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(_TEMP_SUFFIX)
            and p.name[len(prefix):-len(_TEMP_SUFFIX)].isdigit()]


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    """Atomic JSON (UTF-8 kept as is; a value JSON has no type for, such as a path, is written as its str)."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def jsonl_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    write_text(path, "".join(jsonl_line(r) for r in rows))


# ------------------------------------------------------------------------------------------------------- reading


def read_text(path: str | Path, field: str = "input") -> str:
    """A UTF-8 text file (gzip-compressed when it ends in .gz); a missing file, a directory, a broken gzip or another
    encoding is one error naming the file (and the line, for the encoding)."""
    import gzip

    path = Path(path)
    if path.is_dir():
        raise SafealignError("is a directory, not a file", file=str(path), field=field)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except FileNotFoundError:
        raise SafealignError("file not found", file=str(path), field=field) from None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SafealignError("not UTF-8 text", file=str(path), line=line, field=field) from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise SafealignError(f"cannot read: {getattr(e, 'strerror', None) or e}", file=str(path), field=field) from None


def iter_jsonl(path: str | Path, field: str = "input") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every line of a JSONL file, blank lines skipped, under the module's rule for a
    half-written last line (skipped when it does not parse)."""
    text = read_text(path, field)
    lines = text.split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last_unterminated = lineno == len(lines)  # text after the final newline: maybe a cut-off write
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if last_unterminated:
                return
            raise SafealignError(f"malformed JSON line: {e.msg}", file=str(path), line=lineno) from None
        if not isinstance(obj, dict):
            raise SafealignError("each line must be a JSON object", file=str(path), line=lineno)
        yield lineno, obj


def read_jsonl(path: str | Path, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every object of a JSONL file (``iter_jsonl``); ``missing_ok``: a missing file reads as empty."""
    if missing_ok and not Path(path).exists():
        return []
    return [obj for _, obj in iter_jsonl(path)]


def repair_jsonl(path: str | Path) -> None:
    """Make a JSONL file end with a complete line before appending to it: a final line that lost only its newline
    gets it back; one cut mid-object is removed."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    if not tail.strip():
        return
    try:
        json.loads(tail)
        with open(path, "ab") as f:
            f.write(b"\n")
    except ValueError:
        with open(path, "r+b") as f:
            f.truncate(cut)


def append_jsonl(f: Any, rows: Iterable[Any]) -> None:
    """Append whole lines to an open text file and make them durable (a kill loses at most the lines not yet
    written, never half of one that was)."""
    f.write("".join(jsonl_line(r) for r in rows))
    f.flush()
    os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------------------- locks


def lock_path(target: str | Path) -> Path:
    """Where the lock of an output lives: ``.NAME.lock`` beside it (never inside an output directory)."""
    target = Path(target).resolve()
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def locked(target: str | Path, kind: str = "dir", field: str = "out") -> Iterator[None]:
    """Hold an exclusive lock on the output ``target`` (``kind``: ``dir`` or ``file``, which it must be if it exists)
    while the block runs. Another process that asks for it meanwhile gets one error naming the holder; the lock is
    released when the block ends or the process dies (``flock``). Take it once per process, at the top of the
    command that writes the output."""
    import fcntl

    target = Path(target)
    if kind == "dir" and target.exists() and not target.is_dir():
        raise SafealignError("is a file, not a directory", file=str(target), field=field)
    if kind == "file" and target.is_dir():
        raise SafealignError("is a directory, not a file", file=str(target), field=field)
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise SafealignError(f"in use by another safealign process ({holder}); wait for it or choose another "
                                 "output", file=str(target), field=field) from None
        fh.seek(0)
        fh.truncate()
        command = " ".join(["safealign", *sys.argv[1:]]) if sys.argv else "?"
        fh.write(f"pid {os.getpid()}: `{command[:200]}`, since {time.strftime('%H:%M:%S')}")
        fh.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


# -------------------------------------------------------------------------------------------------------- hashes


def sha256_file(path: str | Path, chunk: int = 1 << 22, limit: int | None = None) -> str:
    """The hex SHA-256 of a file (of its first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while (left is None or left > 0) and (block := f.read(chunk if left is None else min(chunk, left))):
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()
