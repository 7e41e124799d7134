# `make`: set up the virtual environment and run the whole pipeline (dvc repro).  `make test`: the tests.
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
ifneq ($(wildcard .cache/nginx/usr/sbin/nginx),)
export ARGML_NGINX ?= $(CURDIR)/.cache/nginx/usr/sbin/nginx
endif
export ARGML_CACHE ?= $(CURDIR)/.cache
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics
export YOLO_OFFLINE = 1
export MLFLOW_DISABLE_TELEMETRY = true
export TF_CPP_MIN_LOG_LEVEL = 2
export PATH := $(CURDIR)/$(BIN):$(PATH)

STACK_DIR ?= .stack

.PHONY: all setup repro test stack-up stack-down
all: setup repro

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,team]'
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

stack-up: setup
	$(BIN)/python -m argml.stack up --dir $(STACK_DIR) $(if $(STACK_PORTS),--ports $(STACK_PORTS))

stack-down:
	$(BIN)/python -m argml.stack down --dir $(STACK_DIR)
