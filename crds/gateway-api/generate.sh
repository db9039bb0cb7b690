#!/usr/bin/env bash
# Generates crds/src/gateway/<kind>.rs from the Gateway API CRDs beside this
# script with the pinned kopium (make tools). `--check` compares instead of
# writing and exits 1 on a difference (crds/tests/gateway_types.rs runs it).
set -euo pipefail
crds=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kopium=${KOPIUM:-$crds/../.tools/bin/kopium}
[[ -x $kopium ]] || { echo "generate.sh: $kopium missing: run make tools" >&2; exit 2; }
check=${1:-}
status=0
cd "$crds"
# kind file, API version (ReferenceGrant: v1beta1, its storage version and
# the one Gateway API's own tooling writes).
for pair in gatewayclasses:v1 gateways:v1 httproutes:v1 grpcroutes:v1 referencegrants:v1beta1; do
  kind=${pair%%:*} version=${pair##*:}
  out=src/gateway/$kind.rs
  generated=$("$kopium" -f "gateway-api/v1.6.1/gateway.networking.k8s.io_$kind.yaml" \
    --api-version "$version" --docs -D PartialEq | rustfmt --edition 2024)
  if [[ $check == --check ]]; then
    if ! diff -u "$out" <(printf '%s\n' "$generated") >/dev/null; then
      echo "generate.sh: $out differs from what kopium generates" >&2
      status=1
    fi
  else
    printf '%s\n' "$generated" >"$out"
  fi
done
exit $status
