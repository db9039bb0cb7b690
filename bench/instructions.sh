#!/usr/bin/env bash
# User-space work per proxied request, in counts that do not depend on how
# busy the machine is: instructions (and allocator calls) per request, for
# the bench_proxy example and for the real binary (`portico run
# --manifests`, access log on), each behind the same small-response
# upstream, keep-alive, as bench/load.sh runs them.
#
# This VM exposes no hardware counters (`perf stat -e instructions:u` says
# "not supported"), so the counts come from valgrind's callgrind: the proxy
# runs under it, pinned to core 0; oha (pinned to core 1) sends a warm-up,
# the counters are zeroed, oha sends exactly BENCH_REQUESTS requests, and
# the counters are dumped. Every instruction of the process counts (all
# threads: the access-log writer too), divided by the request count.
# Allocations are calls into the allocator (mimalloc's aligned entry points,
# and libc malloc/calloc/realloc from C code) from outside it.
#
# The counts are of the whole process over the window, so anything the
# proxy does on a timer (the access-log writer's 4 ms wake-ups, the
# connection control ticks) adds a little that depends on the window's
# length under valgrind (tens of seconds); at the default request count it
# is well under 1% of the total. Batching depends on concurrency: under
# callgrind the proxy is the bottleneck, so with 64 connections each wake-up
# finds many requests ready, as at saturation natively.
#
# gRPC (the h2 -> h2 path, as bench/grpc.sh runs it): unary calls over
# h2c in and out to the tonic echo upstream (`bench_grpc upstream`), sent by
# `bench_grpc calls` (one HTTP/2 connection, BENCH_CONNECTIONS calls in
# flight, exactly BENCH_REQUESTS calls), per call rather than per request.
#
# Prints one line per proxy and writes each callgrind profile
# (callgrind_annotate-ready) and its top functions, self and inclusive, to
# BENCH_OUT_DIR.
#
# usage: bash bench/instructions.sh
# knobs:
#   BENCH_TARGETS      which proxies, in order ("example portico"):
#                      example = bench_proxy, portico = the real binary,
#                      nginx = nginx proxy_pass with bench/nginx.conf.in as
#                      bench/load.sh runs it (one process: no master);
#                      gRPC: grpc = the real binary (`backend-protocol:
#                      GRPC`, gRPC-Web on), grpc-example = bench_grpc's
#                      proxy, nginx-grpc = nginx grpc_pass
#                      (bench/nginx-grpc.conf.in, one process: no master)
#   BENCH_REQUESTS     requests (calls) measured (20000)
#   BENCH_WARMUP_REQUESTS requests before the counters are zeroed (2000)
#   BENCH_CONNECTIONS  client connections; gRPC: calls in flight on one
#                      connection (64)
#   BENCH_PROFILE      cargo profile whose binaries are used (profiling:
#                      release code generation, with line tables for
#                      callgrind_annotate)
#   BENCH_BUILD        0: do not build (1)
#   BENCH_BIN_DIR      bench_proxy, bench_upstream and bench_grpc
#                      (<target>/<profile>/examples)
#   BENCH_PORTICO      the portico binary (<target>/<profile>/portico)
#   BENCH_OUT_DIR      profiles and summaries (<target>/bench/instructions)
#   OHA                the oha binary (<target>/bench-tools/bin/oha, as
#                      bench/load.sh builds it)
#   BENCH_POST_BYTES   HTTP targets: each request a POST of a body this
#                      large (bench/load.sh's BENCH_BODY=up sends 1 MiB:
#                      1048576) instead of a GET
#   BENCH_SIM          cache: also simulate the caches and branch predictor
#                      (callgrind --cache-sim=yes --branch-sim=yes) and print
#                      per request the L1 and last-level misses (I1mr D1mr
#                      D1mw ILmr DLmr DLmw) and the conditional and indirect
#                      branches mispredicted (Bcm Bim): a model of a generic
#                      machine, not this one's counters (which this VM does
#                      not expose), to compare proxies by, not to convert
#                      into time
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
profile=${BENCH_PROFILE:-profiling}
targets=${BENCH_TARGETS:-example portico}
requests=${BENCH_REQUESTS:-20000}
warmup=${BENCH_WARMUP_REQUESTS:-2000}
connections=${BENCH_CONNECTIONS:-64}
bin_dir=${BENCH_BIN_DIR:-$target/$profile/examples}
portico_bin=${BENCH_PORTICO:-$target/$profile/portico}
out_dir=${BENCH_OUT_DIR:-$target/bench/instructions}
oha=${OHA:-$target/bench-tools/bin/oha}
proxy_core=0
load_core=1

