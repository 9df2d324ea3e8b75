#!/usr/bin/env bash
# Builds the otel-mlmon Collector with the official OpenTelemetry Collector builder (ocb) and Go's module proxy,
# and prints the binary's path on the last line of stdout.
#
#   collector/build.sh            # collector/builder-config.yaml       -> otelcol-mlmon
#   collector/build.sh --cloud    # collector/builder-config-cloud.yaml -> otelcol-mlmon-cloud
#   collector/build.sh --jaeger   # Jaeger v2 (the demo stack's trace backend), from its Go module
#
# The build is cached under ${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/otel-mlmon}/collector, keyed by the
# manifest, its pinned go.sum and the Go version: a rerun on the same machine prints the path at once.
#
# Why not plain `builder --config=...`: the builder runs `go mod tidy`, which also resolves the *test*
# dependencies of every component, and the module proxy here does not serve all of those (403). `go build
# -mod=mod` only needs the modules that are compiled. Checksums: the proxy's checksum database does not answer for
# every module either (404), so GOSUMDB is off and the committed go.sum (builder-config*.sum) pins every module
# instead; a build that needed a module missing from it says so.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/builder-config.yaml"
jaeger=""
case "${1:-}" in
  "") ;;
  --cloud) manifest="$here/builder-config-cloud.yaml" ;;
  --jaeger) jaeger=1 ;;
  *) echo "usage: $0 [--cloud | --jaeger]" >&2; exit 2 ;;
esac
sums="${manifest%.yaml}.sum"

command -v go >/dev/null 2>&1 || {
  echo "build.sh: Go is needed to build the Collector (https://go.dev/dl/, or Debian's golang-go >= 1.25)" >&2
  exit 1
}
cache="${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-mlmon}/collector"
export GOTOOLCHAIN=local GOSUMDB=off GOFLAGS="-mod=mod -buildvcs=false"

if [ -n "$jaeger" ]; then
  # Jaeger v2.13.0 is the module github.com/jaegertracing/jaeger v1.76.0. `go install pkg@version` refuses it (its
  # go.mod has replace directives), so the module source is downloaded, checked against the pinned hash, and built
  # in place; its own go.sum pins its dependencies.
  module=github.com/jaegertracing/jaeger version=v1.76.0 sum="h1:sWCOOF1dr+NL0PLil7mFo3BqqQL8k4WiM7aguFbc14g="
  binary="$cache/jaeger-$version-$( (echo "$sum"; go version) | sha256sum | cut -c1-16)/jaeger"
  if [ -x "$binary" ]; then echo "$binary"; exit 0; fi
  echo "build.sh: building Jaeger ($module $version); the first build takes a few minutes" >&2
  started=$SECONDS
  info="$(go mod download -json "$module@$version")"
  got="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p')"
  [ "$got" = "$sum" ] || { echo "build.sh: $module@$version has hash $got, expected $sum" >&2; exit 1; }
  work="$(mktemp -d "${TMPDIR:-/tmp}/jaeger-build.XXXXXX")"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  cp -r "$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')" "$work/src"
  chmod -R u+w "$work/src"
  mkdir -p "$(dirname "$binary")"
  (cd "$work/src" && go build -trimpath -ldflags="-s -w" -o "$binary.tmp" ./cmd/jaeger >&2)
  mv "$binary.tmp" "$binary"
  echo "build.sh: built $binary in $((SECONDS - started)) s" >&2
  echo "$binary"
  exit 0
fi

name="$(sed -n 's/^  name: *//p' "$manifest" | head -n1)"
version="$(sed -n 's/^ *- gomod: go.opentelemetry.io\/collector\/receiver\/otlpreceiver \(v[0-9.]*\).*/\1/p' "$manifest")"
[ -n "$name" ] && [ -n "$version" ] || { echo "build.sh: cannot read dist.name or the core version from $manifest" >&2; exit 1; }

key="$( (cat "$manifest"; cat "$sums" 2>/dev/null; go version) | sha256sum | cut -c1-16)"
binary="$cache/$name-$key/$name"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

builder="$cache/bin/builder-$version"
if [ ! -x "$builder" ]; then
  echo "build.sh: installing the Collector builder $version" >&2
  mkdir -p "$cache/bin"
  GOBIN="$cache/bin" go install "go.opentelemetry.io/collector/cmd/builder@$version" >&2
  mv "$cache/bin/builder" "$builder"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/otelcol-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "build.sh: building $name ($version) from $manifest; the first build takes a few minutes" >&2
started=$SECONDS
(cd "$work" && "$builder" --config="$manifest" --skip-compilation --skip-get-modules >&2)
src="$work/$name"
[ -f "$sums" ] && cp "$sums" "$src/go.sum"
(cd "$src" && go build -trimpath -ldflags="-s -w" -o "$name" . >&2)
mkdir -p "$(dirname "$binary")"
if ! cmp -s "$sums" "$src/go.sum" 2>/dev/null; then
  cp "$src/go.sum" "$(dirname "$binary")/go.sum"
  echo "build.sh: warning: the build used modules not pinned in $(basename "$sums");" \
       "review $(dirname "$binary")/go.sum and commit it as collector/$(basename "$sums")" >&2
fi
mv "$src/$name" "$binary.tmp" && mv "$binary.tmp" "$binary"
echo "build.sh: built $binary in $((SECONDS - started)) s" >&2
echo "$binary"
