#!/usr/bin/env bash
# A profile-guided (PGO) release build of `portico`, to measure what code
# layout is worth; it is not the shipped build (see docs/benchmarks.md,
# "The request's future halved").
#
#   1. an instrumented release build (-Cprofile-generate) into
#      <target>/pgo-gen;
#   2. training: that binary under bench/load.sh, one short round each of
#      plain HTTP/1.1 keep-alive, HTTPS keep-alive, HTTP/2 over TLS and 10k
#      virtual hosts (the binary writes its counts when it exits);
#   3. llvm-profdata (the major version of rustc's own LLVM, installed from
#      Debian's llvm-N package if missing) merges the counts into
#      <target>/pgo/portico.profdata;
#   4. the release build again with -Cprofile-use into <target>/pgo-use:
#      the binary is <target>/pgo-use/release/portico.
#
# Measure it as any other: BENCH_PORTICO=<target>/pgo-use/release/portico
# with bench/load.sh or bench/instructions.sh (BENCH_BUILD=0).
# Each build is a full one of every dependency (RUSTFLAGS change), about
# ten minutes on two cores. Needs what bench/load.sh needs (wrk, and the
# release examples it builds unless BENCH_BUILD=0).
#
# Knobs: BENCH_PGO_SECONDS (5) measured seconds per training run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
seconds=${BENCH_PGO_SECONDS:-5}
export CARGO_INCREMENTAL=0

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=$(command -v "llvm-profdata-$llvm" || true)
if [ -z "$profdata" ]; then
  echo "pgo: installing llvm-$llvm for llvm-profdata-$llvm" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "llvm-$llvm" >/dev/null
  profdata=$(command -v "llvm-profdata-$llvm")
fi

raw="$target/pgo/raw"
rm -rf "$raw"
mkdir -p "$raw"

echo "pgo: instrumented build" >&2
# Build scripts run instrumented too; they write where the flag says, the
# training run where LLVM_PROFILE_FILE says, so only its counts are used.
RUSTFLAGS="-Cprofile-generate=$target/pgo/build-scripts" \
  cargo build --release -q -p portico --target-dir "$target/pgo-gen"

for mode in "" "BENCH_TLS=keepalive" "BENCH_H2=on" "BENCH_ROUTES=hosts"; do
  echo "pgo: training ${mode:-plain keep-alive}" >&2
  env $mode LLVM_PROFILE_FILE="$raw/portico-%p.profraw" \
    BENCH_PORTICO="$target/pgo-gen/release/portico" BENCH_PROXIES=portico \
    BENCH_ROUNDS=1 BENCH_LATENCY_RATES= BENCH_SECONDS="$seconds" BENCH_WARMUP=1 \
    BENCH_OUT="$target/pgo/train.json" \
    bash bench/load.sh >/dev/null
done

"$profdata" merge -o "$target/pgo/portico.profdata" "$raw"/*.profraw

echo "pgo: optimised build" >&2
RUSTFLAGS="-Cprofile-use=$target/pgo/portico.profdata" \
  cargo build --release -q -p portico --target-dir "$target/pgo-use"
echo "pgo: $target/pgo-use/release/portico"