log() { echo "instructions: $*" >&2; }
die() {
  log "$*"
  exit 1
}

for tool in valgrind callgrind_control callgrind_annotate curl taskset python3; do
  command -v "$tool" >/dev/null || die "needs $tool (apt-get install valgrind curl util-linux python3)"
done
[[ $requests =~ ^[1-9][0-9]*$ ]] || die "BENCH_REQUESTS must be a positive number"

is_grpc() { [[ $1 == grpc || $1 == grpc-example || $1 == nginx-grpc ]]; }
http_targets=0 grpc_targets=0
for name in $targets; do
  if is_grpc "$name"; then grpc_targets=1; else http_targets=1; fi
done
# gRPC targets are loaded by bench_grpc, HTTP ones by oha.
((!http_targets)) || [[ -x $oha ]] || die "no oha at $oha (bench/load.sh builds it; or set OHA)"

if [[ ${BENCH_BUILD:-1} != 0 ]]; then
  build=()
  ((http_targets)) && build+=(--example bench_proxy --example bench_upstream)
  ((grpc_targets)) && build+=(--example bench_grpc)
  [[ " $targets " == *" portico "* || " $targets " == *" grpc "* ]] && build+=(--bin portico)
  log "building ${build[*]} (profile $profile)"
  (cd "$root" && CARGO_INCREMENTAL=0 cargo build --profile "$profile" --locked -q \
    --workspace --exclude portico-e2e "${build[@]}")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/portico-instr.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$out_dir"
body=()
if [[ -n ${BENCH_POST_BYTES:-} ]]; then
  [[ $BENCH_POST_BYTES =~ ^[1-9][0-9]*$ ]] || die "BENCH_POST_BYTES must be a positive number"
  head -c "$BENCH_POST_BYTES" /dev/zero | tr '\0' x >"$tmp/body"
  body=(-m POST -D "$tmp/body")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (valgrind starts slowly) until `url` answers 200.
