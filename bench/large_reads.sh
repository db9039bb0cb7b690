#!/usr/bin/env bash
# System calls the proxy makes to move 1 MiB responses: bench_proxy in
# front of bench_upstream, 50 keep-alive GETs of /1m over one connection,
# counted with `strace -f -c`. Counts, not times: the machine's load does
# not change them. Usage: bash bench/large_reads.sh [EXAMPLES_DIR]
# (default target/profiling/examples; build it with
# `cargo build --profile profiling --locked --example bench_proxy --example bench_upstream`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/target/profiling/examples}
oha=${OHA:-$root/target/bench-tools/bin/oha}
tmp=$(mktemp -d)
trap 'pkill -TERM -f "$dir/bench_proxy" 2>/dev/null || true; kill "${upid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$dir/bench_upstream" 127.0.0.1:0 >"$tmp/up" 2>&1 &
upid=$!
for _ in $(seq 100); do grep -q 127.0.0.1 "$tmp/up" && break; sleep 0.1; done
uaddr=$(grep -o '127.0.0.1:[0-9]*' "$tmp/up" | head -1)
strace -f -c -o "$tmp/strace" "$dir/bench_proxy" 127.0.0.1:0 127.0.0.1:0 "$uaddr" >"$tmp/px" 2>&1 &
spid=$!
for _ in $(seq 100); do grep -q 'proxy 127.0.0.1' "$tmp/px" && break; sleep 0.1; done
paddr=$(grep -o 'proxy 127.0.0.1:[0-9]*' "$tmp/px" | head -1 | cut -d' ' -f2)
"$oha" -n 50 -c 1 --no-tui "http://$paddr/1m" | grep -E 'Success rate'
pkill -TERM -f "$dir/bench_proxy"
wait "$spid" 2>/dev/null || true
grep -E 'syscall|recvfrom|writev|sendto|read$|write$' "$tmp/strace"
