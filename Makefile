# kubemend's front door. `make help` lists the targets.
# The test command (README, CI): `make test`.

CARGO ?= cargo
TESTCLUSTER := tests/cluster/testcluster
VENV := .venv
BENCH_VENV := .venv-bench
FUZZ_SECONDS ?= 60
# The release build: static (musl), size-optimized (profile dist in Cargo.toml), not
# position-independent (static-pie's relocation table alone is 330 kB), at most 8 MB.
MUSL_TARGET := x86_64-unknown-linux-musl
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_BIN := $(TARGET_DIR)/$(MUSL_TARGET)/dist/kubemend
RELEASE_RUSTFLAGS := -C relocation-model=static
RELEASE_MAX_BYTES := 8000000
DIST := dist
# kwok v0.8.0 (the test bed) needs go >= 1.26; an older go (1.21 on) fetches that toolchain itself.
export GOTOOLCHAIN ?= auto

.PHONY: help deps test lint fmt clippy ansible-lint sanity fuzz cluster venv schemas bench bench-venv release collection ee demo down

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# What test and demo need on a Debian machine, installed when missing (as root; another user gets
# the list of what is missing, why, and how to install it); about 0.2 s when nothing is.
deps: ## Install what test and demo need (Debian packages, Rust parts); scripts/install-deps.
	scripts/install-deps

test: deps lint sanity fuzz cluster venv ## Lint, sanity-test the collection, fuzz the args parser, start the test bed, make the venvs, run every test.
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
	scripts/install-deps --testbed
	$(TESTCLUSTER) up

# Always run: venv.sh checks each venv against its requirements file itself, in about a second.
venv: ## The pinned Python virtualenvs: .venv (the tools), .venv-cores/ (each ansible-core under test).
	tests/ansible/venv.sh

schemas: ## Regenerate the committed JSON schemas and module docs.
	$(CARGO) run --locked --bin kubemend-schemagen -- --out-dir schemas --docs-dir ansible/kubemend/plugins/modules

# ring compiles C for the musl target: musl-gcc (Debian's musl-tools). scripts/install-deps
# installs both.
release: ## The static x86_64 musl binary for the collection and the EE (fails above 8 MB).
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	@command -v musl-gcc >/dev/null || { echo "make release: musl-gcc is missing (Debian: scripts/install-deps, or apt-get install musl-tools)" >&2; exit 1; }
	CC_x86_64_unknown_linux_musl=musl-gcc CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="$(RELEASE_RUSTFLAGS)" \
	  $(CARGO) build --locked --profile dist --target $(MUSL_TARGET) --bin kubemend
	@if ldd $(RELEASE_BIN) >/dev/null 2>&1 && ! ldd $(RELEASE_BIN) 2>&1 | grep -q 'statically linked'; then \
	  echo "make release: $(RELEASE_BIN) is dynamically linked" >&2; exit 1; fi
	@size=$$(stat -c %s $(RELEASE_BIN)); \
	  echo "make release: $(RELEASE_BIN), static, $$size bytes (limit $(RELEASE_MAX_BYTES))"; \
	  [ "$$size" -le $(RELEASE_MAX_BYTES) ] || { echo "make release: the binary is larger than 8 MB" >&2; exit 1; }

collection: release venv ## The collection tarball in dist/, with the release binary as its modules.
	ansible/kubemend/build.sh --binary $(RELEASE_BIN) --into $(TARGET_DIR)/collection --tarball $(DIST)

ee: collection ## The execution environment's build context in target/ee/context (ansible-builder create).
	rm -rf $(TARGET_DIR)/ee && mkdir -p $(TARGET_DIR)/ee
	cp ansible/ee/execution-environment.yml $(DIST)/kubemend-microk8s-*.tar.gz $(TARGET_DIR)/ee/
	cd $(TARGET_DIR)/ee && $(abspath $(VENV))/bin/ansible-builder create --context context --output-filename Containerfile

demo: deps ## Start the test bed, seed the incident, diagnose, run the monthly maintenance, diagnose again.
	scripts/demo.sh

# The benchmarks measure the glibc release build on the command line ($(TARGET_DIR)/release/
# kubemend: bench/run.py honours CARGO_TARGET_DIR as cargo does) and, in the plays, the
# collection with the binary it ships (make release), as BENCHMARKS.md says.
bench: cluster bench-venv release ## Run the benchmarks and write BENCHMARKS.md.
	$(CARGO) build --locked --release
	python3 bench/run.py

bench-venv: $(BENCH_VENV)/.installed ## The benchmarks' virtualenv: pinned ansible (with kubernetes.core) and kubernetes.

$(BENCH_VENV)/.installed: bench/requirements.txt bench/venv.sh
	bench/venv.sh
	touch $@

down: ## Stop the test bed.
	$(TESTCLUSTER) down