wait_ready() {
  local url=$1 pid=$2 i
  for ((i = 0; i < 600; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null) == 200 ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# Sends `n` requests over $connections connections; fails unless all got 200.
load() {
  local n=$1 url=$2 json
  json=$(taskset -c "$load_core" "$oha" --no-tui --output-format json -n "$n" -c "$connections" "${body[@]}" "$url")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); n = int(sys.argv[2])
codes = r.get("statusCodeDistribution", {})
if codes.get("200", 0) != n:
    sys.exit("expected %d answers 200, got %s (errors: %s)" % (n, codes, r.get("errorDistribution")))
' "$json" "$n"
}

# gRPC calls: exactly `n` unary calls, all of them OK, or it fails.
grpc_load() {
  local n=$1 target=$2
  taskset -c "$load_core" "$bin_dir/bench_grpc" calls "$target" grpc "$n" "$connections" >/dev/null
}

# Waits (valgrind starts slowly) until a gRPC call through `target` succeeds.
wait_grpc_ready() {
  local target=$1 pid=$2 i
  for ((i = 0; i < 600; i++)); do
    taskset -c "$load_core" "$bin_dir/bench_grpc" calls "$target" grpc 1 1 >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

if ((http_targets)); then
  taskset -c "$load_core" "$bin_dir/bench_upstream" 127.0.0.1:0 >"$tmp/upstream.out" 2>"$tmp/upstream.err" &
  pids+=($!)
  upstream=
  for ((i = 0; i < 100; i++)); do
    upstream=$(head -n1 "$tmp/upstream.out" 2>/dev/null || true)
    [[ -n $upstream ]] && break
    sleep 0.1
  done
  [[ -n $upstream ]] || die "upstream did not start: $(cat "$tmp/upstream.err")"
fi
if ((grpc_targets)); then
  # The tonic echo service, one thread, as bench/grpc.sh runs it.
  taskset -c "$load_core" "$bin_dir/bench_grpc" upstream 127.0.0.1:0 2>"$tmp/grpc-upstream.err" &
  pids+=($!)
  grpc_upstream=
  for ((i = 0; i < 100; i++)); do
    grpc_upstream=$(awk '$2 == "upstream" {print $3; exit}' "$tmp/grpc-upstream.err" 2>/dev/null)
    [[ -n $grpc_upstream ]] && break
    sleep 0.1
  done
  [[ -n $grpc_upstream ]] || die "gRPC upstream did not start: $(cat "$tmp/grpc-upstream.err")"
fi

# The callgrind dump's totals: instructions, and allocator calls from
# outside the allocator.
summarize() {
  python3 - "$1" <<'PY'
import re, sys
names, fn, total, events, totals = {}, None, 0, [], []
alloc = re.compile(r"^(mi_(malloc|zalloc|realloc|calloc)(_aligned)?|malloc|calloc|realloc)$")
inside = re.compile(r"^_?mi_")
allocs = 0
def name(spec):
    m = re.match(r"\((\d+)\)(?: (.*))?", spec)
    if not m:
        return spec
    if m.group(2) is not None:
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), "?")
callee = None
with open(sys.argv[1]) as f:
    for line in f:
        if line.startswith("fn="):
            fn = name(line[3:].strip())
        elif line.startswith("cfn="):
            callee = name(line[4:].strip())
        elif line.startswith("calls=") and callee is not None:
            if alloc.match(callee) and not inside.match(fn or ""):
                allocs += int(line[6:].split()[0])
            callee = None
        elif line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:") or line.startswith("totals:"):
            totals = [int(x) for x in line.split()[1:]]
            total = totals[0]
extra = ",".join("%s=%d" % (e, v) for e, v in zip(events[1:], totals[1:]))
print(total, allocs, extra or "-")
PY
}

# `url`: http://... for HTTP targets; host:port for gRPC ones.
measure() {
  local name=$1 url=$2 pid=$3 dump counts ir allocs unit=request
  if is_grpc "$name"; then
    unit=call
    wait_grpc_ready "$url" "$pid" || die "$name does not answer on $url: $(tail -n5 "$tmp/$name.err")"
    grpc_load "$warmup" "$url"
    callgrind_control -z "$pid" >/dev/null
    grpc_load "$requests" "$url"
  else
    wait_ready "$url" "$pid" || die "$name does not answer on $url: $(tail -n5 "$tmp/$name.err")"
    load "$warmup" "$url"
    callgrind_control -z "$pid" >/dev/null
    load "$requests" "$url"
  fi
  callgrind_control -d "$pid" >/dev/null
  # The dump is the newest numbered file of the process.
  dump=$(ls -t "$tmp/$name.cg".* 2>/dev/null | grep -v '\.out$' | head -n1 || true)
  [[ -n $dump ]] || dump=$(ls -t "$tmp/$name.cg"* | head -n1)
  read -r ir allocs extra <<<"$(summarize "$dump")"
  cp "$dump" "$out_dir/$name.callgrind"
  callgrind_annotate --inclusive=no "$dump" 2>/dev/null | head -n 60 >"$out_dir/$name.top.txt" || true
  # Every function, not only those making up the default 99 %.
  callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null | head -n 200 >"$out_dir/$name.inclusive.txt" || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  awk -v name="$name" -v n="$requests" -v ir="$ir" -v a="$allocs" -v c="$connections" -v u="$unit" 'BEGIN {
    printf "%-12s %d %ss, %d in flight: %.0f instructions/%s, %.2f allocations/%s\n", name, n, u, c, ir / n, u, a / n, u }'
  if [[ $extra != - ]]; then
    # The simulated events, per request.
    awk -v name="$name" -v n="$requests" -v u="$unit" -v extra="$extra" 'BEGIN {
      line = ""; k = split(extra, pairs, ",")
      for (i = 1; i <= k; i++) { split(pairs[i], kv, "="); line = line sprintf(" %s %.1f", kv[1], kv[2] / n) }
      printf "%-12s per %s:%s\n", name, u, line }'
  fi
}

