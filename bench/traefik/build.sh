#!/usr/bin/env bash
# Builds the pinned Traefik for bench/load.sh from its Go module, once:
# the module as the Go module proxy serves it (checked against go.sum by
# the go command), copied out of the module cache and built there, so its
# own go.mod's replace directives (a local path among them) apply. The web
# UI is not in the module (its static folder holds a placeholder), so the
# binary serves no dashboard; the proxy is whole. Cached: rebuilt only when
# the pinned version changes.
#
# usage: bench/traefik/build.sh OUT_DIR   (prints the binary's path)
set -euo pipefail
VERSION=v3.6.12
out=${1:?usage: build.sh OUT_DIR}
bin=$out/traefik
if [[ -x $bin && "$(cat "$out/.traefik.version" 2>/dev/null)" == "$VERSION" ]]; then
  echo "$bin"
  exit 0
fi
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
mkdir -p "$out"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod "$GO" mod download -json "github.com/traefik/traefik/v3@$VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
start=$SECONDS
echo "traefik: building $VERSION (once; several minutes)" >&2
(cd "$work/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath \
  -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$VERSION" \
  -o "$bin" ./cmd/traefik)
echo "$VERSION" >"$out/.traefik.version"
echo "traefik: built in $((SECONDS - start)) s" >&2
echo "$bin"
