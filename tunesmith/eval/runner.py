"""`tunesmith eval`: evaluate a model or a run on one dataset and write the results into the
run directory: eval/<dataset>.<key>.json (metrics with 95% intervals, settings, hashes) and
eval/<dataset>.<key>.samples.jsonl (input, prediction, reference, per-item scores), where <key>
starts the cache key (model, data, settings): an evaluation with other settings never replaces
another's results. eval/<dataset>.json and .samples.jsonl are copies of the latest one asked for
(what studies and older readers read).

A bare model gets its own run directory, so its results sit beside fine-tuned ones. Results
are cached by (model hash, data hash, settings): the same evaluation twice does no work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path

from tunesmith.atomic import write_json_atomic, write_jsonl_atomic
from tunesmith.errors import TunesmithError
from tunesmith.eval import scoring
from tunesmith.eval.config import EvalConfig
from tunesmith.rundir import check_name
from tunesmith.runs import SCHEMA_VERSION, update_run

EVAL_VERSION = 1  # bump when scoring changes, so cached results are recomputed
# Domain adherence's own version, in the cache key only of evaluations that score it (v2: bare
# answers judged with their question; out-of-domain questions asked through the run's recipe;
# v3: content grounding in the passages retrieved for each question is the primary figure).
ADHERENCE_VERSION = 3


def model_run_dir(spec: str, output_dir: str | Path = "runs") -> Path:
    """The run directory results go to: the run itself, or runs/<model-name> for a bare model."""
    p = Path(spec)
    if (p / "run.json").exists():
        return p
    # Edge dots stripped too: a spec like ".." must not name a folder outside output_dir.
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", p.stem if p.suffix == ".gguf" else p.name).strip("-.") or "model"
    run = Path(output_dir) / name
    if not (run / "run.json").exists():
        run.mkdir(parents=True, exist_ok=True)
        update_run(run, schema_version=SCHEMA_VERSION, name=name, regimen="base", base_model=spec,
                   trains_weights=False, status="completed")
    return run


def model_fingerprint(spec: str) -> str:
    """A content hash of the weights a spec resolves to (adapter or full weights, and base)."""
    from tunesmith.data.io import file_sha256
    from tunesmith.models.loading import resolve_model

    def parts(ref) -> list[str]:
        if ref.base is not None:
            out = parts(ref.base)
        elif ref.full_weights is not None:
            return [file_sha256(ref.full_weights)]
        else:
            src = Path(ref.path) / "tunesmith_source.json"
            out = [json.loads(src.read_text())["sha256"] if src.exists() else file_sha256(ref.path)]
        if ref.adapter is not None:
            out.append(file_sha256(ref.adapter))
        return out

    meta_path = Path(spec) / "run.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("regimen") == "head":
        # A head run is its base model plus the classifier it saved (no causal-LM view).
        base = json.loads(meta_path.read_text())["base_model"]
        return hashlib.sha256(f"{model_fingerprint(base)}|{file_sha256(Path(spec) / 'model')}".encode()).hexdigest()
    return hashlib.sha256("|".join(parts(resolve_model(spec))).encode()).hexdigest()


def _recipe_hash(run: Path) -> str | None:
    """A prompting or retrieval run's recipe and index change its answers as much as weights do."""
    from tunesmith.data.io import file_sha256

    files = [run / "recipe.json", run / "index" / "meta.json"]
    parts = [file_sha256(f) for f in files if f.exists()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest() if parts else None


def _data_hash(cfg: EvalConfig) -> str:
    from tunesmith.data.io import file_sha256

    parts = [file_sha256(f) for f in (cfg.data, cfg.reference_file, cfg.ids_file, cfg.shots_from, cfg.domain_corpus, cfg.ood_data) if f]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _generate(model, tok, items, cfg, progress) -> list[list[str]]:
    from tunesmith.generation import GenerationSettings, generate_batch

    convs = [it.messages for it in items]
    samples = []
    for s in range(cfg.n_samples):
        gs = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                stop=list(cfg.stop), seed=cfg.seed + s)
        samples.append(generate_batch(model, tok, convs, gs, batch_size=cfg.batch_size, progress=progress))
    return samples


