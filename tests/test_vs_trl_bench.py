"""benchmarks/vs_trl.py runs end to end with --quick (tiny random model, each contender in its own
process) and records its table; tunesmith's lever rows train the same batches to the same losses."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_vs_trl", ROOT / "benchmarks" / "vs_trl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_records_rows_with_agreeing_losses(tmp_path, demo_dir, default_tokenizer):
    bench = _bench()
    out = tmp_path / "bench.md"
    out.write_text("# Benchmarks\n")
    names = "tunesmith-lora,tunesmith-lora-fp32base,tunesmith-lora-padded,tunesmith-full,tunesmith-full-gc"
    assert bench.main(["--quick", "--steps", "2", "--rounds", "1", "--batch-examples", "4", "--max-length", "256",
                       "--data", str(demo_dir / "qa_train.jsonl"), "--only", names, "--out", str(out)]) == 0
    text = out.read_text()
    from vs_trl_report import END, START, TAG

    assert text.count(START) == 1 and text.count(END) == 1
    rows = {r["config"]: r for r in json.loads(re.search(r"<!-- " + TAG + r" (.*?) -->", text, re.S).group(1))}
    assert set(rows) == set(names.split(","))
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["peak_memory_mib"] > 0 and len(r["losses"]) == 2
    # the same batches, the same losses: packing, the base's dtype and checkpointing change no result
    for a, b in [("tunesmith-lora", "tunesmith-lora-fp32base"), ("tunesmith-lora", "tunesmith-lora-padded"),
                 ("tunesmith-full", "tunesmith-full-gc")]:
        for x, y in zip(rows[a]["losses"], rows[b]["losses"]):
            assert abs(x - y) <= 0.02 * abs(y), (a, b, rows[a]["losses"], rows[b]["losses"])
