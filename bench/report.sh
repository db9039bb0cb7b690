#!/usr/bin/env bash
# `make bench-report`: runs the twelve scenarios of the comparison, each
# into its own JSON file under <target>/bench/report/data/, then renders
# the self-contained HTML report (index.html, plots embedded) and the
# markdown summary (summary.md) with bench/report.py. Figures are measured
# and reported, never asserted; a scenario that cannot be measured here is
# listed in the report with the reason, and the others still run.
#
# Placement, logging and keep-alive are bench/load.sh's for every scenario
# (proxy alone on core 0; load generator and upstream on core 1; every
# proxy logs each request to /dev/null; keep-alive to the upstream).
#
# Usage: bash bench/report.sh [--render-only]
#   --render-only: re-render the report from the JSON already in data/,
#                  measuring nothing (`make bench-report-render`).
#
# Knobs (environment), besides bench/load.sh's (BENCH_SECONDS,
# BENCH_ROUNDS, BENCH_BUILD, BENCH_BIN_DIR, OHA, ...), which every
# load-based scenario passes on:
#   BENCH_SCENARIOS    which scenarios, by id (all twelve, in this order:
#                      keepalive conn-close tls-keepalive tls-handshake
#                      route-edits failover bodies routes-10k regex h2 grpc
#                      websocket)
#   BENCH_REPORT_DIR   where the report goes (<target>/bench/report)
#   BENCH_PORTICO      the release binary for the scenarios that run
#                      `portico run --manifests` (<target>/release/portico)
#   BENCH_EDIT_SECONDS duration of the route-edit and failover scenarios (20)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"

MATPLOTLIB_VERSION=3.9.2
WEBSOCKETS_VERSION=13.1

log() { printf 'report: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

target=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
report=${BENCH_REPORT_DIR:-$target/bench/report}
data=$report/data
venv=$target/bench-tools/venv
all_scenarios="keepalive conn-close tls-keepalive tls-handshake route-edits failover bodies routes-10k regex h2 grpc websocket"
scenarios=${BENCH_SCENARIOS:-$all_scenarios}
export BENCH_BIN_DIR=${BENCH_BIN_DIR:-$target/release/examples}
portico_bin=${BENCH_PORTICO:-$target/release/portico}

# matplotlib (the plots) and websockets (the WebSocket scenario's echo
# upstream and client) from PyPI, pinned, into a venv under the target
# directory; installed only when missing or at another version.
install_venv() {
  if "$venv/bin/python" -c "
import sys, matplotlib, websockets
sys.exit(matplotlib.__version__ != '$MATPLOTLIB_VERSION' or websockets.__version__ != '$WEBSOCKETS_VERSION')" 2>/dev/null; then
    return 0
  fi
  log "installing matplotlib $MATPLOTLIB_VERSION and websockets $WEBSOCKETS_VERSION into $venv (once)"
  [[ -x $venv/bin/pip ]] || python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "matplotlib==$MATPLOTLIB_VERSION" "websockets==$WEBSOCKETS_VERSION" ||
    die "pip install into $venv failed"
}

# Installs Debian packages that are missing, with services left stopped
# (policy-rc.d), as bench/load.sh does. Arguments: command:package pairs.
install_debs() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing from Debian: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?
  ((own_policy)) && "${sudo[@]}" rm -f "$policy"
  ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# Records a scenario's state for the report: measured, failed or not
# measured, with the reason.
status() {
  local id=$1 state=$2 why=${3:-}
  python3 -c 'import json, sys; json.dump({"status": sys.argv[1], "why": sys.argv[2]}, open(sys.argv[3], "w"))' \
    "$state" "$why" "$data/$id.status.json"
}

# === scenarios ===
# Each scenario_<id> writes $data/<id>.json, its log to $data/<id>.log,
# and returns non-zero if it could not measure. One that is not
# implemented yet, or needs something not built, calls `status` itself
# with "not measured" and returns 3.

load_scenario() {
  local id=$1
  shift
  env "$@" BENCH_OUT="$data/$id.json" bash "$here/load.sh" >"$data/$id.txt" 2>"$data/$id.log"
}

scenario_keepalive() { load_scenario keepalive; }
scenario_conn-close() { load_scenario conn-close BENCH_CONN=close; }
scenario_tls-keepalive() { load_scenario tls-keepalive BENCH_TLS=keepalive; }
scenario_tls-handshake() { load_scenario tls-handshake BENCH_TLS=handshake; }

not_yet() {
  status "$1" "not measured" "$2"
  return 3
}

# The Traefik binary, built once (bench/traefik/build.sh caches it).
traefik_bin() {
  [[ -n ${BENCH_TRAEFIK:-} ]] || BENCH_TRAEFIK=$(bash "$here/traefik/build.sh" "$target/bench-tools/bin" 2>>"$data/traefik-build.log") || BENCH_TRAEFIK=
  export BENCH_TRAEFIK
}

churn_scenario() {
  local id=$1 what=$2
  [[ -x $portico_bin ]] || {
    status "$id" "not measured" "no portico release binary at $portico_bin (cargo build --release -p portico)"
    return 3
  }
  traefik_bin
  BENCH_PORTICO=$portico_bin python3 "$here/churn.py" "$what" "$data/$id.json" 2>"$data/$id.log"
}

scenario_route-edits() { churn_scenario route-edits edits; }
scenario_failover() { churn_scenario failover failover; }
# Needs bench_upstream to answer GET /1m with 1 MiB and to read uploads
# (dataplane/examples/bench_upstream.rs); an older build answers 13 bytes
# and leaves uploads unread, which would measure nothing useful.
upstream_serves_1m() {
  local out=$data/upstream-check.out pid size=0 addr='' i
  taskset -c 1 "$BENCH_BIN_DIR/bench_upstream" 127.0.0.1:0 >"$out" 2>/dev/null &
  pid=$!
  for ((i = 0; i < 50; i++)); do
    addr=$(head -n1 "$out" 2>/dev/null || true)
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] && size=$(curl -s --max-time 5 "http://$addr/1m" | wc -c)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$out"
  ((size == 1048576))
}

