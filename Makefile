# kubemend's front door. `make help` lists the targets.
# The test command (README, CI): `make test`.

CARGO ?= cargo
TESTCLUSTER := tests/cluster/testcluster
VENV := .venv
BENCH_VENV := .venv-bench
FUZZ_SECONDS ?= 60

.PHONY: help test lint fmt clippy ansible-lint sanity fuzz cluster venv schemas bench bench-venv release down

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

test: lint sanity fuzz cluster ## Lint, sanity-test the collection, fuzz the args parser, start the test bed, run every test.
	$(CARGO) test --locked --all-targets

lint: fmt clippy ansible-lint ## rustfmt, clippy (warnings are errors), ansible-lint.

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Lints a built copy of the collection, where modules and the action group resolve.
ansible-lint: venv
	$(CARGO) build --locked
	ansible/kubemend/lint.sh

# ansible-test sanity on a built copy of the collection, with ansible-core 2.15 and 2.21 from
# pinned venvs under .venv-sanity/ (tests/sanity/run.sh).
sanity: ## ansible-test sanity on the built collection (oldest and newest ansible-core).
	$(CARGO) build --locked
	tests/sanity/run.sh

fuzz: ## Fuzz the Ansible args parser for FUZZ_SECONDS (needs nightly and cargo-fuzz).
	fuzz/run.sh $(FUZZ_SECONDS)

cluster: ## Start (or find running) the test bed and print its exports.
	$(TESTCLUSTER) up

venv: $(VENV)/.installed ## The Python virtualenv with pinned ansible-core, ansible-runner, ansible-lint.

$(VENV)/.installed: tests/ansible/requirements.txt tests/ansible/venv.sh
	tests/ansible/venv.sh
	touch $@

schemas: ## Regenerate the committed JSON schemas and module docs.
	$(CARGO) run --locked -- schema --out-dir schemas --docs-dir ansible/kubemend/plugins/modules

release: ## Build the optimized binary (LTO, stripped).
	$(CARGO) build --locked --release

bench: release cluster bench-venv ## Run the benchmarks and write BENCHMARKS.md.
	python3 bench/run.py

bench-venv: $(BENCH_VENV)/.installed ## The benchmarks' virtualenv: pinned ansible (with kubernetes.core) and kubernetes.

$(BENCH_VENV)/.installed: bench/requirements.txt bench/venv.sh
	bench/venv.sh
	touch $@

down: ## Stop the test bed.
	$(TESTCLUSTER) down
