"""Data files shipped inside the package: general-knowledge text and a multiple-choice probe,
used to measure how much general ability a fine-tuned model kept (see eval.forgetting).

Read through importlib.resources so that they load the same from a checkout, an installed
wheel or a zip. Files: general_text.jsonl ({"id", "topic", "text"}) and general_probe.jsonl
({"id", "question", "choices": [4 strings], "answer": index}).
"""

from __future__ import annotations

import json
from importlib import resources

from tunesmith.errors import TunesmithError


def load_resource(name: str) -> list[dict]:
    """The records of a shipped JSONL file, by name with or without `.jsonl`."""
    fname = name if name.endswith(".jsonl") else f"{name}.jsonl"
    ref = resources.files(__name__).joinpath(fname)
    if not ref.is_file():
        shipped = sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".jsonl"))
        raise TunesmithError(f"no shipped resource '{name}' (available: {', '.join(shipped)})")
    text = ref.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