scenario_bodies() {
  upstream_serves_1m || {
    status bodies "not measured" "needs the bench_upstream change (GET /1m answers 1 MiB, uploads read to the end): written in dataplane/examples/bench_upstream.rs, not yet built"
    return 3
  }
  rm -f "$data/bodies-up.json" "$data/bodies-down.json"
  load_scenario bodies-up BENCH_BODY=up && load_scenario bodies-down BENCH_BODY=down
}
scenario_routes-10k() { load_scenario routes-10k BENCH_ROUTES=hosts BENCH_PORTICO="$portico_bin"; }
scenario_regex() { load_scenario regex BENCH_ROUTES=regex BENCH_PORTICO="$portico_bin"; }
scenario_h2() { load_scenario h2 BENCH_H2=on; }
# Unary calls only; streaming needs a streaming method in bench_grpc.
scenario_grpc() {
  [[ -x $BENCH_BIN_DIR/bench_grpc ]] || {
    not_yet grpc "no bench_grpc example in $BENCH_BIN_DIR (cargo build --release -p portico-dataplane --example bench_grpc)"
    return 3
  }
  traefik_bin
  local proxies="portico nginx haproxy caddy"
  [[ -n $BENCH_TRAEFIK ]] && proxies+=" traefik"
  BENCH_BUILD=0 BENCH_GRPC_PROXIES=$proxies BENCH_GRPC_OUT=$data/grpc.json BENCH_PORTICO=$portico_bin \
    bash "$here/grpc.sh" >"$data/grpc.txt" 2>"$data/grpc.log"
}
scenario_websocket() {
  traefik_bin
  BENCH_PORTICO=$portico_bin "$venv/bin/python" "$here/websocket.py" "$data/websocket.json" 2>"$data/websocket.log"
}

# The machine and every tool's version, for the report's header.
machine() {
  {
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    local rev
    rev=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
    if [[ $built == 1 ]]; then
      echo "portico=portico $rev"
    else
      # Not built from this tree: say which binaries were measured.
      echo "portico=portico binaries given (BENCH_BUILD=0: $BENCH_BIN_DIR, $portico_bin); tree $rev"
    fi
    echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
    command -v nginx >/dev/null && echo "nginx=$(nginx -v 2>&1 | head -n1)"
    command -v haproxy >/dev/null && echo "haproxy=$(haproxy -v 2>&1 | head -n1)"
    command -v caddy >/dev/null && echo "caddy=caddy $(caddy version 2>&1 | head -n1)"
    local traefik=$target/bench-tools/bin/traefik
    [[ -x $traefik ]] && echo "traefik=traefik $("$traefik" version 2>&1 | awk '/^Version:/ {print $2}')"
    command -v wrk >/dev/null && echo "wrk=$(wrk -v 2>&1 | head -n1 || true)"
    local oha=${OHA:-$target/bench-tools/bin/oha}
    [[ -x $oha ]] && echo "oha=$("$oha" --version)"
    command -v h2load >/dev/null && echo "h2load=$(h2load --version 2>&1 | head -n1)"
    echo "openssl=$(openssl version 2>/dev/null || echo unknown)"
    echo "python=$(python3 -V 2>&1)"
    echo "matplotlib=$("$venv/bin/python" -c 'import matplotlib; print(matplotlib.__version__)' 2>/dev/null || echo missing)"
    echo "placement=proxy alone on core 0 (taskset); load generator and upstream on core 1"
  } >"$data/machine.txt"
}

render() {
  install_venv
  "$venv/bin/python" "$here/report.py" "$data" "$report"
}

main() {
  if [[ ${1:-} == --render-only ]]; then
    [[ -d $data ]] || die "no results in $data: run make bench-report first"
    render
    return
  fi
  [[ $(uname -s) == Linux ]] || die "needs Linux (taskset, /proc)"
  install_venv
  mkdir -p "$data"
  built=0
  if [[ ${BENCH_BUILD:-1} != 0 ]]; then
    built=1
    log "building portico and the bench examples (release)"
    (cd "$root" && cargo build --release -q -p portico &&
      cargo build --release -q -p portico-dataplane --example bench_upstream --example bench_proxy \
        --example bench_failover --example bench_grpc) || die "cargo build failed"
  fi
  # Built once above (or given); the scenarios' scripts do not rebuild.
  export BENCH_BUILD=0
  local id rc known
  for id in $scenarios; do
    known=0
    for k in $all_scenarios; do [[ $k == "$id" ]] && known=1; done
    ((known)) || die "unknown scenario in BENCH_SCENARIOS: $id (known: $all_scenarios)"
  done
  for id in $scenarios; do
    rm -f "$data/$id".* "$data/$id"-*.json
    log "scenario $id"
    rc=0
    "scenario_$id" || rc=$?
    case $rc in
      0) status "$id" measured ;;
      3) log "$id: not measured: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["why"])' "$data/$id.status.json")" ;;
      *)
        log "$id failed (exit $rc); its log: $data/$id.log"
        tail -n 5 "$data/$id.log" >&2 2>/dev/null || true
        status "$id" failed "exit $rc; see data/$id.log: $(tail -n 1 "$data/$id.log" 2>/dev/null || true)"
        ;;
    esac
  done
  machine
  render
}

main "$@"
