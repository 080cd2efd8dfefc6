"""tunesmith: fine-tune language models on your domain data and prove which adaptation wins."""

__version__ = "0.1.0"

from tunesmith.quiet import silence_optional_kernel_probes as _silence

_silence()
