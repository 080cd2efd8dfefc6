"""Tests for tunesmith.configlib: YAML/overrides -> typed dataclasses, one-line errors."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tunesmith.configlib import (
    apply_overrides, describe, dump_yaml, field_paths, from_dict, load_config, option,
    parse_overrides, to_dict,
)
from tunesmith.errors import ConfigError


@dataclass
class Model:
    name: str = option(doc="Hugging Face id or local path of the base model.")
    revision: str | None = option(None, "Git revision to pin.")


@dataclass
class Adapter:
    mode: Literal["full", "lora", "freeze"] = option("lora", "Which weights train.")
    rank: int = option(8, "LoRA rank.", minimum=1, maximum=256)
    target_modules: list[str] = option(["q_proj", "v_proj"], "Modules that get adapters.")


@dataclass
class Training:
    lr: float = option(2e-4, "Peak learning rate.", minimum=0)
    epochs: int = option(3, "Passes over the data.", minimum=1)
    warmup_steps: int = option(0, "Linear warmup steps.")
    max_steps: int | None = option(None, "Stop after this many steps.")
    bf16: bool = option(True, "Train in bfloat16.")
    seeds: tuple[int, ...] = option((0,), "One run per seed.")
    loss_weights: dict[str, float] = option(default_factory=dict, doc="Per-source loss weights.")
    scheduler: str = option("cosine", "LR schedule.", choices=("cosine", "linear", "constant"))

    def validate(self) -> None:
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ConfigError("warmup_steps must not exceed max_steps (lower warmup_steps)")


@dataclass
class Top:
    model: Model = option(doc="The base model.")
    adapter: Adapter = option(default_factory=Adapter, doc="How the model is adapted.")
    training: Training = option(default_factory=Training, doc="Optimiser settings.")
    stop: str | list[str] = option("\n", "Stop sequence(s).")
    output_dir: str = option("runs/out", "Where checkpoints go.")


GOOD = """\
model:
  name: gpt2
adapter:
  mode: lora
  rank: 16
  target_modules: [q_proj, k_proj, v_proj]
training:
  lr: 1e-4
  epochs: 2
  max_steps: 100
  warmup_steps: 10
  seeds: [1, 2]
  loss_weights: {chat: 1, code: 0.5}
