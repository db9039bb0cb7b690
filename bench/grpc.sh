#!/usr/bin/env bash
# The gRPC half of `make bench`: unary gRPC calls straight to a tonic
# upstream, through Portico and through nginx (grpc_pass), and gRPC-Web
# unary calls through Portico's bridge; prints calls/s, p50 and p99 and
# the ratios. Figures are reported, never asserted.
#
# Placement (two cores, as bench/load.sh): core 0 runs only the proxy under
# test; core 1 runs the load client (bench_grpc load, one thread) and the
# upstream (one thread). "direct" runs the client against the upstream on
# core 1 alone: the proxied runs add a hop and a core, so the ratio says
# what the hop costs in throughput when the load side is the same.
#
# Portico is the release binary as users run it (`portico run --manifests`,
# one Ingress with `backend-protocol: GRPC` and gRPC-Web on, one tokio
# worker, the access log on stdout to /dev/null), as bench/load.sh runs it;
# BENCH_PORTICO=example runs the bench_grpc example's proxy instead.
#
# Knobs: BENCH_SECONDS (10), BENCH_CONCURRENCY (64 calls in flight),
# BENCH_BUILD (1; 0 uses existing binaries), BENCH_PORTICO (the portico
# binary, <target>/release/portico; `example`), BENCH_GRPC_PROXIES
# ("portico nginx"; haproxy, caddy and traefik too, all h2c in and out,
# one worker each, access log to /dev/null), BENCH_BIN_DIR (where
# bench_grpc is), BENCH_TRAEFIK (the traefik binary), BENCH_GRPC_OUT (a
# JSON file for bench/report.py).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"
seconds=${BENCH_SECONDS:-10}
conc=${BENCH_CONCURRENCY:-64}
proxies=${BENCH_GRPC_PROXIES:-portico nginx}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=${BENCH_BIN_DIR:-$target_dir/release/examples}/bench_grpc
portico_bin=${BENCH_PORTICO:-$target_dir/release/portico}
proxy_core=0
load_core=1

log() { printf 'grpc: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

[[ $(nproc) -ge 2 ]] || die "needs two cores"
if [[ ${BENCH_BUILD:-1} == 1 ]]; then
  build=(--example bench_grpc)
  [[ $portico_bin == example || " $proxies " != *" portico "* ]] || build+=(--bin portico)
  (cd "$root" && cargo build --release --locked --workspace --exclude portico-e2e "${build[@]}" >&2)
fi
[[ -x $bin ]] || die "$bin missing (BENCH_BUILD=0 without a build?)"
[[ $portico_bin == example || " $proxies " != *" portico "* || -x $portico_bin ]] ||
  die "$portico_bin missing (BENCH_BUILD=0 without a build?)"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (bounded) for a role to print the address it bound.
bound_addr() {
  local file=$1 what=$2 i addr
  for ((i = 0; i < 200; i++)); do
    addr=$(awk -v w="$what" '$2 == w {print $3; exit}' "$file" 2>/dev/null)
    [[ -n $addr ]] && { echo "$addr"; return 0; }
    sleep 0.05
  done
  die "$what did not start: $(cat "$file")"
}

taskset -c $load_core "$bin" upstream 127.0.0.1:0 2>"$tmp/upstream.err" &
pids+=($!)
upstream=$(bound_addr "$tmp/upstream.err" upstream)

# haproxy, Caddy and Traefik proxy gRPC as plain HTTP/2: h2c from the
# client, h2c to the upstream. Sets $pid.
start_h2c_peer() {
  local name=$1 port=$2
  case $name in
    haproxy)
      cat >"$tmp/haproxy.cfg" <<EOF
global
    nbthread 1
    cpu-map 1/1 $proxy_core
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend grpc
    bind 127.0.0.1:$port proto h2
    http-request set-header X-Request-ID %[uuid]
    option forwardfor
    default_backend upstream
backend upstream
    server upstream $upstream proto h2
EOF
      taskset -c $proxy_core haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>"$tmp/haproxy.err" &
      ;;
    caddy)
      cat >"$tmp/Caddyfile" <<EOF
{
	admin off
	auto_https off
	servers {
		protocols h1 h2 h2c
	}
}
http://127.0.0.1:$port {
	log {
		output stdout
		format json
	}
	reverse_proxy h2c://$upstream {
		header_up X-Request-ID {http.request.uuid}
	}
}
EOF
      GOMAXPROCS=1 XDG_DATA_HOME=$tmp XDG_CONFIG_HOME=$tmp taskset -c $proxy_core \
        caddy run --config "$tmp/Caddyfile" --adapter caddyfile >/dev/null 2>"$tmp/caddy.err" &
      ;;
    traefik)
      [[ -x ${BENCH_TRAEFIK:-} ]] || die "traefik: set BENCH_TRAEFIK to the binary"
      cat >"$tmp/traefik.yml" <<EOF
