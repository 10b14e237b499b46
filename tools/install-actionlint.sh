#!/usr/bin/env bash
# Provides actionlint (the GitHub Actions workflow linter) for this repo, built from its Go module
# through the Go module proxy and cached outside the clone.
# Run with --help for usage. Logs go to stderr; the last line on stdout is the actionlint binary.
set -euo pipefail

# One pinned release: the workflow test expects no findings, and a newer actionlint may add checks.
version=v1.7.12
module=github.com/rhysd/actionlint/cmd/actionlint

usage() {
  cat <<EOF
Usage: tools/install-actionlint.sh [options]

Builds (once) actionlint $version with \`go install $module@$version\`
into <cache>/actionlint-$version/bin and prints the binary's path as the last line on stdout.
A second run finds it there and builds nothing (no network).

actionlint runs shellcheck on every \`run:\` block when shellcheck is on PATH.

Options:
  --cache-dir DIR     cache root (default: \${KIMI_KIT_CACHE:-\$HOME/.cache/kimi-kit})
  --force             rebuild even if the cached binary is there
  -h, --help          show this help

Environment:
  KIMI_KIT_CACHE      cache root (as --cache-dir)
  GOTOOLCHAIN         Go toolchain selection (default: local)
  GOPROXY             Go module proxy (default: go env GOPROXY)

Go modules and the build cache are shared with tools/install-pulumi.sh under <cache>/go.
EOF
}

log() { printf '[install-actionlint] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cache_root="${KIMI_KIT_CACHE:-$HOME/.cache/kimi-kit}"
force=0

while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --cache-dir) cache_root="${2:?--cache-dir needs a value}"; shift 2 ;;
    --force) force=1; shift ;;
    # Exit 2 for bad usage, as the kit's host scripts do (lib-common.sh die_usage).
    *) usage >&2; log "error: unknown argument: $1"; exit 2 ;;
  esac
done

mkdir -p "$cache_root"
cache_root=$(cd "$cache_root" && pwd)
bin="$cache_root/actionlint-$version/bin"
binary="$bin/actionlint"

# The binary reports the module version it was built from (Go's build info), so a half-written or
# foreign file in the cache is rebuilt rather than trusted.
if ((!force)) && [[ -x "$binary" ]] && [[ "$("$binary" -version 2>/dev/null | head -n 1)" == "$version" ]]; then
  log "actionlint $version already built"
  printf '%s\n' "$binary"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.24 is needed to build actionlint $version)"

export GOPATH="$cache_root/go"
export GOMODCACHE="$GOPATH/pkg/mod"
export GOCACHE="$cache_root/go/build-cache"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off

mkdir -p "$bin"
# Built into a temporary dir beside the final one and moved in place, so that an interrupted build
# never leaves a binary the check above would find.
staging=$(mktemp -d "$bin/.build.XXXXXX")
trap 'rm -rf -- "$staging"' EXIT
log_file="$cache_root/actionlint-$version/build.log"
start=$SECONDS
log "building actionlint $version from $module (log: $log_file)"
if ! GOBIN="$staging" go install -trimpath -ldflags "-s -w" "$module@$version" >"$log_file" 2>&1; then
  sed 's/^/    /' "$log_file" | tail -n 15 >&2
  die "could not build actionlint $version (if the log says the module needs a newer Go, rerun with GOTOOLCHAIN=go1.X.Y)"
fi
mv -f "$staging/actionlint" "$binary"
built=$("$binary" -version 2>/dev/null | head -n 1) || true
[[ "$built" == "$version" ]] || die "the built actionlint reports '${built:-nothing}', expected $version"
log "built actionlint $version in $((SECONDS - start))s"
printf '%s\n' "$binary"
