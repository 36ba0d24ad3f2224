from safealign.errors import SafealignError


def test_message_is_one_line_with_location():
    e = SafealignError("bad\nthing", file="x.jsonl", line=3, field="prompt")
    assert str(e) == "x.jsonl:3: field 'prompt': bad thing"
    assert str(SafealignError("oops")) == "oops"
