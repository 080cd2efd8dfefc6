"""Continued pre-training (regimen cpt) with the tiny model on the demo corpus: the loss falls,
every trainable parameter changes, the run directory is complete, long documents are split into
windows rather than truncated, general text is mixed in at the configured share, a wrong dataset
type fails before any model loads, and an SFT run chained with init_from records the chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_train_config
from tunesmith.data.templating import IGNORE, Example
from tunesmith.regimens.cpt import n_targets, sample_general, split_windows


def _cfg(tmp_path, tiny_model_dir, demo_dir, mode="lora", *extra, name=None):
    return load_train_config(None, [
        "regimen=cpt", f"data.train={demo_dir / 'corpus.jsonl'}", f"model.name={tiny_model_dir}", f"adapter.mode={mode}",
        "adapter.train_top_layers=1", "data.max_length=128", "training.max_steps=10", "training.learning_rate=3e-3",
        "training.batch_size=2", "training.eval_every=5", "training.save_every=5", "training.warmup_ratio=0",
        f"name={name or 'cpt-' + mode}", f"output_dir={tmp_path}", *extra,
    ])


def _initial_trainables(cfg):
    from tunesmith.models.loading import load_model
    from tunesmith.training.adapters import apply_adapter

    torch.manual_seed(cfg.seed)  # LoRA B starts at zero, A is seeded: same as in train()
    model, _, _ = load_model(cfg.start_model, merge_adapter=True)
    model = apply_adapter(model, cfg.adapter)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# --- pure helpers ---------------------------------------------------------------------------

def test_split_windows_counts_and_coverage():
    ids = list(range(1000, 1020))  # 20 tokens
    ex = Example(ids, list(ids))
    # max_length 8, stride 7: windows start at 0, 7, 14 -> [0:8], [7:15], [14:20]
    wins = split_windows(ex, 8)
    assert [w.input_ids for w in wins] == [ids[0:8], ids[7:15], ids[14:20]]
    # each window's first token is context only once packed; together they target tokens 1..19 once each
    targets = [t for w in wins for t in w.input_ids[1:]]
    assert targets == ids[1:]
    assert sum(n_targets(w) for w in wins) == n_targets(ex) == 19
    assert len(split_windows(ex, 20)) == 1 and split_windows(ex, 20)[0] is ex
    assert len(split_windows(ex, 19)) == 2  # ceil(19 / 18)
    assert len(split_windows(Example(ids[:15], ids[:15]), 8)) == 2  # ceil(14 / 7): [0:8], [7:15]


def test_split_windows_packs_without_loss_of_targets():
    from tunesmith.data.packing import pack
    from tunesmith.training.batching import count_targets

    ids = list(range(1, 51))  # 50 tokens, max_length 16: ceil(49 / 15) = 4 windows
    wins = split_windows(Example(ids, list(ids)), 16)
    assert len(wins) == 4 and all(len(w) <= 16 for w in (w.input_ids for w in wins))
    rows = pack(wins, 16)
    assert all(len(r) <= 16 for r in rows)
    assert count_targets(rows) == 49
    trained = sorted(y for r in rows for y in r.labels if y != IGNORE)
    assert trained == ids[1:]


def test_sample_general_is_seeded_repeats_and_hits_the_share():
    general = [Example(list(range(n)), list(range(n))) for n in (11, 21, 31)]  # 10 + 20 + 30 targets
    picked = sample_general(general, domain_targets=150, share=0.5, seed=3)
    assert sum(n_targets(x) for x in picked) == 150  # needs the set 2.5 times: repeated
    assert len(picked) > len(general)
    again = sample_general(general, domain_targets=150, share=0.5, seed=3)
    assert [x.input_ids for x in picked] == [x.input_ids for x in again]
    other = sample_general(general, domain_targets=150, share=0.5, seed=4)
    assert [x.input_ids for x in other] != [x.input_ids for x in picked]
    assert sum(n_targets(x) for x in sample_general(general, 90, 0.25, 0)) == 30  # 0.25 / 0.75 * 90
    assert sample_general(general, 100, 0.0, 0) == []


# --- training runs --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lora", "full", "freeze"])
def test_cpt_mode(tmp_path, tiny_model_dir, demo_dir, mode):
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, mode)
    before = _initial_trainables(cfg)
    result = api.train(cfg, progress=False)
    run = tmp_path / f"cpt-{mode}"

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == 10 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    assert any("val_loss" in x for x in lines)

    from safetensors.torch import load_file

    state = json.loads((run / "checkpoints" / "state.json").read_text())
    trained = load_file(str(run / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert set(trained) == set(before)
    unchanged = [n for n in before if torch.equal(before[n], trained[n])]
    assert not unchanged, unchanged[:5]

    meta = json.loads((run / "run.json").read_text())
    assert meta["regimen"] == "cpt" and meta["status"] == "completed" and meta["chain"] == []
    for f in ("config.yaml", "data_manifest.json", "env.json", "metrics.jsonl", "model"):
        assert (run / f).exists(), f
    assert list((run / "model").glob("*.safetensors"))
    manifest = json.loads((run / "data_manifest.json").read_text())
    assert manifest["counts"] == {"train": 29, "validation": 3} and manifest["type"] == "text"
    sft_keys = {"status", "steps", "final_loss", "best_val_loss", "select_metric", "best_metric", "best_step", "exported",
                "stopped_early", "trained_tokens", "train_seconds", "tokens_per_s", "wall_seconds", "trainable_params",
                "total_params", "peak_memory_mib", "precision", "device", "encoding", "system_prompt"}
    assert sft_keys <= set(result) and sft_keys <= set(meta)
    assert result["general_share"] == 0.0 and result["encoding"]["truncated"] == 0


def test_long_documents_are_windowed_not_truncated(tmp_path, tiny_model_dir, demo_dir):
    # max_length 64: every demo document (130-154 tokens with EOS) is split; ceil((n-1)/63) windows each
    from tunesmith.data.schemas import load_dataset
    from tunesmith.data.splits import split_rows
    from tunesmith.data.templating import render_text
    from tunesmith.models.loading import load_tokenizer

    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, "lora", "data.max_length=64", "training.max_steps=1")
    r = api.train(cfg, progress=False)
    tok = load_tokenizer(str(tiny_model_dir))
    docs, _ = split_rows(load_dataset(demo_dir / "corpus.jsonl").rows(), 0.1, 0)
    lengths = [len(render_text(tok, d["text"]).input_ids) for d in docs]
    assert all(n > 64 for n in lengths)
    expected = sum(-(-(n - 1) // 63) for n in lengths)
    assert r["encoding"] == {"n": 29, "windows": expected, "split": 29, "truncated": 0, "dropped": 0}
    assert r["domain_tokens_epoch"] == sum(n - 1 for n in lengths)  # every token after each document's first


def test_general_share_recorded(tmp_path, tiny_model_dir, demo_dir):
    # five domain documents (one held out), one whole epoch: the trained share is the epoch's mix
    small = tmp_path / "corpus5.jsonl"
    small.write_text("".join((demo_dir / "corpus.jsonl").read_text().splitlines(keepends=True)[:5]))
    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir, "lora", f"data.train={small}", "cpt.general_share=0.5",
               "training.epochs=1", "training.batch_size=4", "training.eval_every=100")
    cfg.training.max_steps = None
    r = api.train(cfg, progress=False)
    assert r["general_share_target"] == 0.5
    assert abs(r["general_share_epoch"] - 0.5) < 0.01 and abs(r["general_share"] - 0.5) < 0.01
    assert r["general_tokens_epoch"] == pytest.approx(r["domain_tokens_epoch"], abs=1)
    assert 0 < r["general_windows"] < 44 and r["steps"] >= 2
    manifest = json.loads((Path(r["run_dir"]) / "data_manifest.json").read_text())
    assert manifest["counts"] == {"train": 4, "validation": 1, "general": 44}
    assert manifest["general_source"] == "tunesmith.resources:general_text"


def test_wrong_dataset_type_fails_before_loading(tmp_path, tiny_model_dir, demo_dir):
    from tunesmith.errors import TunesmithError

    cfg = _cfg(tmp_path, tiny_model_dir, demo_dir)
    cfg.data.train = str(demo_dir / "qa_train.jsonl")
    with pytest.raises(TunesmithError, match="not accepted"):
        api.train(cfg, progress=False)
    assert not (tmp_path / "cpt-lora").exists()


def test_sft_chained_on_cpt_records_chain(tmp_path, tiny_model_dir, demo_dir):
    cpt = api.train(_cfg(tmp_path, tiny_model_dir, demo_dir, "lora", "training.max_steps=2"), progress=False)
    sft_cfg = load_train_config(None, [
        "regimen=sft", f"data.train={demo_dir / 'qa_train.jsonl'}", f"model.name={tiny_model_dir}",
        f"init_from={cpt['run_dir']}", "adapter.mode=lora", "data.max_length=128", "training.max_steps=2", "training.learning_rate=3e-3",
        "training.batch_size=2", "training.eval_every=2", "training.warmup_ratio=0", "name=sft-after-cpt",
        f"output_dir={tmp_path}",
    ])
    before = _initial_trainables(sft_cfg)
    r = api.train(sft_cfg, progress=False)
    meta = json.loads((Path(r["run_dir"]) / "run.json").read_text())
    assert meta["status"] == "completed" and meta["regimen"] == "sft"
    assert meta["chain"] == [cpt["run_dir"]] and meta["init_from"] == cpt["run_dir"]
    assert r["steps"] == 2 and torch.isfinite(torch.tensor(r["final_loss"]))
    from safetensors.torch import load_file

    state = json.loads((Path(r["run_dir"]) / "checkpoints" / "state.json").read_text())
    trained = load_file(str(Path(r["run_dir"]) / "checkpoints" / state["latest"] / "trainable.safetensors"))
    assert not [n for n in before if torch.equal(before[n], trained[n])]
