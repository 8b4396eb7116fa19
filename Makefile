# Every target bootstraps what it needs: a fresh clone runs `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
SOLC_VERSION := 0.8.30
VENV := .venv
BROWNIE_VENV := .venv-brownie
PY := $(CURDIR)/$(VENV)/bin/python
BROWNIE := $(CURDIR)/$(BROWNIE_VENV)/bin/brownie

export SOLCX_BINARY_PATH := $(CURDIR)/build/solc
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

TEST_NETWORK := kempelen-test
TEST_CHAIN_PORT := 18545
SOLC_SHIM := build/solc/solc-v$(SOLC_VERSION)
CONTRACTS := $(shell find contracts -name '*.sol' 2>/dev/null)
ARTIFACTS_STAMP := backend/kempelen/chain/artifacts/.stamp

.PHONY: help bootstrap brownie-networks compile test test-contracts test-backend demo deploy \
        bench-gas bench-ipfs bench-relay bench-index bench-audit clean

help:
	@echo "make demo    bootstrap, start a local chain, run one batch through its whole life"
	@echo "make test    bootstrap, then run every test (contracts on anvil, then the package)"
	@echo "make bench-gas | bench-ipfs | bench-relay | bench-index | bench-audit"

bootstrap: $(VENV)/.stamp $(BROWNIE_VENV)/.stamp node_modules/.stamp $(SOLC_SHIM) brownie-networks

# The runtime package and its tests: modern web3.py, hypothesis, schemathesis.
$(VENV)/.stamp: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# brownie pins hypothesis<6.28 and its own web3, so it lives in a venv of its own;
# `kempelen` is installed there without dependencies for its pure protocol code.
$(BROWNIE_VENV)/.stamp: pyproject.toml
	test -x $(BROWNIE_VENV)/bin/python || $(PYTHON) -m venv $(BROWNIE_VENV)
	$(BROWNIE_VENV)/bin/pip install -q --upgrade pip
	$(BROWNIE_VENV)/bin/pip install -q eth-brownie==1.22.2 coincurve
	$(BROWNIE_VENV)/bin/pip install -q --no-deps -e .
	touch $@

# brownie 1.22.2 rejects anvil flags (cmd_settings) in a project config, so the test chain is
# registered as a network of its own: 127.0.0.1:$(TEST_CHAIN_PORT), cancun, pruned history.
brownie-networks: $(BROWNIE_VENV)/.stamp
	@grep -q 'id: $(TEST_NETWORK)$$' $(HOME)/.brownie/network-config.yaml 2>/dev/null || \
	  $(BROWNIE) networks add Development $(TEST_NETWORK) cmd="anvil --prune-history" \
	    host=http://127.0.0.1 port=$(TEST_CHAIN_PORT) evm_version=cancun accounts=10 \
	    chain_id=31337 base_fee=0 gas_limit=30000000 >/dev/null

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(SOLC_SHIM): scripts/solcjs-shim.sh node_modules/.stamp
	mkdir -p $(dir $@)
	cp scripts/solcjs-shim.sh $@
	chmod +x $@

build/.compiled: $(CONTRACTS) brownie-config.yaml | bootstrap
	$(BROWNIE) compile --all   # brownie's own cache ignores compiler settings (viaIR, runs)
	touch $@

$(ARTIFACTS_STAMP): build/.compiled scripts/export_artifacts.py
	$(PY) scripts/export_artifacts.py build/contracts backend/kempelen/chain/artifacts
	touch $@

compile: $(ARTIFACTS_STAMP)

test: test-contracts test-backend

test-contracts: compile
	$(BROWNIE) test tests/contracts --network $(TEST_NETWORK)

test-backend: compile
	$(PY) -m pytest

demo: compile
	$(PY) scripts/demo.py

deploy: compile
	$(BROWNIE) run scripts/deploy.py --network $(or $(NETWORK),$(TEST_NETWORK))

bench-gas: compile
	$(BROWNIE) run scripts/bench_gas.py --network $(TEST_NETWORK)

bench-ipfs: bootstrap
	$(PY) -m kempelen.ipfs.bench

bench-relay: compile
	$(PY) scripts/bench_relay.py

bench-index: compile
	$(PY) scripts/bench_index.py

bench-audit: compile
	$(PY) scripts/bench_audit.py

clean:
	rm -rf build backend/kempelen/chain/artifacts .pytest_cache
