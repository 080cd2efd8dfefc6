"""The config sections `tunesmith config` documents, each from its typed class: training configs,
study files (their eval: section is `tunesmith eval`'s settings under the same names) and
evaluation configs. One listing per class, so every key is documented once, where it is defined."""

from __future__ import annotations


def _train():
    from tunesmith.config import TrainConfig

    return TrainConfig, "", "training config (tunesmith train CONFIG.yaml, --set KEY=VALUE; a study arm's `set:`)"


def _study():
    from tunesmith.study.config import STUDY_FILLS, StudyConfig

    filled = ", ".join(f"{k} ({v})" for k, v in STUDY_FILLS.items())
    return StudyConfig, "", ("study (tunesmith study STUDY.yaml, --set KEY=VALUE); eval.* takes every `tunesmith config eval` "
                             f"setting under the same name except those the study sets itself: {filled}")


def _eval():
    from tunesmith.eval.config import EvalConfig

    return EvalConfig, "", "evaluation config (tunesmith eval MODEL --config EVAL.yaml, --set KEY=VALUE)"


SECTIONS = {"train": _train, "study": _study, "eval": _eval}