entryPoints:
  web:
    address: "127.0.0.1:$port"
providers:
  file:
    filename: "$tmp/traefik-routes.yml"
accessLog:
  format: json
log:
  level: ERROR
EOF
      cat >"$tmp/traefik-routes.yml" <<EOF
http:
  routers:
    grpc:
      rule: "PathPrefix(\`/\`)"
      entryPoints: [web]
      service: upstream
  services:
    upstream:
      loadBalancer:
        servers:
          - url: "h2c://$upstream"
EOF
      GOMAXPROCS=1 taskset -c $proxy_core "$BENCH_TRAEFIK" --configFile="$tmp/traefik.yml" >/dev/null 2>"$tmp/traefik.err" &
      ;;
  esac
  pid=$!
  pids+=($pid)
}

# CPU ticks (user + system) of process $1 and its children (nginx's worker
# is its master's child), and the busy ticks of core $2 from /proc/stat.
proc_ticks() {
  awk -v p="$1" '{ # the command name may hold spaces: fields from the last ")"
    s = $0; sub(/^.*\) /, "", s); split(s, f, " ")
    if (FILENAME ~ "/" p "/stat$" || f[2] == p) t += f[12] + f[13]
  } END { print t + 0 }' /proc/[0-9]*/stat 2>/dev/null
}
core_busy_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

# The proxy process a run measures ($measured_pid; empty for direct): its
# CPU over the measured window says whether the proxy core was the limit
# (a proxy under 100% of its core was held back by the load core, where
# the client and the upstream run) and gives CPU per call, the figure per
# proxy core the issue compares.
measured_pid=
results=()
run_load() {
  local name=$1 target=$2 mode=$3 out t0 t1 c0 c1 w0 w1
  # Warm-up, then the measured run.
  taskset -c $load_core "$bin" load "$target" "$mode" 2 "$conc" >/dev/null
  t0=$( [[ -n $measured_pid ]] && proc_ticks "$measured_pid" || echo 0)
  c0=$(core_busy_ticks $load_core)
  w0=$(date +%s.%N)
  out=$(taskset -c $load_core "$bin" load "$target" "$mode" "$seconds" "$conc")
  w1=$(date +%s.%N)
  c1=$(core_busy_ticks $load_core)
  t1=$( [[ -n $measured_pid ]] && proc_ticks "$measured_pid" || echo 0)
  log "$name: $out"
  results+=("$name $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["calls_per_s"], d["p50_ms"], d["p99_ms"], d["errors"])' "$out") $(python3 -c '
import os, sys
t0, t1, c0, c1, w0, w1 = map(float, sys.argv[1:])
hz = os.sysconf("SC_CLK_TCK")
print(round((t1 - t0) / hz / (w1 - w0), 3), round((c1 - c0) / hz / (w1 - w0), 3))' "$t0" "$t1" "$c0" "$c1" "$w0" "$w1")")
}

# Streaming: long-lived Bidi streams, a message and its echo at a time;
# only with a bench_grpc that has the mode.
streams=0
usage=$("$bin" 2>&1 || true)
[[ $usage == *grpc-stream* ]] && streams=1
((streams)) || log "this bench_grpc has no grpc-stream mode (rebuild it); streaming skipped"

# Unary, then streaming when available, against one target.
run_both() {
  local name=$1 target=$2
  run_load "$name" "$target" grpc
  ((streams)) && run_load "$name-stream" "$target" grpc-stream
  return 0
}

run_both direct "$upstream"

for p in $proxies; do
  case $p in
    portico)
      if [[ $portico_bin == example ]]; then
        taskset -c $proxy_core "$bin" proxy 127.0.0.1:0 "$upstream" >/dev/null 2>"$tmp/proxy.err" &
        pid=$!
        pids+=($pid)
        addr=$(bound_addr "$tmp/proxy.err" proxy)
      else
        port=$(free_port)
        python3 "$here/routes.py" grpc portico "$tmp/manifests" "$upstream" || die "routes.py grpc portico failed"
        TOKIO_WORKER_THREADS=1 taskset -c $proxy_core "$portico_bin" run --manifests "$tmp/manifests" \
          --http-addr "127.0.0.1:$port" --https-addr "127.0.0.1:$(free_port)" \
          --admin-addr "127.0.0.1:$(free_port)" --debug-addr off \
          >/dev/null 2>"$tmp/proxy.err" &
        pid=$!
        pids+=($pid)
        addr=127.0.0.1:$port
        # Ready once a call goes through (the route is published after start).
        for ((i = 0; i < 200; i++)); do
          taskset -c $load_core "$bin" calls "$addr" grpc 1 1 >/dev/null 2>&1 && break
          kill -0 "$pid" 2>/dev/null || die "portico exited: $(cat "$tmp/proxy.err")"
          sleep 0.05
        done
      fi
      measured_pid=$pid
      run_both portico-grpc "$addr"
      run_load portico-grpc-web "$addr" grpc-web
      kill "$pid"
      ;;
    nginx)
      command -v nginx >/dev/null || { log "nginx not installed (make bench-load installs it); skipped"; continue; }
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      mkdir -p "$tmp/nginx"
      sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$upstream|g" \
        "$here/nginx-grpc.conf.in" >"$tmp/nginx/nginx.conf"
      taskset -c $proxy_core nginx -e "$tmp/nginx/nginx-error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
      pid=$!
      pids+=($pid)
      for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
      done
      measured_pid=$pid
      run_both nginx-grpc "127.0.0.1:$port"
      kill "$pid"
      ;;
    haproxy | caddy | traefik)
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      start_h2c_peer "$p" "$port"
      for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
      done
      measured_pid=$pid
      run_both "$p-grpc" "127.0.0.1:$port"
      kill "$pid"
      ;;
    *) die "unknown proxy $p" ;;
  esac