stop: ["</s>", "###"]
"""


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write train.yaml in a fresh cwd, so messages say `train.yaml:N`."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str, name: str = "train.yaml") -> str:
        (tmp_path / name).write_text(textwrap.dedent(text))
        return name

    return _write


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_yaml_loads_with_types(write):
    cfg = load_config(Top, write(GOOD))
    assert cfg.model == Model(name="gpt2", revision=None)
    assert cfg.adapter == Adapter(mode="lora", rank=16, target_modules=["q_proj", "k_proj", "v_proj"])
    t = cfg.training
    assert t.lr == 1e-4 and isinstance(t.lr, float)  # PyYAML reads 1e-4 as a string
    assert (t.epochs, t.max_steps, t.warmup_steps, t.bf16) == (2, 100, 10, True)
    assert t.seeds == (1, 2)
    assert t.loss_weights == {"chat": 1.0, "code": 0.5} and isinstance(t.loss_weights["chat"], float)
    assert cfg.stop == ["</s>", "###"]
    assert cfg.output_dir == "runs/out"


def test_unknown_key_names_line_and_suggests(write):
    text = GOOD.replace("  warmup_steps: 10\n", "  warmup_steps: 10\n  lrr: 0.1\n")
    assert text.splitlines()[11] == "  lrr: 0.1"
    assert error_of(load_config, Top, write(text)) == (
        "train.yaml:12: training.lrr: unknown key (did you mean 'training.lr'?)")


def test_unknown_key_in_wrong_section_and_no_match(write):
    assert error_of(load_config, Top, write("model: {name: x}\nlr: 0.1\n")) == (
        "train.yaml:2: lr: unknown key (did you mean 'training.lr'?)")
    assert error_of(load_config, Top, write("model:\n  name: x\n  zzz: 1\n")) == (
        "train.yaml:3: model.zzz: unknown key (valid keys: name, revision)")


def test_bad_int(write):
    path = write("model:\n  name: x\ntraining:\n  lr: 0.1\n  epochs: three\n")
    assert error_of(load_config, Top, path) == (
        "train.yaml:5: training.epochs: expected an integer, got 'three'")


def test_bad_float_from_override(write):
    assert error_of(load_config, Top, write("model: {name: x}\n"), ["training.lr=abc"]) == (
        "--set training.lr=abc: training.lr: expected a number, got 'abc'")


def test_literal_choice_with_suggestion(write):
    path = write("model: {name: x}\nadapter:\n  mode: lroa\n")
    assert error_of(load_config, Top, path) == (
        "train.yaml:3: adapter.mode: 'lroa' is not one of full, lora, freeze (did you mean 'lora'?)")


def test_choices_metadata(write):
    path = write("model: {name: x}\ntraining:\n  scheduler: cosin\n")
    assert error_of(load_config, Top, path) == (
        "train.yaml:3: training.scheduler: 'cosin' is not one of cosine, linear, constant "
        "(did you mean 'cosine'?)")


def test_missing_required_field(write):
    assert error_of(load_config, Top, write("training:\n  lr: 0.1\n")) == (
        "train.yaml: model.name: required field is missing (add it: model.name: ...)")
    # With the section present, the line of the parent mapping is known.
    assert error_of(load_config, Top, write("output_dir: o\nmodel:\n  revision: main\n")) == (
        "train.yaml:2: model.name: required field is missing (add it: model.name: ...)")


def test_empty_section_means_defaults(write):
    cfg = load_config(Top, write("model:\n  name: x\nadapter:\ntraining:\n"))
    assert cfg.adapter == Adapter() and cfg.training == Training()


def test_yaml_syntax_error_is_one_line(write):
    message = error_of(load_config, Top, write("model:\n  name: x\n bad: [1, 2\n"))
    assert message.startswith("train.yaml:3: invalid YAML: ")


def test_missing_file(write):
    assert error_of(load_config, Top, "nope.yaml") == "nope.yaml: no such config file"


def test_top_level_must_be_mapping(write):
    assert error_of(load_config, Top, write("- a\n- b\n")).startswith(
        "train.yaml:1: expected a mapping of config keys at the top level")


def test_duplicate_key(write):
    assert error_of(load_config, Top, write("model:\n  name: a\n  name: b\n")) == (
        "train.yaml:3: model.name: duplicate key (first set on line 2; keep one)")


def test_strict_scalars(write):
    m = error_of(load_config, Top, write("model: {name: x}\ntraining: {epochs: true}\n"))
    assert m == "train.yaml:2: training.epochs: expected an integer, got true"
    m = error_of(load_config, Top, write("model:\n  name: x\n  revision: 1.10\n"))
    assert m == "train.yaml:3: model.revision: expected a string, got 1.1 (quote it: '1.10')"
    m = error_of(load_config, Top, write("model: {name: x}\nadapter:\n  rank: 0\n"))
    assert m == "train.yaml:3: adapter.rank: must be >= 1, got 0"
    m = error_of(load_config, Top, write("model: {name: x}\nadapter:\n  target_modules: q_proj\n"))
    assert m == ("train.yaml:3: adapter.target_modules: expected a list, got 'q_proj' "
                 "(write it as a list: [q_proj])")


def test_list_item_error_points_at_item_line(write):
    path = write("model: {name: x}\nadapter:\n  target_modules:\n    - q_proj\n    - 5\n")
    assert error_of(load_config, Top, path) == (
        "train.yaml:5: adapter.target_modules[1]: expected a string, got 5 (quote it: '5')")


def test_union_tries_each_member(write):
    assert load_config(Top, write("model: {name: x}\nstop: END\n")).stop == "END"
    m = error_of(load_config, Top, write("model: {name: x}\nstop: 5\n"))
    assert m == "train.yaml:2: stop: expected a string or a list, got 5"


def test_overrides_set_nested_values_lists_and_null(write):
    path = write(GOOD)
    cfg = load_config(Top, path, [
        "training.lr=2e-5", "adapter.target_modules=[q_proj, o_proj]", "training.max_steps=null",
        "training.bf16=false", "model.revision=1.10", "training.loss_weights.math=2",
        "adapter.mode=full",
    ])
    assert cfg.training.lr == 2e-5
    assert cfg.adapter.target_modules == ["q_proj", "o_proj"]
    assert cfg.training.max_steps is None and cfg.training.bf16 is False
    assert cfg.model.revision == "1.10"  # a str field keeps the override's text
    assert cfg.training.loss_weights == {"chat": 1.0, "code": 0.5, "math": 2.0}
    assert cfg.adapter.mode == "full"


def test_overrides_without_file_and_with_base():
    cfg = load_config(Top, None, ["model.name=gpt2"], base={"training": {"epochs": 7}})
    assert (cfg.model.name, cfg.training.epochs) == ("gpt2", 7)


def test_base_sits_under_the_file(write):
    cfg = load_config(Top, write(GOOD), base={"training": {"epochs": 9, "warmup_steps": 1}})
    assert (cfg.training.epochs, cfg.training.warmup_steps) == (2, 10)


def test_unknown_override_key_suggests_full_path(write):
    path = write(GOOD)
    assert error_of(load_config, Top, path, ["training.lrr=1"]) == (
        "--set training.lrr=1: training.lrr: unknown key (did you mean 'training.lr'?)")
    assert error_of(load_config, Top, path, ["trainig.lr=1"]) == (
        "--set trainig.lr=1: trainig.lr: unknown key (did you mean 'training.lr'?)")
    assert error_of(load_config, Top, path, ["training.lr.x=1"]) == (
        "--set training.lr.x=1: training.lr.x: training.lr is a number, not a section")


def test_override_bool_text_and_bad_list_item(write):
    path = write(GOOD)
    assert load_config(Top, path, ["training.bf16=False"]).training.bf16 is False
    assert from_dict(Top, {"model": {"name": "x"}, "training": {"bf16": "true"}}).training.bf16 is True
    assert error_of(load_config, Top, path, ["adapter.target_modules=[q, 5]"]) == (
        "--set adapter.target_modules=[q, 5]: adapter.target_modules[1]: "
        "expected a string, got 5 (quote it: '5')")


def test_parse_overrides():
    assert parse_overrides(["a.b=1e-4", "c=[q_proj, v_proj]", "d=null", "e=", "f=x=y"]) == [
        ("a.b", "1e-4"), ("c", ["q_proj", "v_proj"]), ("d", None), ("e", ""), ("f", "x=y")]
    assert error_of(parse_overrides, ["training.lr"]) == (
        "--set training.lr: expected key=value (e.g. --set training.learning_rate=1e-4)")
    assert error_of(parse_overrides, ["c=[a, b"]).startswith("--set c=[a, b: invalid value: ")


def test_apply_overrides_returns_a_copy():
    data = {"model": {"name": "x"}}
    out = apply_overrides(data, Top, ["adapter.rank=4", ("training.seeds", [3])])
    assert out == {"model": {"name": "x"}, "adapter": {"rank": 4}, "training": {"seeds": [3]}}
    assert data == {"model": {"name": "x"}}


def test_from_dict_uses_given_lines():
    m = error_of(from_dict, Top, {"model": {"name": "x"}, "training": {"epochs": "three"}},
                 source="cfg.yaml", lines={"training": 4, "training.epochs": 6})
    assert m == "cfg.yaml:6: training.epochs: expected an integer, got 'three'"


def test_validate_hook_error_propagates(write):
    path = write("model: {name: x}\ntraining:\n  max_steps: 5\n  warmup_steps: 10\n")
    assert error_of(load_config, Top, path) == (
        "train.yaml:2: training: warmup_steps must not exceed max_steps (lower warmup_steps)")


def test_dump_yaml_round_trip(write):
    cfg = load_config(Top, write(GOOD), ["training.lr=2e-5", "model.revision=main"])
    text = dump_yaml(cfg)
    assert text.index("model:") < text.index("adapter:") < text.index("training:")
    assert load_config(Top, write(text, "dumped.yaml")) == cfg
    assert list(to_dict(cfg)) == ["model", "adapter", "training", "stop", "output_dir"]
    assert to_dict(cfg)["training"]["seeds"] == [1, 2]


def test_describe_lists_every_field_with_doc():
    text = describe(Top)
    lines = text.splitlines()
    assert len(lines) == len(field_paths(Top))
    for path, line in zip(field_paths(Top), lines):
        assert line.split()[0] == path
    row = next(line for line in lines if line.startswith("training.lr "))
    assert "float" in row and "0.0002" in row and "Peak learning rate." in row and ">= 0" in row
    assert "(required)" in next(line for line in lines if line.startswith("model.name "))
    assert "{full,lora,freeze}" in next(line for line in lines if line.startswith("adapter.mode "))
    assert describe(Training, "training").splitlines()[0].startswith("training.lr ")


def test_field_paths():
    assert field_paths(Model) == ["name", "revision"]
    paths = field_paths(Top)
    assert paths[:3] == ["model", "model.name", "model.revision"]
    assert "training.loss_weights" in paths and "output_dir" in paths


def test_option_rejects_both_defaults():
    with pytest.raises(TypeError):
        option(1, default_factory=list)


def test_keys_are_names_as_written_not_yaml11_booleans(tmp_path):
    """`on:` (a study arm's field), `yes:` or `0:` as keys stay the names written, not True or 0."""
    from tunesmith.configlib import _Ctx, _read_yaml

    f = tmp_path / "c.yaml"
    f.write_text("on: base\nyes: 1\n0: negative\nlabels: [\"yes\", \"no\"]\n")
    assert _read_yaml(f, _Ctx(str(f), dict)) == {"on": "base", "yes": 1, "0": "negative", "labels": ["yes", "no"]}
