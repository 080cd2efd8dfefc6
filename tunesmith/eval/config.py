"""Typed configuration of an evaluation: what data, which task, how prompts are built, how
answers are generated and scored. `tunesmith eval` flags and `examples/eval/*.yaml` files both
parse into `EvalConfig`; the settings that change results also key the result cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tunesmith import configlib
from tunesmith.configlib import SEED_MAX, option
from tunesmith.errors import ConfigError

TASKS = ("qa", "classification", "summarization", "translation", "code", "math", "chat", "creative")


@dataclass
class JudgeSettings:
    base_url: str | None = option(None, "OpenAI-compatible endpoint of the judge, e.g. http://127.0.0.1:8000/v1 (unset: no judge; helpfulness is then a proxy)")
    model: str = option("judge", "Model name sent to the judge endpoint")
    api_key_env: str | None = option("OPENAI_API_KEY", "Environment variable holding the judge's API key")
    rubrics: list[str] = option(default_factory=lambda: ["helpfulness"], doc="Rubrics to score: helpfulness, correctness (needs references), domain_adherence (needs `domain`), instruction_following, style (needs references: texts of the genre), writing_quality")
    domain: str | None = option(None, "One-line description of the domain, for the domain_adherence rubric")
    cache_dir: str | None = option(None, "Where judgments are cached (default: <user cache>/tunesmith/judge)")
    timeout_s: float = option(60.0, "Seconds one judge request may take in all (connect, wait, read)", minimum=0.001, maximum=86400.0)
    max_retries: int = option(4, "Retries of a judge request after a 429, 5xx, timeout or connection error", minimum=0, maximum=100)
    breaker_failures: int = option(5, "Consecutive failed judge attempts after which the rest fail at once (0: never)", minimum=0, maximum=100000)


@dataclass
class EvalConfig:
    data: str = option(doc="Evaluation data file (JSONL, JSON, CSV/TSV, Parquet; see `format` for others)")
    task: Literal["qa", "classification", "summarization", "translation", "code", "math", "chat", "creative"] = option(
        "qa", "How answers are produced and scored: qa (exact match, F1), classification (label likelihood), summarization "
        "(ROUGE), translation (BLEU, chrF), code (pass@k), math (final number), chat (multi-turn `messages` or prompt/reference: "
        "the last user turn answered in context; reference similarity), creative (open-ended writing: judge rubrics, else "
        "labelled proxies: reference similarity, distinct-n, repetition, length)")
    name: str | None = option(None, "Dataset name for the result files eval/<name>.json; defaults to the data file's name")
    format: Literal["auto", "lines", "tsv", "json_dict"] = option("auto", "auto: by extension; lines: one text per line (with reference_file); tsv: headerless, named by `columns`; json_dict: a JSON object whose values are records")
    columns: list[str] | None = option(None, "Column names of a headerless TSV (format: tsv)")
    reference_file: str | None = option(None, "format lines: a line-aligned file of references (e.g. translations)")
    ids_file: str | None = option(None, "format json_dict: keep only the ids listed in this JSON file (list or object keys)")
    fields: dict[str, str] = option(default_factory=dict, doc="Map standard fields (prompt, answer, label, reference, tests, setup) to the file's field names")
    prompt: str | None = option(None, "Prompt template over the record's fields, e.g. 'Translate to German: {text}'; default: the prompt field")
    system: str | None = option(None, "System prompt; default: the one the evaluated run was trained with")
    labels: list[str] | None = option(None, "classification: the label set (default: the labels found in the data)")
    label_map: dict[str, str] | None = option(None, "classification: rename raw labels to words the model can score, e.g. {'0': negative, '1': positive}")
    shots: int = option(0, "Few-shot examples placed before each question as earlier chat turns", minimum=0, maximum=1000)
    shots_from: str | None = option(None, "File to draw few-shot examples from (same fields); default: the eval data minus the item itself")
    shot_selection: Literal["random", "similar"] = option("random", "Few-shot choice: seeded random, or most similar by sentence embeddings")
    limit: int | None = option(None, "Evaluate only the first N items (after the seeded shuffle when shuffle is on)", minimum=1, maximum=1_000_000_000)
    shuffle: bool = option(False, "Shuffle items (seeded) before applying limit")
    seed: int = option(0, "Seed for shuffling, few-shot choice, sampling and bootstrap", minimum=0, maximum=SEED_MAX)
    max_new_tokens: int = option(64, "Longest generated answer", minimum=1, maximum=131072)
    temperature: float = option(0.0, "0 = greedy decoding", minimum=0.0, maximum=100.0)
    top_p: float = option(1.0, "Nucleus sampling when temperature > 0", minimum=0.0, maximum=1.0)
    stop: list[str] = option(default_factory=list, doc="Cut answers at the first of these strings")
    n_samples: int = option(1, "code: completions per task (pass@k needs n >= k and temperature > 0)", minimum=1, maximum=10000)
    pass_k: list[int] = option(default_factory=lambda: [1], doc="code: the k values of pass@k", minimum=1, maximum=10000)
    code_timeout_s: float = option(10.0, "code: wall-clock limit per test run", minimum=0.1, maximum=86400.0)
    show_tests: bool | None = option(None, "code: show the tests in the prompt (MBPP convention) or not (HumanEval: the tests only grade); unset: shown by the default prompt, or as a custom prompt's {tests} says")
    batch_size: int = option(32, "Prompts generated (or label-scored) together; in fp32 the answers do not depend on it (docs/benchmarks.md, generation speed)", minimum=1, maximum=65536)
    precision: Literal["auto", "fp32", "bf16"] = option(
        "fp32", "Weights' precision for generation and scoring: fp32, bf16 (a LoRA adapter is merged in fp32 first), or "
        "auto = bf16 where the hardware multiplies bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16), fp32 elsewhere")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "Where the evaluated model runs: auto is a CUDA GPU when torch sees one, else the CPU")
    bootstrap: int = option(1000, "Bootstrap resamples for confidence intervals", minimum=100, maximum=1_000_000)
    domain_corpus: str | None = option(None, "Domain corpus (text dataset): enables the domain-adherence score of answers")
    ood_data: str | None = option(None, "Out-of-domain questions (prompt field): scored for the out-of-domain policy")
    ood_policy: Literal["decline", "answer"] = option("decline", "What a model should do with out-of-domain questions")
    decline_message: str | None = option(None, "The policy's decline reply: an out-of-domain answer containing it counts as declined (besides the usual decline phrasings)")
    adherence_passages: int = option(2, "Domain adherence: passages retrieved from domain_corpus for each question; what an answer asserts must be in them", minimum=1, maximum=50)
    general_ability: bool = option(False, "Also measure general-ability retention (perplexity and probe)")
    general_ability_base: bool = option(True, "With general_ability: also measure the run's base model and report the drop")
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    output_dir: str = option("runs", "Where a bare model's own run directory is created")

    def validate(self) -> None:
        if self.format == "lines" and not self.reference_file:
            raise ConfigError("reference_file: required with format: lines (the line-aligned references)")
        if self.format == "tsv" and not self.columns:
            raise ConfigError("columns: required with format: tsv (e.g. [label, sentence])")
        if self.task == "code" and self.show_tests is not None and self.prompt and \
                ("{tests}" in self.prompt) != self.show_tests:
            raise ConfigError(f"show_tests: {str(self.show_tests).lower()} contradicts the prompt template, which "
                              f"{'shows' if '{tests}' in self.prompt else 'does not show'} {{tests}}")
        if self.task == "code" and not self.pass_k:
            raise ConfigError("pass_k: list at least one k, e.g. [1]")
        if self.task == "code" and max(self.pass_k) > self.n_samples:
            raise ConfigError(f"pass_k: k={max(self.pass_k)} needs n_samples >= {max(self.pass_k)}")

    @property
    def tests_in_prompt(self) -> bool:
        """code: whether the prompt shows the tests that grade the answer (the effective show_tests)."""
        if self.task != "code":
            return False
        if self.show_tests is not None:
            return self.show_tests
        from tunesmith.eval.tasks import DEFAULT_PROMPTS

        return "{tests}" in (self.prompt or DEFAULT_PROMPTS["code"])

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        p = Path(self.data)
        return p.stem if p.suffix else p.name

    def cache_fields(self) -> dict:
        """Settings that change results (paths to outputs and the judge endpoint do not)."""
        d = configlib.to_dict(self)
        for k in ("output_dir", "name"):
            d.pop(k, None)
        d["judge"] = {k: v for k, v in d["judge"].items() if k in ("model", "rubrics", "domain")} if self.judge.base_url else None
        # The effective value keys the cache (unset and an explicit true build the same prompt);
        # other tasks never show tests, so their cached results stay valid.
        d.pop("show_tests", None)
        d.pop("precision", None)  # the runner keys the resolved precision (auto differs between machines)
        d.pop("device", None)  # ... and the resolved device
        if self.task == "code":
            d["show_tests"] = self.tests_in_prompt
        return d


def load_eval_config(path=None, overrides=(), *, base: dict | None = None) -> EvalConfig:
    return configlib.load_config(EvalConfig, path, overrides, base=base)
