"""benchmarks/train_speed.py runs end to end on the tiny model (one timed step per row) and
records its table in a Markdown file between its markers; its three loss paths agree."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_speed", ROOT / "benchmarks" / "train_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_three_losses_agree_on_a_packed_batch(bench, tiny_model_dir, demo_dir):
    from tunesmith.data.packing import collate, pack
    from tunesmith.models.loading import load_model

    model, tok, _ = load_model(str(tiny_model_dir))
    _, examples = bench.load_examples(str(demo_dir / "qa_train.jsonl"), tok, 128)
    rows = pack(examples[:12], 128)
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        trained, n1 = bench.step_loss(model, batch, "trained")
        full, n2 = bench.step_loss(model, batch, "full")
    assert n1 == n2 > 0
    assert trained.item() == pytest.approx(full.item(), rel=1e-4)
    # transformers' own loss on the same examples unpacked (padded) matches the packed sum
    from tunesmith.data.packing import unpacked

    pb = bench.collate_for(unpacked(examples[:12]), tok.pad_token_id, "hf")
    with torch.no_grad():
        hf, n3 = bench.step_loss(model, pb, "hf")
    assert n3 == n1 and hf.item() == pytest.approx(trained.item(), rel=1e-3)


def test_benchmark_runs_and_records_its_table(bench, tiny_model_dir, demo_dir, tmp_path):
    out = tmp_path / "bench.md"
    out.write_text("# Benchmarks\n")
    assert bench.main(["--model", str(tiny_model_dir), "--data", str(demo_dir / "qa_train.jsonl"), "--steps", "1",
                       "--max-length", "128", "--batch-size", "2", "--only", "baseline,tunesmith,tunesmith-lora", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1
    rows = [line for line in text.splitlines() if line.startswith("| baseline") or line.startswith("| tunesmith")]
    assert len(rows) == 3 and "x1.00" in rows[0]
    assert "MFU" in text and "GFLOP/s" in text
