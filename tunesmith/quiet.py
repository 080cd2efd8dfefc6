"""Library chatter (weight-loading bars, deprecation notes) buries tunesmith's own output: one
place that quiets it, for the CLI's process and for the worker processes a study fans out to."""

from __future__ import annotations

import logging
import os


def silence_optional_kernel_probes() -> None:
    """bitsandbytes (the qlora extra), imported by peft whenever it is installed, logs a warning
    at import on AVX512-BF16 CPUs that it could not fetch an optional kernel from the Hugging Face
    hub. Nothing is missing (it falls back to its own CPU code) and nothing can be fetched offline,
    so the line only alarms: every tunesmith process sets that logger to errors only."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
