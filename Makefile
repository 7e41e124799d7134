# `make`: set up the virtual environment and run the whole pipeline (dvc repro).  `make test`: every test.
# `make test-fast`: the unit and small real-data tests (the inner loop).  `make smoke`: every stage on 150 faces.
# `make docs`: the docs' generated parts from reports/, then the site (mkdocs).
# `make stack-up` / `make stack-down`: the team stack (PostgreSQL, S3, MLflow server) on 127.0.0.1.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

# Development and CI read the dataset and the YOLO face model from ../shared when it is there.
SHARED ?= ../shared
ifneq ($(wildcard $(SHARED)/data/utkface/UTKFace),)
export ARGML_UTKFACE ?= $(abspath $(SHARED)/data/utkface/UTKFace)
endif
ifneq ($(wildcard $(SHARED)/models/yolov8n-face_int8.tflite),)
export ARGML_YOLO_FACE ?= $(abspath $(SHARED)/models/yolov8n-face_int8.tflite)
endif
export ARGML_CACHE ?= $(CURDIR)/.cache
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics
export YOLO_OFFLINE = 1
export MLFLOW_DISABLE_TELEMETRY = true
export TF_CPP_MIN_LOG_LEVEL = 2
export NO_MKDOCS_2_WARNING = 1
# Debian's PostgreSQL keeps initdb and pg_ctl off PATH; an initdb already on PATH comes first.
PG_BIN := $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin)))
export PATH := $(CURDIR)/$(BIN):$(PATH)$(if $(PG_BIN),:$(PG_BIN))
# Debian's nginx, unpacked by scripts/install-system-packages.sh (the reverse-proxy test runs it), else one on PATH.
NGINX := $(CURDIR)/.cache/nginx/usr/sbin/nginx
export ARGML_NGINX ?= $(or $(wildcard $(NGINX)),$(shell command -v nginx))

STACK_DIR ?= .stack
# The smoke run: every stage, both age modes, on a stratified sample of 150 faces with short training.
SMOKE_PARAMS ?= -S data.limit=150 -S train.head_epochs=3 -S train.finetune_epochs=1 -S evaluate.bootstrap_rounds=10

.PHONY: all setup repro test test-extended test-all test-fast smoke docs system-packages stack-up stack-down
all: setup repro

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,team,docs,audit]'
	touch $@

repro: setup
	$(BIN)/dvc repro

# Installs (as root) or names the Debian packages the suite needs, before any test starts.
system-packages:
	scripts/install-system-packages.sh

# make test is what CI runs. The extended tier runs the whole small pipeline in two more fresh copies (the
# determinism check, the team pipeline): about 35 min on top of make test on 2 CPUs, 45 min on its own.
test: setup system-packages
	$(BIN)/python -m pytest -m "not extended" $(PYTEST_ARGS)

test-extended: setup system-packages
	$(BIN)/python -m pytest -m extended $(PYTEST_ARGS)

test-all: setup system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# In a temporary copy of the clone (dvc exp run --temp): the workspace, params.yaml and mlflow.db stay as they
# are; `dvc exp show` lists its metrics.
smoke: setup
	$(BIN)/dvc exp run --temp $(SMOKE_PARAMS)

docs: setup
	$(BIN)/argml docs
	$(BIN)/mkdocs build --strict

stack-up: setup
	$(BIN)/python -m argml.stack up --dir $(STACK_DIR) $(if $(STACK_PORTS),--ports $(STACK_PORTS))

stack-down:
	$(BIN)/python -m argml.stack down --dir $(STACK_DIR)