callgrind=(valgrind --tool=callgrind --dump-instr=no --collect-jumps=no --compress-strings=yes)
[[ ${BENCH_SIM:-} != cache ]] || callgrind+=(--cache-sim=yes --branch-sim=yes)

for name in $targets; do
  port=$(free_port)
  case $name in
    example)
      taskset -c "$proxy_core" "${callgrind[@]}" --callgrind-out-file="$tmp/$name.cg" \
        "$bin_dir/bench_proxy" "127.0.0.1:$port" "127.0.0.1:$(free_port)" "$upstream" \
        >/dev/null 2>"$tmp/$name.err" &
      ;;
    portico | grpc)
      # portico: the same one route as bench_proxy's, every host and path;
      # grpc: that route to the gRPC upstream, as bench/grpc.sh runs it.
      if [[ $name == portico ]]; then
        python3 "$here/routes.py" one portico "$tmp/$name-manifests" "$upstream"
      else
        python3 "$here/routes.py" grpc portico "$tmp/$name-manifests" "$grpc_upstream"
      fi
      # One worker, as bench_proxy's one thread and the single-worker
      # nginx; stdout is the access log.
      TOKIO_WORKER_THREADS=1 taskset -c "$proxy_core" "${callgrind[@]}" --callgrind-out-file="$tmp/$name.cg" \
        "$portico_bin" run --manifests "$tmp/$name-manifests" \
        --http-addr "127.0.0.1:$port" --https-addr "127.0.0.1:$(free_port)" \
        --admin-addr "127.0.0.1:$(free_port)" --debug-addr off \
        >/dev/null 2>"$tmp/$name.err" &
      ;;
    grpc-example)
      taskset -c "$proxy_core" "${callgrind[@]}" --callgrind-out-file="$tmp/$name.cg" \
        "$bin_dir/bench_grpc" proxy "127.0.0.1:$port" "$grpc_upstream" \
        >/dev/null 2>"$tmp/$name.err" &
      ;;
    nginx)
      command -v nginx >/dev/null || die "nginx needs nginx"
      mkdir -p "$tmp/nginx"
      # As bench/load.sh runs it (plain HTTP, no policies), but one
      # process (no master), so the process measured is the worker.
      sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$upstream|g" \
        -e "s|@LISTEN_SSL@||g" -e "s|@SSL_CONF@||g" -e "s|@HTTP_POLICIES@||g" -e "s|@POLICIES@||g" \
        -e "s|^master_process on;|master_process off;|" \
        "$here/nginx.conf.in" >"$tmp/nginx/nginx.conf"
      taskset -c "$proxy_core" "${callgrind[@]}" --callgrind-out-file="$tmp/$name.cg" \
        nginx -e "$tmp/nginx/nginx-error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
        >/dev/null 2>"$tmp/$name.err" &
      ;;
    nginx-grpc)
      command -v nginx >/dev/null || die "nginx-grpc needs nginx"
      mkdir -p "$tmp/nginx"
      # One process (no master), so the process measured is the worker.
      sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$grpc_upstream|g" \
        -e "s|^master_process on;|master_process off;|" \
        "$here/nginx-grpc.conf.in" >"$tmp/nginx/nginx.conf"
      taskset -c "$proxy_core" "${callgrind[@]}" --callgrind-out-file="$tmp/$name.cg" \
        nginx -e "$tmp/nginx/nginx-error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
        >/dev/null 2>"$tmp/$name.err" &
      ;;
    *) die "unknown target $name (example, portico, nginx, grpc, grpc-example, nginx-grpc)" ;;
  esac
  pid=$!
  pids+=("$pid")
  if is_grpc "$name"; then
    measure "$name" "127.0.0.1:$port" "$pid"
  else
    measure "$name" "http://127.0.0.1:$port/" "$pid"
  fi
done
log "profiles in $out_dir (callgrind_annotate $out_dir/<name>.callgrind)"
