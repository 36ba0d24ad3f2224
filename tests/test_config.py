from dataclasses import dataclass, field

import pytest

from safealign.config import describe, load_config, option
from safealign.errors import SafealignError


@dataclass
class Inner:
    lr: float = option(1e-4, "learning rate")
    steps: int = option(10, "steps")
    names: list[str] = option(["a"], "names")


@dataclass
class Outer:
    model: str = option("m", "model")
    flag: bool = option(False, "a flag")
    train: Inner = field(default_factory=Inner)


def test_yaml_and_dotted_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: x\ntrain:\n  lr: 2e-5\n")
    cfg = load_config(Outer, p, ["train.steps=7", "flag=true", "train.names=b,c"])
    assert cfg.model == "x" and cfg.train.lr == 2e-5 and cfg.train.steps == 7 and cfg.flag is True
    assert cfg.train.names == ["b", "c"]


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lrr: 1\n")
    with pytest.raises(SafealignError) as e:
        load_config(Outer, p)
    assert e.value.field == "train.lrr" and str(p) in str(e.value)


def test_bad_value_and_bad_yaml(tmp_path):
    with pytest.raises(SafealignError, match="cannot read"):
        load_config(Outer, None, ["train.steps=many"])
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(SafealignError) as e:
        load_config(Outer, p)
    assert e.value.line is not None and "\n" not in str(e.value)
    with pytest.raises(SafealignError, match="not of the form"):
        load_config(Outer, None, ["novalue"])
    with pytest.raises(SafealignError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_describe_lists_help():
    rows = {name: help for name, _, help in describe(Outer)}
    assert rows["train.lr"] == "learning rate" and rows["flag"] == "a flag"
