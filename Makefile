# Portico developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
CARGO_DENY_VERSION := 0.20.2
# Generates crds/src/gateway/ from the Gateway API CRDs; the crds tests
# check the committed code against it.
KOPIUM_VERSION := 0.24.1

.PHONY: all build run test lint fmt-check clippy deny unit grpc-web-clients redis-server otelcol e2e e2e-tools bench bench-lookup bench-translate bench-load bench-grpc bench-failover bench-report bench-report-render tools clean

all: build

build:
	$(CARGO) build --release --bin portico

## run: the embedded default: the demo upstream on 127.0.0.1:9090 and portico
## serving examples/ (manifests mode, no cluster). Then:
##   curl -H 'Host: demo.localhost' http://127.0.0.1:8080/
##   curl http://127.0.0.1:10255/debug/routes
run: build
	$(CARGO) build --release -p portico --example demo_upstream
	@./target/release/examples/demo_upstream 127.0.0.1:9090 & \
	trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	./target/release/portico run --manifests examples --log-format text \
		--http-addr 127.0.0.1:8080 --admin-addr 127.0.0.1:10254 \
		--debug-addr 127.0.0.1:10255

## test: everything CI checks: format, lints, licenses/advisories, all tests.
test: tools lint unit e2e

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

# The e2e crate needs the real control plane; `make e2e` runs it.
# controller/tests/grpc_web_clients.rs needs the Node clients,
# controller/tests/tracing.rs the OpenTelemetry Collector, the global rate
# limit's tests (dataplane/tests/global_rate_limit.rs, controller/tests/
# global_rate_limit.rs) a redis-server.
unit: grpc-web-clients redis-server otelcol
	$(CARGO) test --workspace --locked --all-targets --exclude portico-e2e

## grpc-web-clients: the real gRPC-Web clients controller/tests/grpc_web_clients.rs
## drives (connect-node, protobuf-ts): `npm ci` from e2e/grpc-web/package-lock.json
## and code from testkit/proto with the local buf and plugins, into the
## git-ignored node_modules/ and gen/. Skipped while the lock file, the proto
## and buf.gen.yaml are unchanged (the stamp holds their hash). Installs
## Node from Debian packages when it is missing; needs Node 20 or later.
GRPC_WEB := e2e/grpc-web
grpc-web-clients:
	@command -v node >/dev/null && command -v npm >/dev/null || \
		{ echo "grpc-web-clients: installing nodejs and npm"; apt-get update -qq && apt-get install -y -qq nodejs npm; }
	@major=$$(node -p 'process.versions.node.split(".")[0]'); \
	if (( major < 20 )); then echo "grpc-web-clients: Node $$(node --version) is too old, need 20 or later" >&2; exit 1; fi
	@cd $(GRPC_WEB); \
	hash=$$(cat package.json package-lock.json buf.gen.yaml $$(find ../../testkit/proto -name '*.proto' | sort) | sha256sum | cut -d' ' -f1); \
	if [[ -d node_modules && -f gen/es/portico/test/echo_pb.js && "$$(cat gen/.stamp 2>/dev/null)" == "$$hash" ]]; then \
		echo "grpc-web-clients: up to date"; exit 0; fi; \
	start=$$SECONDS; \
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; \
	./node_modules/.bin/buf generate; \
	echo "$$hash" > gen/.stamp; \
	echo "grpc-web-clients: installed and generated in $$((SECONDS - start)) s"

## redis-server: the real Redis the global rate limit's tests start (on free
## ports, one per test), from Debian's package when it is missing.
redis-server:
	@command -v redis-server >/dev/null || \
		{ echo "redis-server: installing redis-server"; apt-get update -qq && apt-get install -y -qq redis-server; }

## e2e-tools: etcd, kube-apiserver and helm built from e2e/tools/go.mod, and
## the external-auth peers (Dex, oauth2-proxy), each from its own module under
## e2e/tools/<name>/ so their dependency graphs do not meet (Dex needs cgo
## for its SQLite storage, compiled in even though the tests use memory), into
## e2e/tools/bin/, stamped with the versions the modules pin (kube-apiserver's
## /version, helm's default Kubernetes version). A binary is rebuilt only
## when its go.mod, go.sum or link flags change (the stamp holds their hash).
## One `go build` at a time: the CI machines have two cores and the builds
## are memory hungry.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
E2E_TOOLS := e2e/tools
E2E_BIN := $(CURDIR)/$(E2E_TOOLS)/bin
e2e-tools:
	@cd $(E2E_TOOLS); \
	k8s=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubernetes); minor=$$(cut -d. -f2 <<<"$$k8s"); \
	helmv=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v3); \
	o2pv=$$(cd oauth2-proxy && $(GO) list -m -f '{{.Version}}' github.com/oauth2-proxy/oauth2-proxy/v7); \
	mkdir -p bin; \
	for tool in "etcd|.|0|go.etcd.io/etcd/server/v3|" \
	            "kube-apiserver|.|0|k8s.io/kubernetes/cmd/kube-apiserver|-X k8s.io/component-base/version.gitVersion=$$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$$minor" \
	            "helm|.|0|helm.sh/helm/v3/cmd/helm|-X helm.sh/helm/v3/internal/version.version=$$helmv -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$minor" \
	            "dex|dex|1|github.com/dexidp/dex/cmd/dex|" \
	            "oauth2-proxy|oauth2-proxy|0|github.com/oauth2-proxy/oauth2-proxy/v7|-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$$o2pv"; do \
		IFS='|' read -r name dir cgo pkg ldflags <<<"$$tool"; \
		hash=$$(cat $$dir/go.mod $$dir/go.sum <(echo "$$ldflags") | sha256sum | cut -d' ' -f1); \
		if [[ -x bin/$$name && "$$(cat bin/.$$name.stamp 2>/dev/null)" == "$$hash" ]]; then \
			echo "e2e-tools: $$name up to date"; continue; fi; \
		echo "e2e-tools: building $$name ($$pkg)"; start=$$SECONDS; \
		(cd $$dir && GOFLAGS=-mod=mod CGO_ENABLED=$$cgo $(GO) build -trimpath -ldflags="-s -w $$ldflags" -o $(E2E_BIN)/$$name $$pkg); \
		echo "$$hash" > bin/.$$name.stamp; \
		echo "e2e-tools: $$name built in $$((SECONDS - start)) s"; \
	done

