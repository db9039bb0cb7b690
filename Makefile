# Portico developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
CARGO_DENY_VERSION := 0.20.2

.PHONY: all build run test lint fmt-check clippy deny unit bench bench-lookup bench-translate bench-load tools clean

all: build

build:
	$(CARGO) build --release --bin portico

## run: the embedded default: the demo upstream on 127.0.0.1:9090 and portico
## serving examples/ (manifests mode, no cluster). Then:
##   curl -H 'Host: demo.localhost' http://127.0.0.1:8080/
run: build
	$(CARGO) build --release -p portico --example demo_upstream
	@./target/release/examples/demo_upstream 127.0.0.1:9090 & \
	trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	./target/release/portico run --manifests examples --log-format text \
		--http-addr 127.0.0.1:8080 --admin-addr 127.0.0.1:10254

## test: everything CI checks: format, lints, licenses/advisories, all tests.
test: tools lint unit

lint: fmt-check clippy deny

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The advisory database lives on GitHub, which this project's machines may not
# reach. Use it when it can be fetched or is cached; otherwise say so loudly
# and still check licenses, bans and sources.
deny:
	@if $(CARGO) deny --locked check advisories >/tmp/portico-deny-advisories.log 2>&1; then \
		echo "cargo deny: advisories ok"; \
	elif grep -q "failed to fetch advisory database" /tmp/portico-deny-advisories.log; then \
		echo "cargo deny: WARNING advisory database unreachable from this machine; advisories not checked"; \
	else cat /tmp/portico-deny-advisories.log; exit 1; fi
	$(CARGO) deny --locked check licenses bans sources

unit:
	$(CARGO) test --workspace --locked --all-targets

## tools: what `make test` needs beyond the Rust toolchain, installed idempotently.
tools:
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	@if ! cargo deny --version 2>/dev/null | grep -q "$(CARGO_DENY_VERSION)"; then \
		$(CARGO) install cargo-deny --version $(CARGO_DENY_VERSION) --locked; fi

## bench: criterion route-lookup bench, then the load comparison with nginx
## and haproxy (installs them from Debian packages if missing).
bench: bench-lookup bench-translate bench-load

bench-lookup:
	$(CARGO) bench -p portico-dataplane --bench lookup

bench-translate:
	$(CARGO) run --release -p portico --example translate_bench -- 10000

bench-load:
	bash bench/load.sh
	BENCH_TLS=keepalive BENCH_PROXIES="portico nginx" BENCH_BUILD=0 bash bench/load.sh
	BENCH_TLS=handshake BENCH_PROXIES="portico nginx" BENCH_BUILD=0 bash bench/load.sh

clean:
	$(CARGO) clean
