#!/usr/bin/env bash
# Per-request kernel work that does not depend on how busy the machine is:
# syscalls, context switches and page faults of the proxy (perf stat on its
# process), and TCP segments sent on loopback (all processes, from
# /proc/net/snmp), for portico (bench_proxy) and nginx behind the same
# upstream, pinned as bench/load.sh pins them. Counts, not times: they tell
# whether a proxy does more kernel work per request, whatever the load.
#
# usage: bash bench/syscalls.sh   (after bench/load.sh built the examples
#        and installed nginx, wrk and perf; BENCH_SECONDS=5)
#   BENCH_BODY=up        every request a POST of 1 MiB (as bench/load.sh's),
#                        16 connections unless BENCH_CONNECTIONS says
#   BENCH_CONNECTIONS    wrk connections (64; 16 with BENCH_BODY=up)
#   BENCH_KERNEL_SPLIT=1 also sample each proxy (perf record, 5 kHz) and
#                        print its CPU per request split into user time,
#                        the kernel's copies into and out of user memory
#                        (_copy_to_iter: reads; _copy_from_iter: writes)
#                        and the rest of the kernel, in microseconds
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
seconds=${BENCH_SECONDS:-5}
bin=${BENCH_BIN_DIR:-$root/target/release/examples}
command -v perf >/dev/null || { echo "syscalls: needs perf (apt-get install linux-perf)" >&2; exit 1; }
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
body=${BENCH_BODY:-none}
split=${BENCH_KERNEL_SPLIT:-0}
connections=64
wrk_args=()
case $body in
  none) ;;
  up)
    connections=16
    cat >"$tmp/upload.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
    wrk_args=(-s "$tmp/upload.lua")
    ;;
  *) echo "syscalls: BENCH_BODY must be none or up" >&2; exit 1 ;;
esac
connections=${BENCH_CONNECTIONS:-$connections}
segments() { awk '/^Tcp:/ { if (h) print $12; h = 1 }' /proc/net/snmp; }
wait_up() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

taskset -c 1 "$bin/bench_upstream" 127.0.0.1:0 >"$tmp/up" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do upstream=$(head -n1 "$tmp/up"); [[ -n $upstream ]] && break; sleep 0.1; done

measure() {
  local name=$1 url=$2 pid=$3 before after requests
  wait_up "$url" || { echo "$name does not answer" >&2; exit 1; }
  taskset -c 1 wrk -t1 -c"$connections" -d2s "${wrk_args[@]}" "$url" >/dev/null
  perf stat -x, -e raw_syscalls:sys_enter,context-switches,page-faults -p "$pid" \
    -o "$tmp/$name.perf" -- sleep "$((seconds + 1))" &
  local perf_pid=$! record_pid=
  if [[ $split == 1 ]]; then
    perf record -F 5000 -p "$pid" -o "$tmp/$name.data" -- sleep "$((seconds + 1))" 2>/dev/null &
    record_pid=$!
  fi
  sleep 0.5
  before=$(segments)
  requests=$(taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" "${wrk_args[@]}" "$url" | awk '/requests in/ {print $1}')
  after=$(segments)
  wait "$perf_pid"
  [[ -z $record_pid ]] || wait "$record_pid"
  awk -F, -v n="$requests" -v seg="$((after - before))" -v name="$name" '
    $3 ~ /sys_enter/ { s = $1 } $3 ~ /context-switches/ { c = $1 } $3 ~ /page-faults/ { f = $1 }
    END { printf "%-8s requests %7d  per request: syscalls %.2f  context switches %.3f  page faults %.3f  TCP segments (all) %.2f\n", name, n, s / n, c / n, f / n, seg / n }' \
    "$tmp/$name.perf"
  [[ $split == 1 ]] || return 0
  # Samples of the proxy's process over the perf window (about a second
  # longer than wrk's), each 200 us at 5 kHz, divided by wrk's requests:
  # the split is the point, and the window inflates every part alike.
  perf report -i "$tmp/$name.data" --no-children --sort symbol --stdio -n 2>/dev/null |
    awk -v n="$requests" -v name="$name" '
      /^#/ || NF < 4 { next }
      { samples = $2; total += samples; where = ""; sym = ""
        for (i = 3; i < NF; i++) if ($i == "[k]" || $i == "[.]") { where = $i; sym = $(i + 1); break } }
      where == "[.]" { user += samples; next }
      sym == "_copy_to_iter" { to += samples; next }
      sym == "_copy_from_iter" { from += samples; next }
      END { us = 200 / n
        printf "%-8s CPU us per request: user %.0f  kernel copies in (reads) %.0f  out (writes) %.0f  rest of the kernel %.0f\n",
          name, user * us, to * us, from * us, (total - user - to - from) * us }'
}

port=$(free_port)
taskset -c 0 "$bin/bench_proxy" "127.0.0.1:$port" "127.0.0.1:$(free_port)" "$upstream" >/dev/null 2>&1 &
pids+=($!)
measure portico "http://127.0.0.1:$port/" "$!"

port=$(free_port)
mkdir -p "$tmp/nginx"
sed -e "s|@DIR@|$tmp/nginx|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM@|$upstream|g" \
  -e "s|@LISTEN_SSL@||g" -e "s|@SSL_CONF@||g" -e "s|@HTTP_POLICIES@||g" -e "s|@POLICIES@||g" \
  "$here/nginx.conf.in" >"$tmp/nginx/nginx.conf"
taskset -c 0 nginx -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >/dev/null 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$port/"
worker=$(cat /proc/"$!"/task/*/children | tr ' ' '\n' | grep . | head -n1)
measure nginx "http://127.0.0.1:$port/" "$worker"
