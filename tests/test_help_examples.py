"""Every example a user copies from the help texts, the README and docs/scenarios.md is run: quick
commands for real, the rest through the CLI's own parser and the config loaders, so that an
example with an unknown key, a wrong flag or a missing config file fails here first."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tunesmith import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "scenarios.md"]
# Commands cheap enough to run for real in a test.
RUN = {("--version",), ("config",), ("config", "study"), ("config", "eval"), ("config", "all"), ("models",)}


def _help_texts(parser) -> list[tuple[str, str]]:
    """(subcommand path, text) of every help string and description, recursively."""
    import argparse

    out = [(parser.prog, parser.description or "")]
    for action in parser._actions:
        out.append((parser.prog, action.help or ""))
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                out.append((parser.prog, choice.help or ""))
            for sub in action.choices.values():
                out += _help_texts(sub)
    return out


def _config_class(prog: str):
    from tunesmith.config import TrainConfig
    from tunesmith.eval.config import EvalConfig
    from tunesmith.study.config import StudyConfig

    word = prog.split()[-1]
    return {"train": (TrainConfig, {"data": {"train": "x.jsonl"}}), "eval": (EvalConfig, {"data": "x.jsonl"}),
            "study": (StudyConfig, {"data": {"train": "a", "test": "b"}, "arms": [{"name": "zs"}]})}.get(word)


def test_every_set_example_in_the_help_texts_is_a_real_key():
    from tunesmith import configlib

    found = 0
    for prog, text in _help_texts(cli.build_parser()) + [("tunesmith train", configlib.parse_overrides.__doc__ or "")]:
        for key, value in re.findall(r"--set ([\w.]+)=(\S+?)[),]?(?:\s|$)", text):
            cls, base = _config_class(prog) or _config_class("tunesmith train")
            data = configlib.apply_overrides(base, cls, [f"{key}={value}"])
            configlib.from_dict(cls, data)
            found += 1
    assert found >= 1  # train's --set example at least


def test_the_other_flag_examples_in_the_help_texts_work():
    from tunesmith.registry import REWARDS

    texts = " ".join(t for _, t in _help_texts(cli.build_parser()))
    for item in re.findall(r"e\.g\. --field (\S+)", texts):
        assert cli._fields_arg([item])
    for item in re.findall(r"e\.g\. --reward (\S+?)[),]?(?:\s|$)", texts):
        assert REWARDS.get(next(iter(cli._rewards_arg([item]))))


def test_the_override_error_message_gives_a_working_example():
    from tunesmith import configlib
    from tunesmith.config import TrainConfig
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        configlib.parse_overrides(["training.learning_rate"])
    key, value = re.search(r"e\.g\. --set ([\w.]+)=(\S+?)\)", str(e.value)).groups()
    configlib.from_dict(TrainConfig, configlib.apply_overrides({"data": {"train": "x"}}, TrainConfig, [f"{key}={value}"]))


def _commands(path: Path) -> list[str]:
    """`tunesmith ...` lines of the file's bash code blocks, comments removed."""
    text, out = path.read_text(encoding="utf-8"), []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line.strip())
            if line.startswith("tunesmith "):
                out.append(line)
    return out


EXAMPLES = [(p.name, c) for p in DOCS if p.exists() for c in _commands(p)]


def test_the_docs_have_examples():
    assert len([c for name, c in EXAMPLES if name == "README.md"]) >= 10


@pytest.mark.parametrize("doc,command", EXAMPLES, ids=[f"{d}:{c[:60]}" for d, c in EXAMPLES])
def test_doc_example_parses_and_its_configs_load(doc, command, capsys, monkeypatch):
    from tunesmith.config import TrainConfig
    from tunesmith.configlib import load_config
    from tunesmith.eval.config import load_eval_config
    from tunesmith.study.config import load_study_config

    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    if argv == ["--version"]:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0 and capsys.readouterr().out.startswith("tunesmith ")
        return
    if tuple(argv) in RUN:
        assert cli.main(argv) == 0
        return
    args = cli._compare_parser().parse_args(argv[2:]) if argv[:2] == ["eval", "compare"] else cli.build_parser().parse_args(argv)
    sets = getattr(args, "set", None) or []
    config = getattr(args, "config", None)
    command = getattr(args, "command", "eval compare")
    if command == "train":
        load_config(TrainConfig, config, sets)
    elif command == "study":
        load_study_config(config, sets)
    elif command == "eval" and config:
        load_eval_config(config, sets)


@pytest.mark.parametrize("section", ["train", "study", "eval"])
def test_config_lists_every_key_of_its_class_once(section, capsys):
    from tunesmith import configlib
    from tunesmith.config import TrainConfig
    from tunesmith.eval.config import EvalConfig
    from tunesmith.study.config import StudyConfig

    assert cli.main(["config", section]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out[1:] if line.strip()]
    cls = {"train": TrainConfig, "study": StudyConfig, "eval": EvalConfig}[section]
    assert names == configlib.field_paths(cls)
    if section == "study":
        assert {"budget.match", "budget.steps", "eval.prompt", "eval.fields", "eval.shuffle", "eval.show_tests",
                "eval.judge.base_url"} <= set(names)


def test_version(capsys):
    from tunesmith import __version__

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"tunesmith {__version__}"


def test_the_files_the_help_texts_point_to_exist():
    texts = " ".join(t for _, t in _help_texts(cli.build_parser()))
    paths = set(re.findall(r"examples/[\w./*-]*[\w/*]", texts))
    assert paths
    for p in paths:
        assert list(ROOT.glob(p.rstrip("/"))), p