done

BENCH_GRPC_OUT=${BENCH_GRPC_OUT:-} python3 - "${results[@]}" <<'PY'
import json, os, sys
rows = {}
cpu = {}
for r in sys.argv[1:]:
    name, rps, p50, p99, err, proxy_cores, load_cores = r.split()
    rows[name] = (float(rps), float(p50), float(p99), int(err))
    cpu[name] = (float(proxy_cores), float(load_cores))
print(f"{'run':<20}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'proxy cpu':>11}{'load cpu':>10}{'proxy us/call':>15}{'calls/s/cpu':>13}")
def per_core(name):
    rps, cores = rows[name][0], cpu[name][0]
    return rps / cores if cores > 0 else None
for name, (rps, p50, p99, err) in rows.items():
    cores, load = cpu[name]
    us = f"{cores * 1e6 / rps:.2f}" if cores > 0 and rps else "-"
    pc = per_core(name)
    print(f"{name:<20}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{err:>8}{cores * 100 if cores else 0:>10.0f}%{load * 100:>9.0f}%{us:>15}{pc and f'{pc:.0f}' or '-':>13}")
print("proxy cpu: the proxy's processes, of one core, over the measured window; load cpu: the load core")
print("(client and upstream) busy. A proxy under ~95% was held back by the load core: compare calls/s/cpu.")
def ratio(a, b):
    if a in rows and b in rows and rows[b][0]:
        line = f"{a} / {b}: {rows[a][0] / rows[b][0]:.2f}"
        pa, pb = (per_core(a) if cpu[a][0] else None), (per_core(b) if cpu[b][0] else None)
        if pa and pb:
            line += f" (per proxy core {pa / pb:.2f})"
        print(line)
ratio("portico-grpc", "direct")
ratio("portico-grpc-web", "direct")
ratio("portico-grpc", "nginx-grpc")
ratio("portico-grpc-stream", "nginx-grpc-stream")
ratio("nginx-grpc", "direct")
out = os.environ.get("BENCH_GRPC_OUT")
if out:
    # bench/report.py's table form; "proxy" is the run's name. Ratios are
    # within a kind: unary with unary, streams with streams.
    results = []
    for name, (rps, p50, p99, err) in rows.items():
        kind = "-stream" if name.endswith("-stream") else ""
        direct = rows.get("direct" + kind, (None,))[0]
        portico = rows.get("portico-grpc" + kind, (None,))[0]
        results.append({
            "proxy": name.replace("-grpc", ""), "calls_per_s": rps, "p50_ms": p50, "p99_ms": p99, "errors": err,
            "of_direct": round(rps / direct, 2) if direct else None,
            "portico_ratio": round(portico / rps, 2) if portico and rps and not name.endswith("-web") else None,
            "proxy_us": round(cpu[name][0] * 1e6 / rps, 2) if cpu[name][0] > 0 and rps else None,
        })
    with open(out, "w") as f:
        json.dump({
            "caption": "gRPC over h2c in and out, 64 in flight (bench_grpc load on the load core): unary calls, "
                       "and (-stream) messages on 64 long-lived Bidi streams",
            "columns": [["proxy", "run"], ["calls_per_s", "calls or messages/s"], ["p50_ms", "p50 ms", ".2f"],
                        ["p99_ms", "p99 ms", ".2f"], ["errors", "errors", "d"], ["of_direct", "of direct", ".2f"],
                        ["portico_ratio", "portico/this", ".2f"], ["proxy_us", "proxy CPU µs/call", ".2f"]],
            "bar": {"key": "calls_per_s", "title": "unary gRPC calls/s", "ylabel": "calls/s"},
            "results": results,
        }, f, indent=2)
PY
