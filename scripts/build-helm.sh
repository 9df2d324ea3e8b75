#!/usr/bin/env bash
# Builds helm (the Kubernetes package manager) from its Go module through Go's module proxy, as collector/build.sh
# builds the Collector, and prints the binary's path on the last line of stdout. The chart's tests
# (tests/deploy/test_helm.py) run `helm lint --strict` and `helm template` with it.
#
# The binary is cached under ${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/otel-mlmon}/helm, keyed by the pinned
# module hash and the Go version: a rerun on the same machine prints the path at once.
#
# The module's hash is pinned below and checked before the build, and its dependencies are pinned by helm's own
# go.sum, so Go's checksum database is not asked (it does not answer for every module here: collector/build.sh).
# The link flags are those of helm's Makefile: the version `helm version` prints, and the Kubernetes version that
# `helm template` and `helm lint` assume (1.N for client-go v0.N; without them helm assumes Kubernetes 1.20).
set -euo pipefail

module=helm.sh/helm/v3
version=v3.22.0
sum="h1:n1if5iQgHYsujPAcO5oonH/KiSNUmqmUF0iGVjSF3AU="

command -v go >/dev/null 2>&1 || {
  echo "build-helm.sh: Go is needed to build helm (https://go.dev/dl/, or Debian's golang-go >= 1.26)" >&2
  exit 1
}
cache="${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-mlmon}/helm"
export GOTOOLCHAIN=local GOSUMDB=off GOFLAGS="-buildvcs=false"

binary="$cache/helm-$version-$( (echo "$sum"; go version) | sha256sum | cut -c1-16)/helm"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

echo "build-helm.sh: building helm ($module $version); the first build takes a few minutes" >&2
started=$SECONDS
info="$(go mod download -json "$module@$version")"
got="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p')"
[ "$got" = "$sum" ] || { echo "build-helm.sh: $module@$version has hash $got, expected $sum" >&2; exit 1; }
gomod="$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
k8s_minor="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n1)"
[ -n "$k8s_minor" ] || { echo "build-helm.sh: cannot read the k8s.io/client-go version from $gomod" >&2; exit 1; }

ldflags="-s -w -X $module/internal/version.version=$version"
for package in pkg/lint/rules pkg/chartutil; do
  ldflags="$ldflags -X $module/$package.k8sVersionMajor=1 -X $module/$package.k8sVersionMinor=$k8s_minor"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/helm-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
GOBIN="$work" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" "$module/cmd/helm@$version" >&2
mkdir -p "$(dirname "$binary")"
mv "$work/helm" "$binary.tmp" && mv "$binary.tmp" "$binary"
echo "build-helm.sh: built $binary in $((SECONDS - started)) s" >&2
echo "$binary"