def label_set(cfg, items) -> list[str]:
    """The labels to choose from: given, or every label of the whole dataset (not only of the
    items kept by `limit`, which would hand the model a smaller, easier choice)."""

    from tunesmith.eval.sources import read_records
    from tunesmith.eval.tasks import _label

    labels = cfg.labels or sorted({_label(r, cfg) for r in read_records(dataclasses.replace(cfg, limit=None, shuffle=False))})
    unknown = sorted({it.label for it in items} - set(labels))
    if unknown:
        raise TunesmithError(f"{cfg.data}: gold label(s) {', '.join(map(repr, unknown))} not among labels {labels}; fix `labels` or `label_map`")
    return labels


def _classify(model, tok, items, cfg, progress) -> tuple[list[list[str]], list[list[float]]]:
    from tunesmith.eval.likelihood import option_logprobs, pick

    labels = label_set(cfg, items)
    opts = [labels] * len(items)
    scores = option_logprobs(model, tok, [it.messages for it in items], opts, batch_size=cfg.batch_size, progress=progress)
    return [pick(opts, scores)], scores


def evaluate(spec: str, cfg: EvalConfig, *, progress: bool = True, force: bool = False) -> dict:
    """Evaluate `spec` (run directory, built-in name, HF dir or .gguf) on `cfg.data`."""
    from tunesmith.answering import Answerer, Answering
    from tunesmith.models.loading import inference_device, inference_precision
    from tunesmith.eval.sources import read_records
    from tunesmith.eval.tasks import build_items

    check_name(cfg.dataset_name, "name")  # it names the result files inside the run's eval/
    records = read_records(cfg)  # bad data fails before the model loads
    run = model_run_dir(spec, cfg.output_dir)
    how = Answering.of(run)
    system = cfg.system if cfg.system is not None else how.system
    device = inference_device(cfg.device)
    precision = inference_precision(cfg.precision, device)
    key_src = {"v": EVAL_VERSION, "model": model_fingerprint(spec), "data": _data_hash(cfg), "cfg": cfg.cache_fields(),
               "system": system, "recipe": _recipe_hash(run)}
    if precision != "fp32":  # the resolved precision keys the cache; fp32 results cached before it existed stay valid
        key_src["precision"] = precision
    if device != "cpu":  # likewise the device: CPU results cached before it existed stay valid
        key_src["device"] = device
    if cfg.domain_corpus:
        key_src["adherence_v"] = ADHERENCE_VERSION
    cache_key = hashlib.sha256(json.dumps(key_src, sort_keys=True, default=str).encode()).hexdigest()
    out = keyed_path(run, cfg.dataset_name, cache_key)
    if not force and (prev := _cached(out, cfg.dataset_name, cache_key)) is not None:
        return {**prev, "cached": True, "path": str(out)}

    if how.is_head:
        return _evaluate_head_run(run, cfg, cache_key, out)
    answerer = Answerer.load(spec, device=device, precision=precision)
    model, tok = answerer.model, answerer.tok
    items = build_items(records, cfg, system)
    retrieval = _apply_recipe(how, items, records, cfg)
    t0 = time.time()
    option_scores = None
    if cfg.task == "classification":
        samples, option_scores = _classify(model, tok, items, cfg, progress)
    else:
        samples = _generate(model, tok, items, cfg, progress)
    gen_seconds = time.time() - t0
    per_item, metrics, extra = scoring.score(cfg.task, items, samples, cfg, progress=progress)
    helpfulness = _helpfulness(samples[0], items, per_item, metrics, cfg)
    result = {
        "schema_version": SCHEMA_VERSION, "dataset": cfg.dataset_name, "task": cfg.task, "n": len(items),
        "primary_metric": scoring.PRIMARY[cfg.task], "metrics": metrics, "helpfulness": helpfulness, **extra,
        "generation": {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                       "stop": cfg.stop, "n_samples": cfg.n_samples, "batch_size": cfg.batch_size, "precision": precision, "device": device,
                       "method": "label log-likelihood" if cfg.task == "classification" else "generate"},
        "prompt_template": cfg.prompt, "system": system, "shots": cfg.shots, "shot_selection": cfg.shot_selection,
        "model": {"spec": spec, "hash": key_src["model"]}, "data": {"path": cfg.data, "hash": key_src["data"]},
        "seconds": round(gen_seconds, 2), "seconds_per_item": round(gen_seconds / max(len(items), 1), 4),
        "cache_key": cache_key, "settings": cfg.cache_fields(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if retrieval:
        result["retrieval"] = retrieval
    if cfg.task == "code":
        result["show_tests"] = cfg.tests_in_prompt  # whether the graders' tests were in the prompt
    if (run / "metrics.jsonl").exists():
        from tunesmith.eval.overfitting import analyse_metrics

        result["overfitting"] = analyse_metrics(run / "metrics.jsonl")
    if cfg.domain_corpus:
        result["adherence"] = _adherence(how, model, tok, samples[0], [it.display for it in items], cfg, system, progress)
    if cfg.general_ability:
        result["general_ability"] = _general_ability(spec, key_src["model"], _base_of(run) if cfg.general_ability_base else None, system)
    _write_samples(_samples_path(out), items, samples, per_item, option_scores)
    write_json_atomic(out, result)
    _publish_latest(out)
    return {**result, "cached": False, "path": str(out)}


def _evaluate_head_run(run: Path, cfg: EvalConfig, cache_key: str, out: Path) -> dict:
    """A classification-head run predicts labels with its head: same metric names as the
    generative classification eval, so the two compare directly."""
    from tunesmith.eval.head_eval import evaluate_head

    if cfg.task != "classification":
        raise TunesmithError(f"{run} is a classification-head run: evaluate it with --task classification")
    res = evaluate_head(str(run), cfg.data, limit=cfg.limit, bootstrap=cfg.bootstrap, seed=cfg.seed)
    # Samples as a generative eval writes them (same ids: the records' ids or line numbers), so
    # that a study pairs the head's items with the other arms' and shows its answers.
    from tunesmith.eval.sources import read_records

    records = read_records(dataclasses.replace(cfg, shuffle=False))
    write_jsonl_atomic(_samples_path(out),
                       ({"id": rec["id"], "input": rec.get("text", rec.get("sentence", "")), "prediction": row["pred"],
                         "reference": row["label"], "scores": {"correct": float(row["correct"])}}
                        for rec, row in zip(records, res["per_item"])))
    res.update(schema_version=SCHEMA_VERSION, dataset=cfg.dataset_name, cache_key=cache_key, settings=cfg.cache_fields(),
               helpfulness={"method": "not applicable (no free-text reference)"}, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    res.setdefault("data", {})["hash"] = _data_hash(cfg)
    write_json_atomic(out, res)
    _publish_latest(out)
    return {**res, "cached": False, "path": str(out)}


def _apply_recipe(how, items, records, cfg) -> dict | None:
    """A prompting/retrieval run's recipe decides the messages (its template, shots, passages).
    Returns retrieval recall@k when the records name each question's gold document (doc_id)."""
    from tunesmith.eval.stats import bootstrap_ci

    recipe = how.recipe
    if recipe is None:
        return None
    msgs, hits = how.retrieve([it.messages[-1]["content"] for it in items], cfg.system)
    for it, m, h in zip(items, msgs, hits):
        # a conversation's earlier turns go between the recipe's examples and its last question,
        # as Answering.chat orders them
        it.messages = m[:-1] + it.context + m[-1:]
        it.retrieved = [c.doc_id for c, _ in h]
    if not recipe.rag or not all("doc_id" in r for r in records):
        return None
    found = [float(str(r["doc_id"]) in it.retrieved) for r, it in zip(records, items)]
    return {"k": recipe.rag["top_k"], "method": recipe.rag["method"],
            f"recall@{recipe.rag['top_k']}": bootstrap_ci(found, n_resamples=cfg.bootstrap, seed=cfg.seed)}


def _general_ability(spec: str, fingerprint: str, base: str | None, system: str | None) -> dict:
    """General-ability retention, cached by the weights' fingerprint: runs that share weights
    (a base model and its prompting arms) are measured once."""
    from tunesmith.eval.forgetting import general_ability
    from tunesmith.models.loading import cache_root

    key = hashlib.sha256(json.dumps({"v": EVAL_VERSION, "model": fingerprint, "base": model_fingerprint(base) if base else None,
                                     "system": system}).encode()).hexdigest()[:24]
    path = cache_root() / "general_ability" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = general_ability(spec, base_spec=base, system=system)
    write_json_atomic(path, out)
    return out


def _base_of(run: Path) -> str | None:
    meta = json.loads((run / "run.json").read_text())
    return meta.get("base_model") if meta.get("trains_weights") else None


def _helpfulness(preds, items, per_item, metrics, cfg) -> dict:
    """Judge scores when a judge is configured; otherwise a labelled reference-similarity proxy."""
    if cfg.judge.base_url:
        from tunesmith.eval.judge import Judge, JudgeConfig, summarize

        j = cfg.judge
        judge = Judge(JudgeConfig(base_url=j.base_url, model=j.model, api_key_env=j.api_key_env, cache_dir=j.cache_dir,
                                  timeout_s=j.timeout_s, max_retries=j.max_retries, breaker_failures=j.breaker_failures))
        from tunesmith.eval.rubrics import get_rubric

        t0 = time.time()
        # Which judge scored what with which rubric version, and what it cost (requests, time).
        out = {"method": f"judge ({cfg.judge.model})", "judge": {"model": j.model, "base_url": j.base_url},
               "rubric_versions": {r: get_rubric(r, pairwise=False).version for r in cfg.judge.rubrics}}
        for rubric in cfg.judge.rubrics:
            batch = [{"question": it.display, "answer": p, "reference": (it.refs or [None])[0], "domain": cfg.judge.domain}
                     for p, it in zip(preds, items)]
            res = judge.score([{k: v for k, v in b.items() if v is not None} for b in batch], rubric=rubric)
            for row, r in zip(per_item, res):
                row[f"judge_{rubric}"] = r.score
            out[rubric] = summarize(res)
        out["stats"] = {**judge.stats, "seconds": round(time.time() - t0, 2)}
        # Failed judgments make the result provisional: evaluate() does not reuse it.
        out["judgments_failed"] = judge.stats["failures"]
        return out
    if cfg.task in ("classification", "code", "math") or not any(it.refs for it in items):
        return {"method": "not applicable (no free-text reference)"}
    # chat and creative score reference similarity already (their correctness proxy)
    have = all("reference_similarity" in r for r in per_item) and per_item
    sims = [r["reference_similarity"] for r in per_item] if have else scoring.reference_similarity(preds, items)
    for row, s in zip(per_item, sims):
        row["reference_similarity"] = s
    from tunesmith.eval.stats import bootstrap_ci

    ci = bootstrap_ci(sims, n_resamples=cfg.bootstrap, seed=cfg.seed)
    metrics["reference_similarity"] = ci
    return {"method": "proxy: sentence-embedding similarity to the reference (no judge configured)", "proxy": True, **ci}


def _adherence(how, model, tok, preds, questions, cfg, system, progress) -> dict:
    from tunesmith.data.schemas import load_dataset
    from tunesmith.eval.adherence import DomainClassifier, adherence_report
    from tunesmith.eval.grounding import ContentJudge
    from tunesmith.eval.sources import read_records
    from tunesmith.generation import GenerationSettings, generate_batch
    from tunesmith.resources import load_resource
    from tunesmith.retrieval import corpus_documents

    docs = corpus_documents(load_dataset(cfg.domain_corpus, "text").rows())
    clf = DomainClassifier.fit([d["text"] for d in docs], [r["text"] for r in load_resource("general_text")], seed=cfg.seed)
    content = ContentJudge(docs, k=cfg.adherence_passages, embedder=clf.embedder)
    answers, mask, qs = list(preds), [False] * len(preds), list(questions)
    if cfg.ood_data:
        ood = [str(r.get("prompt") or r.get("question")) for r in read_records(EvalConfig(data=cfg.ood_data, task="qa", limit=None))]
        # Out-of-domain questions are asked the way this run asks everything: a prompting or
        # retrieval run's recipe (examples, passages) is part of what is being measured.
        convs = how.messages(ood, system)
        gs = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, stop=list(cfg.stop))
        answers += generate_batch(model, tok, convs, gs, batch_size=cfg.batch_size, progress=progress)
        mask += [True] * len(ood)
        qs += ood
    rep = adherence_report(answers, classifier=clf, content=content, ood_mask=mask if cfg.ood_data else None,
                           ood_policy=cfg.ood_policy, questions=qs, decline_message=cfg.decline_message)
    rep["calibration"] = clf.calibration
    return rep


def _write_samples(path: Path, items, samples, per_item, option_scores) -> None:
    def record(i, it, row):
        rec = {"id": it.id, "input": it.display, "prediction": samples[0][i], "reference": it.refs or it.label, "scores": row}
        if len(samples) > 1:
            rec["samples"] = [s[i] for s in samples]
        if option_scores is not None:
            rec["option_logprobs"] = option_scores[i]
        if it.retrieved:
            rec["retrieved"] = it.retrieved
        return rec

    write_jsonl_atomic(path, (record(i, it, row) for i, (it, row) in enumerate(zip(items, per_item))))


def keyed_path(run: Path, dataset: str, cache_key: str) -> Path:
    """Where one evaluation's result lives: its dataset name plus the start of its cache key."""
    return Path(run) / "eval" / f"{dataset}.{cache_key[:12]}.json"


def _samples_path(result: Path) -> Path:
    return result.with_name(result.stem + ".samples.jsonl")


def _latest_path(result: Path, dataset: str) -> Path:
    return result.with_name(f"{dataset}.json")


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _cached(out: Path, dataset: str, cache_key: str) -> dict | None:
    """The stored result for this cache key, made the latest again (a study reads the latest);
    a result written before results were keyed is found in the latest file and keyed now."""
    def usable(r: dict | None) -> bool:  # an evaluation whose judge failed is recomputed, never final
        return r is not None and r.get("cache_key") == cache_key and not (r.get("helpfulness") or {}).get("judgments_failed")

    prev = _read_json(out)
    if not usable(prev):
        legacy = _latest_path(out, dataset)
        prev = _read_json(legacy)
        if not usable(prev):
            return None
        _copy(_samples_path(legacy), _samples_path(out))
        _copy(legacy, out)
    _publish_latest(out)
    return prev


def _copy(src: Path, dst: Path) -> None:
    import shutil

    from tunesmith.atomic import write_atomic

    if src.exists() and src.resolve() != dst.resolve():
        with open(src, "rb") as fh:
            write_atomic(dst, lambda out: shutil.copyfileobj(fh, out), binary=True)


def _publish_latest(result: Path) -> None:
    """Copy a keyed result (samples first) to eval/<dataset>.json, the latest one asked for."""
    dataset = json.loads(result.read_text())["dataset"]
    latest = _latest_path(result, dataset)
    _copy(_samples_path(result), _samples_path(latest))
    _copy(result, latest)


def stored_results(run: Path, dataset: str | None = None) -> list[tuple[Path, dict]]:
    """Every evaluation stored in a run: the keyed results, and a latest file that has no keyed
    copy (written before results were keyed)."""
    out = []
    for f in sorted((Path(run) / "eval").glob("*.json")):
        r = _read_json(f)
        if r is None or "dataset" not in r or (dataset and r["dataset"] != dataset):
            continue
        keyed = f"{r['dataset']}.{str(r.get('cache_key'))[:12]}.json"
        if f.name == keyed or (f.name == f"{r['dataset']}.json" and not (f.parent / keyed).exists()):
            out.append((f, r))
    return out


def load_result(run_or_file: str, dataset: str | None = None) -> tuple[dict, list[dict]]:
    """An eval result and its samples, from a run directory (its latest evaluation of
    `dataset`) or a result file."""
    p = Path(run_or_file)
    if p.is_dir():
        names = sorted({r["dataset"] for _, r in stored_results(p)})
        if dataset:
            names = [n for n in names if n == dataset]
        if len(names) != 1:
            evaluated = ", ".join(sorted({r["dataset"] for _, r in stored_results(p)})) or "none"
            raise TunesmithError(f"{p}: name the dataset with --dataset (evaluated: {evaluated})")
        p = p / "eval" / f"{names[0]}.json"
    return read_result(p)


def read_result(p: Path) -> tuple[dict, list[dict]]:
    """A result file and the samples stored beside it."""
    p = Path(p)
    if not p.exists():
        raise TunesmithError(f"{p}: no such evaluation result")
    result = _read_json(p)
    if result is None:
        raise TunesmithError(f"{p}: not a readable evaluation result (re-run the evaluation)")
    samples_path = _samples_path(p)
    samples = [json.loads(x) for x in samples_path.read_text().splitlines() if x.strip()] if samples_path.exists() else []
    return result, samples
