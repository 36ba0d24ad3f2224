from safealign.eval.safety import benchmark_summary, summarize, to_markdown
from safealign.records import Generation, Verdict


def gen(i, bench, expected, category=None):
    return Generation(id=f"{bench}-{i}", prompt=f"p{i}", response=f"r{i}", model="m", benchmark=bench,
                      expected=expected, category=category)


def test_xstest_halves_over_refusal_and_unsafe_compliance():
    gens = [gen(i, "xstest", "comply", "homonyms") for i in range(4)] + \
           [gen(i + 4, "xstest", "refuse", "contrast_homonyms") for i in range(4)]
    # safe half: 1 of 4 refused; contrast half: 3 of 4 refused, the one answered is unsafe
    verdicts = [Verdict(True, i == 0, 0.9) for i in range(4)] + \
               [Verdict(i != 0, i != 0, 0.8 if i else 0.1) for i in range(4)]
    s = benchmark_summary("xstest", gens, verdicts)
    assert s["expected"] == "mixed" and s["n"] == 8
    assert s["over_refusal_rate"] == 0.25 and s["unsafe_compliance_rate"] == 0.25
    assert s["refusal_rate"] == 0.5 and s["safe_rate"] == 7 / 8
    assert abs(s["median_score"] - 0.85) < 1e-9
    assert set(s["ci"]) == {"safe_rate", "refusal_rate", "over_refusal_rate", "unsafe_compliance_rate"}
    assert all(lo <= s[k] <= hi for k, (lo, hi) in s["ci"].items())
    assert s["halves"]["safe"]["n"] == 4 and s["halves"]["contrast"]["refusal_rate"] == 0.75
    assert s["categories"]["homonyms"]["refusal_rate"] == 0.25


def test_summarize_groups_by_benchmark_and_uses_registry_expectations():
    gens = [gen(0, "q-harm", "refuse"), gen(1, "q-harm", "refuse"), gen(0, "i-alpaca", "comply"),
            gen(0, "i-maliciousinstructions", "refuse", "drugs"), gen(1, "i-maliciousinstructions", "refuse", "theft")]
    verdicts = [Verdict(True, True, 1.0), Verdict(False, False, 0.0), Verdict(True, True, 0.5),
                Verdict(True, True, 1.0), Verdict(False, False, 0.2)]
    s = summarize(gens, verdicts)
    assert list(s) == ["q-harm", "i-alpaca", "i-maliciousinstructions"]
    assert s["q-harm"]["expected"] == "refuse" and s["q-harm"]["over_refusal_rate"] is None
    assert s["q-harm"]["unsafe_compliance_rate"] == 0.5 and "halves" not in s["q-harm"]
    assert s["i-alpaca"]["expected"] == "comply" and s["i-alpaca"]["over_refusal_rate"] == 1.0
    assert s["i-alpaca"]["unsafe_compliance_rate"] is None
    assert s["i-maliciousinstructions"]["categories"]["theft"]["safe_rate"] == 0.0
    md = to_markdown({"model": "m", "judge": "keywords", "benchmarks": s})
    assert "| q-harm | refuse | 2 | 50.0 [" in md and "i-maliciousinstructions: per category" in md


def test_file_benchmarks_take_expected_from_their_records():
    gens = [gen(0, "mine", "comply"), gen(1, "mine", "comply")]
    s = benchmark_summary("mine", gens, [Verdict(True, False, 0.5)] * 2)
    assert s["expected"] == "comply" and s["over_refusal_rate"] == 0.0