## otelcol: the OpenTelemetry Collector controller/tests/tracing.rs exports
## to (OTLP receiver, file exporter), built from its own module
## e2e/tools/otelcol/ (its go.mod pins the collector; kept apart from
## e2e/tools/go.mod so its graph never meets etcd's) into e2e/tools/bin/.
## Rebuilt only when go.mod, go.sum or main.go change (the stamp holds
## their hash). Cold (empty module and build caches) it took 6 min 19 s on
## a two-core machine shared with other builds (2 min 30 s of CPU); cached,
## nothing.
OTELCOL := $(E2E_TOOLS)/otelcol
otelcol:
	@cd $(OTELCOL); \
	hash=$$(cat go.mod go.sum main.go | sha256sum | cut -d' ' -f1); \
	if [[ -x ../bin/otelcol && "$$(cat ../bin/.otelcol.stamp 2>/dev/null)" == "$$hash" ]]; then \
		echo "otelcol: up to date"; exit 0; fi; \
	echo "otelcol: building"; start=$$SECONDS; mkdir -p ../bin; \
	GOFLAGS=-mod=readonly CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o ../bin/otelcol .; \
	echo "$$hash" > ../bin/.otelcol.stamp; \
	echo "otelcol: built in $$((SECONDS - start)) s"

## e2e: the end-to-end tests: real etcd, kube-apiserver and portico binary.
## Fails when a tool is missing; never skips.
e2e: e2e-tools
	$(CARGO) build --locked -p portico --bin portico
	PORTICO_E2E_BIN_DIR=$(E2E_BIN) \
	PORTICO_BIN=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/portico \
	PORTICO_CHART=$(CURDIR)/charts/portico \
	$(CARGO) test --locked -p portico-e2e -- --nocapture

## tools: what `make test` needs beyond the Rust toolchain, installed idempotently.
tools:
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	@if ! cargo deny --version 2>/dev/null | grep -q "$(CARGO_DENY_VERSION)"; then \
		$(CARGO) install cargo-deny --version $(CARGO_DENY_VERSION) --locked; fi
	@if ! .tools/bin/kopium --version 2>/dev/null | grep -q "$(KOPIUM_VERSION)"; then \
		$(CARGO) install kopium --version $(KOPIUM_VERSION) --locked --root .tools; fi

## bench: criterion route-lookup and IP-list lookup benches, then the load comparison with nginx
## and haproxy (installs them from Debian packages if missing), then unary
## gRPC and gRPC-Web calls (bench/grpc.sh), then the failover scenario (one
## of three pods killed under load).
bench: bench-lookup bench-translate bench-load bench-grpc bench-failover

bench-lookup:
	$(CARGO) bench -p portico-dataplane --bench lookup
	$(CARGO) bench -p portico-dataplane --bench ip_set

bench-translate:
	$(CARGO) run --release -p portico --example translate_bench -- 10000
	$(CARGO) run --release -p portico --example translate_bench -- 10000 httproute
	$(CARGO) run --release -p portico --example translate_bench -- 10000 portico

bench-load:
	bash bench/load.sh
	BENCH_TLS=keepalive BENCH_PROXIES="portico nginx" BENCH_BUILD=0 bash bench/load.sh
	BENCH_TLS=handshake BENCH_PROXIES="portico nginx" BENCH_BUILD=0 bash bench/load.sh
	BENCH_POLICIES=on BENCH_PROXIES="portico nginx" BENCH_BUILD=0 bash bench/load.sh

bench-grpc:
	bash bench/grpc.sh

## bench-failover: client load while one of three endpoints is killed; prints
## the error rate and the time to recover per configuration.
bench-failover:
	$(CARGO) run --release -p portico-dataplane --example bench_failover

## bench-report: the twelve-scenario comparison with nginx, haproxy, Caddy and
## Traefik, written as target/bench/report/index.html (plots embedded) and
## summary.md; see docs/benchmarks.md. bench-report-render: the same report
## from the results already measured, measuring nothing.
bench-report:
	bash bench/report.sh

bench-report-render:
	bash bench/report.sh --render-only

clean:
	$(CARGO) clean
