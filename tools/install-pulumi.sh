#!/usr/bin/env bash
# Provides an offline Pulumi toolchain for this repo, built from Go modules through the Go module proxy.
# Run with --help for usage. Logs go to stderr; the last line on stdout is the bin dir to put on PATH.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/install-pulumi.sh [options]

Builds (once) and caches, outside the clone, an offline Pulumi toolchain matching the npm SDK
in node_modules, then prints the bin dir as the last line on stdout:

  pulumi                    the CLI, at the version of node_modules/@pulumi/pulumi
                            (or the newest the Go module proxy serves below it)
  pulumi-language-nodejs    the Node.js language host
  pulumi-resource-<name>    resource plugins for the @pulumi/<name> packages installed in
                            node_modules (command, docker), where their Go module is served

Plugins in that dir are found on PATH by the CLI, so nothing is downloaded at run time.
A plugin that cannot be built is reported on stderr (exit status stays 0) and not retried
until --force; a CLI or language host that cannot be built is an error.

Where the proxy does not serve the language host's own module at the CLI's version, the host
of github.com/pulumi/pulumi/sdk/v3@v3.68.0 (the last release that held it) is built instead
(override with KIMI_KIT_PULUMI_NODEJS_HOST_FALLBACK). That host ignores Pulumi.yaml runtime
options (TypeScript stays on) and proxies only the resource-monitor calls it knew, so
resource transforms and hooks are not available through it. Its RunPlugin (how the CLI starts a
Node.js policy pack, `--policy-pack DIR`) was a stub; the build replaces it with
tools/pulumi-language-nodejs-run-plugin.go, which runs the pack's @pulumi/pulumi/cmd/run-policy-pack.

A `pulumi` already on PATH (a prebuilt install) is used as is: it is linked into the bin dir
and only what it lacks is built.

Options:
  --cache-dir DIR     cache root (default: ${KIMI_KIT_CACHE:-$HOME/.cache/kimi-kit})
  --project-dir DIR   project whose node_modules sets the versions (default: the repo root)
  --version X.Y.Z     Pulumi version to provide (default: the npm SDK's version)
  --build-cli         build the CLI even if a `pulumi` is already on PATH
  --no-plugins        skip the resource plugins
  --force             rebuild everything in the versioned dir
  -h, --help          show this help

Environment:
  KIMI_KIT_CACHE      cache root (as --cache-dir)
  GOTOOLCHAIN         Go toolchain selection (default: local)
  GOPROXY             Go module proxy (default: go env GOPROXY)
  KIMI_KIT_PULUMI_NODEJS_HOST_FALLBACK   sdk/v3 version holding the fallback host (v3.68.0)

Layout: <cache>/pulumi-<version>/bin (binaries), <cache>/pulumi-<version>/src (throwaway build
modules), <cache>/pulumi-<version>/logs (build logs), and <cache>/go (GOPATH, GOMODCACHE and
GOCACHE, shared by all versions, about 4 GB, so CI can keep them).

Running programs offline (bin dir first on PATH, `node` >= 22 on PATH):
  PATH="<bin>:$PATH" PULUMI_SKIP_UPDATE_CHECK=true \
  PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true PULUMI_CONFIG_PASSPHRASE=... \
  PULUMI_BACKEND_URL=file://<existing state dir> pulumi up --yes
EOF
}

log() { printf '[install-pulumi] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project_dir=$(cd "$script_dir/.." && pwd)
cache_root="${KIMI_KIT_CACHE:-$HOME/.cache/kimi-kit}"
want_version=""
build_cli=0
with_plugins=1
force=0

while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --cache-dir) cache_root="${2:?--cache-dir needs a value}"; shift 2 ;;
    --project-dir) project_dir="${2:?--project-dir needs a value}"; shift 2 ;;
    --version) want_version="${2:?--version needs a value}"; shift 2 ;;
    --build-cli) build_cli=1; shift ;;
    --no-plugins) with_plugins=0; shift ;;
    --force) force=1; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# npm_version FILE: the top-level "version" of a package.json.
npm_version() {
  local file="$1"
  [[ -f "$file" ]] || return 1
  if command -v node >/dev/null; then
    node -e 'const fs = require("fs"); console.log(JSON.parse(fs.readFileSync(process.argv[1], "utf8")).version)' "$file"
  else
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$file" | head -n 1
  fi
}

if [[ -z "$want_version" ]]; then
  want_version=$(npm_version "$project_dir/node_modules/@pulumi/pulumi/package.json") ||
    die "node_modules/@pulumi/pulumi not found under $project_dir: run npm ci first, or pass --version"
fi
want_version="${want_version#v}"
[[ "$want_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a release version: $want_version"

command -v go >/dev/null || die "go is not on PATH (Go >= 1.26 is needed to build Pulumi)"

mkdir -p "$cache_root"
cache_root=$(cd "$cache_root" && pwd)
export GOPATH="$cache_root/go"
export GOMODCACHE="$GOPATH/pkg/mod"
export GOCACHE="$cache_root/go/build-cache"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off

# newest_version MODULE MAX: the newest release the proxy lists for MODULE below vMAX.
newest_version() {
  local module="$1" max="v$2"
  go list -m -versions "$module" | tr ' ' '\n' | sed 1d | grep -E '^v[0-9]+\.[0-9]+\.[0-9]+$' |
    { cat; echo "$max"; } | sort -V | awk -v max="$max" '$0 == max { exit } { last = $0 } END { print last }'
}

# Which version the proxy serves is looked up once per wanted version (and again with --force), so
# that warm runs need no network.
resolved_file="$cache_root/.pulumi-$want_version.resolved"
if ((force)); then rm -f "$resolved_file"; fi
if [[ -s "$resolved_file" ]]; then
  version=$(cat "$resolved_file")
else
  version="$want_version"
  if ! go list -m -versions github.com/pulumi/pulumi/pkg/v3 | tr ' ' '\n' | grep -qx "v$want_version"; then
    fallback=$(newest_version github.com/pulumi/pulumi/pkg/v3 "$want_version" || true)
    [[ -n "$fallback" ]] || die "the Go module proxy lists no github.com/pulumi/pulumi/pkg/v3 version <= v$want_version"
    version="${fallback#v}"
  fi
  printf '%s\n' "$version" >"$resolved_file"
fi
if [[ "$version" != "$want_version" ]]; then
  log "note: the Go module proxy does not serve github.com/pulumi/pulumi/pkg/v3@v$want_version;" \
    "using v$version, the newest it serves below that"
fi

vdir="$cache_root/pulumi-$version"
bin="$vdir/bin"
src="$vdir/src"
logs="$vdir/logs"
if ((force)); then rm -rf "$bin" "$src" "$logs"; fi
mkdir -p "$bin" "$src" "$logs"

# prepare_module DIR NAME: a throwaway module to build a main package from another module.
prepare_module() {
  local dir="$1" name="$2"
  mkdir -p "$dir"
  if [[ ! -f "$dir/go.mod" ]]; then
    printf 'module kimikit.local/build/%s\n\ngo 1.21\n' "$name" >"$dir/go.mod"
  fi
}

# copy_replaces DIR MODULE@VERSION: copies the versioned replace directives of a dependency's go.mod
# (the go command ignores replaces outside the main module) into the throwaway module in DIR.
copy_replaces() {
  local dir="$1" modver="$2" json gomod old new
  json=$(cd "$dir" && go mod download -json "$modver" 2>&1) || true
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$json")
  if [[ ! -f "$gomod" ]]; then
    printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p; /^go: /p' | sed 's/\\n/\n/g; s/\\t/  /g' >&2
    return 1
  fi
  awk '
    /^replace[[:space:]]*\($/ { block = 1; next }
    block && /^\)/ { block = 0; next }
    block { print; next }
    /^replace[[:space:]]/ { sub(/^replace[[:space:]]+/, ""); print }
  ' "$gomod" | while read -r old arrow new newver _; do
    [[ "$arrow" == "=>" && -n "${newver:-}" && "$new" != .* && "$new" != /* ]] || continue
    (cd "$dir" && go mod edit -replace="$old=$new@$newver")
  done
}

# go_build NAME DIR PACKAGE@VERSION LDFLAGS...: go get + go build into $bin/NAME, log in $logs/NAME.log.
go_build() {
  local name="$1" dir="$2" pkgver="$3" ldflags="$4" start=$SECONDS
  local pkg="${pkgver%@*}"
  log "building $name from $pkgver (log: $logs/$name.log)"
  {
    (cd "$dir" && go get "$pkgver") &&
      (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp" "$pkg") &&
      mv -f "$bin/$name.tmp" "$bin/$name"
  } >"$logs/$name.log" 2>&1 || {
    rm -f "$bin/$name.tmp"
    log "failed to build $name after $((SECONDS - start))s:"
    sed 's/^/    /' "$logs/$name.log" | tail -n 15 >&2
    return 1
  }
  log "built $name in $((SECONDS - start))s"
}

# stamp_ok NAME VERSION: whether $bin/NAME exists and was built for VERSION; stamp records that.
stamp_ok() { [[ -x "$bin/$1" && -f "$bin/.$1.version" && "$(cat "$bin/.$1.version")" == "$2" ]]; }
stamp() { printf '%s\n' "$2" >"$bin/.$1.version"; }

# --- 1. the CLI -----------------------------------------------------------------------------------
prebuilt=""
if ((!build_cli)) && path_pulumi=$(command -v pulumi); then
  path_pulumi=$(readlink -f "$path_pulumi")
  if [[ "$path_pulumi" != "$(readlink -f "$bin")"/* ]]; then prebuilt="$path_pulumi"; fi
fi

if [[ -n "$prebuilt" ]]; then
  log "using the prebuilt pulumi on PATH: $prebuilt"
  prebuilt_version=$("$prebuilt" version 2>/dev/null || true)
  [[ "$prebuilt_version" == "v$version" ]] ||
    log "warning: the prebuilt pulumi is ${prebuilt_version:-of unknown version}, the npm SDK wants v$version"
  ln -sfn "$prebuilt" "$bin/pulumi"
  stamp pulumi "prebuilt ${prebuilt_version:-?} at $prebuilt"
  if [[ -x "$(dirname "$prebuilt")/pulumi-language-nodejs" ]]; then
    ln -sfn "$(dirname "$prebuilt")/pulumi-language-nodejs" "$bin/pulumi-language-nodejs"
    stamp pulumi-language-nodejs prebuilt
  fi
elif stamp_ok pulumi "$version"; then
  log "pulumi v$version already built"
else
  rm -f "$bin/pulumi"
  prepare_module "$src/pulumi" pulumi
  copy_replaces "$src/pulumi" "github.com/pulumi/pulumi/pkg/v3@v$version" ||
    die "cannot fetch github.com/pulumi/pulumi/pkg/v3@v$version from the Go module proxy"
  copy_replaces "$src/pulumi" "github.com/pulumi/pulumi/sdk/v3@v$version" ||
    die "cannot fetch github.com/pulumi/pulumi/sdk/v3@v$version from the Go module proxy"
  (cd "$src/pulumi" && go get "github.com/pulumi/pulumi/sdk/v3@v$version") >"$logs/pulumi-sdk.log" 2>&1 ||
    die "go get github.com/pulumi/pulumi/sdk/v3@v$version failed: $(tail -n 5 "$logs/pulumi-sdk.log")"
  go_build pulumi "$src/pulumi" "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@v$version" \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" ||
    die "could not build the Pulumi CLI (if the log says the module needs a newer Go, rerun with GOTOOLCHAIN=go1.X.Y)"
  stamp pulumi "$version"
fi

# --- 2. the Node.js language host -----------------------------------------------------------------
# Since v3.69 the host is its own module (sdk/nodejs/cmd/pulumi-language-nodejs/v3); up to v3.68.0 it
# was a package of sdk/v3. Try the former at the CLI's version, then the newest sdk/v3 holding it.
lang_fallback="${KIMI_KIT_PULUMI_NODEJS_HOST_FALLBACK:-v3.68.0}"
fallback_stamp="$version (sdk/v3@$lang_fallback)"
# The fallback host gets the kit's RunPlugin (policy packs). Its usual stamp stays as it was (a
# checkout without the overlay then keeps the patched host instead of rebuilding it); a second
# stamp holds the overlay's hash and the binary's, so a changed overlay, or a host rebuilt
# without it, is built again.
run_plugin_go="$script_dir/pulumi-language-nodejs-run-plugin.go"
run_plugin_stamp="$bin/.pulumi-language-nodejs.run-plugin"
run_plugin_sha=$(sha256sum "$run_plugin_go" | cut -c1-12)
run_plugin_ok() {
  [[ -f "$run_plugin_stamp" && -x "$bin/pulumi-language-nodejs" ]] &&
    [[ "$(cat "$run_plugin_stamp")" == "$run_plugin_sha $(sha256sum "$bin/pulumi-language-nodejs" | cut -d' ' -f1)" ]]
}

# build_patched_nodejs_host DIR: the host package of sdk/v3@$lang_fallback copied into the throwaway
# module in DIR, its RunPlugin stub renamed away and the kit's overlay added, built into $bin.
build_patched_nodejs_host() {
  local dir="$1" start=$SECONDS sdk_dir pkg="$1/host"
  {
    (cd "$dir" && go get "github.com/pulumi/pulumi/sdk/v3@$lang_fallback") &&
      sdk_dir=$(cd "$dir" && go list -m -f '{{.Dir}}' "github.com/pulumi/pulumi/sdk/v3") &&
      rm -rf "$pkg" && mkdir -p "$pkg" &&
      find "$sdk_dir/nodejs/cmd/pulumi-language-nodejs" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$pkg/" \; &&
      chmod -R u+w "$pkg" &&
      sed -i 's/^func (host \*nodeLanguageHost) RunPlugin(/func (host *nodeLanguageHost) runPluginUnsupported(/' "$pkg/main.go" &&
      grep -q '^func (host \*nodeLanguageHost) runPluginUnsupported(' "$pkg/main.go" &&
      cp "$run_plugin_go" "$pkg/run_plugin_kimi_kit.go" &&
      (cd "$dir" && go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$lang_fallback" \
        -o "$bin/pulumi-language-nodejs.tmp" ./host) &&
      mv -f "$bin/pulumi-language-nodejs.tmp" "$bin/pulumi-language-nodejs"
  } >"$logs/pulumi-language-nodejs.log" 2>&1 || {
    rm -f "$bin/pulumi-language-nodejs.tmp"
    log "failed to build pulumi-language-nodejs (sdk/v3@$lang_fallback + RunPlugin) after $((SECONDS - start))s:"
    sed 's/^/    /' "$logs/pulumi-language-nodejs.log" | tail -n 15 >&2
    return 1
  }
  log "built pulumi-language-nodejs (sdk/v3@$lang_fallback + RunPlugin) in $((SECONDS - start))s"
}

if [[ -n "$prebuilt" ]] && stamp_ok pulumi-language-nodejs prebuilt ||
  stamp_ok pulumi-language-nodejs "$version" || { stamp_ok pulumi-language-nodejs "$fallback_stamp" && run_plugin_ok; }; then
  log "pulumi-language-nodejs already built ($(cat "$bin/.pulumi-language-nodejs.version"))"
else
  rm -f "$bin/pulumi-language-nodejs"
  lang_mod=github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3
  prepare_module "$src/pulumi-language-nodejs" pulumi-language-nodejs
  if copy_replaces "$src/pulumi-language-nodejs" "$lang_mod@v$version" 2>"$logs/pulumi-language-nodejs-module.log" &&
    go_build pulumi-language-nodejs "$src/pulumi-language-nodejs" "$lang_mod@v$version" \
      "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version"; then
    stamp pulumi-language-nodejs "$version"
  else
    log "could not get $lang_mod@v$version:"
    sed 's/^/    /' "$logs/pulumi-language-nodejs-module.log" >&2
    log "falling back to the host in github.com/pulumi/pulumi/sdk/v3@$lang_fallback"
    prepare_module "$src/pulumi-language-nodejs-sdk" pulumi-language-nodejs-sdk
    copy_replaces "$src/pulumi-language-nodejs-sdk" "github.com/pulumi/pulumi/sdk/v3@$lang_fallback" ||
      die "cannot fetch github.com/pulumi/pulumi/sdk/v3@$lang_fallback"
    build_patched_nodejs_host "$src/pulumi-language-nodejs-sdk" || die "could not build pulumi-language-nodejs"
    stamp pulumi-language-nodejs "$fallback_stamp"
    printf '%s %s\n' "$run_plugin_sha" "$(sha256sum "$bin/pulumi-language-nodejs" | cut -d' ' -f1)" >"$run_plugin_stamp"
  fi
fi

# The dynamic-provider plugin that Pulumi's own installs bundle beside the CLI: a shell script from the
# SDK module (the npm package ships the same file).
dyn=pulumi-resource-pulumi-nodejs
if [[ ! -x "$bin/$dyn" || ! -f "$bin/.$dyn.version" ]]; then
  sdk_dir=$(cd "$src" && go mod download -json "github.com/pulumi/pulumi/sdk/v3@v$version" 2>/dev/null |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p') || true
  for candidate in "${sdk_dir:-/nonexistent}/nodejs/dist/$dyn" "$project_dir/node_modules/@pulumi/pulumi/$dyn"; do
    if [[ -f "$candidate" ]]; then
      cp "$candidate" "$bin/$dyn.tmp" && chmod 0755 "$bin/$dyn.tmp" && mv -f "$bin/$dyn.tmp" "$bin/$dyn"
      log "installed $dyn (dynamic providers) from $candidate"
      stamp "$dyn" "$version"
      break
    fi
  done
  [[ -x "$bin/$dyn" ]] || log "warning: $dyn not found; pulumi.dynamic resources will not work"
fi

# --- 3. resource plugins --------------------------------------------------------------------------
# name, Go module (major-version suffix added below), main package inside it, version variable.
plugins=(
  "command|github.com/pulumi/pulumi-command/provider|cmd/pulumi-resource-command|pkg/version.Version"
  "docker|github.com/pulumi/pulumi-docker/provider|cmd/pulumi-resource-docker|pkg/version.Version"
)
failed_plugins=()
if ((with_plugins)); then
  for entry in "${plugins[@]}"; do
    IFS='|' read -r name module main versionvar <<<"$entry"
    pkg_json="$project_dir/node_modules/@pulumi/$name/package.json"
    if [[ ! -f "$pkg_json" ]]; then
      log "skipping pulumi-resource-$name: @pulumi/$name is not installed"
      continue
    fi
    pversion=$(npm_version "$pkg_json")
    major="${pversion%%.*}"
    if ((major >= 2)); then module="$module/v$major"; fi
    if stamp_ok "pulumi-resource-$name" "$pversion"; then
      log "pulumi-resource-$name v$pversion already built"
      continue
    fi
    if [[ -f "$logs/pulumi-resource-$name.failed" && "$(cat "$logs/pulumi-resource-$name.failed")" == "$pversion" ]]; then
      log "pulumi-resource-$name v$pversion failed before (see $logs/pulumi-resource-$name.log); --force retries"
      failed_plugins+=("$name")
      continue
    fi
    rm -f "$bin/pulumi-resource-$name"
    dir="$src/pulumi-resource-$name"
    prepare_module "$dir" "pulumi-resource-$name"
    if copy_replaces "$dir" "$module@v$pversion" 2>"$logs/pulumi-resource-$name-module.log" &&
      go_build "pulumi-resource-$name" "$dir" "$module/$main@v$pversion" "-X $module/$versionvar=$pversion"; then
      stamp "pulumi-resource-$name" "$pversion"
    else
      [[ -s "$logs/pulumi-resource-$name.log" ]] || cp "$logs/pulumi-resource-$name-module.log" "$logs/pulumi-resource-$name.log"
      log "could not build pulumi-resource-$name v$pversion from $module (see $logs/pulumi-resource-$name.log):"
      sed '/^$/d; s/^/    /' "$logs/pulumi-resource-$name.log" | tail -n 4 >&2
      printf '%s\n' "$pversion" >"$logs/pulumi-resource-$name.failed"
      failed_plugins+=("$name")
    fi
  done
fi

log "bin dir: $bin"
for f in "$bin"/*; do
  [[ -e "$f" ]] || continue
  stamp_file="$bin/.$(basename "$f").version"
  log "  $(basename "$f") $([[ -f "$stamp_file" ]] && cat "$stamp_file")"
done
if ((${#failed_plugins[@]} > 0)); then
  log "missing plugins (programs using them cannot run offline): ${failed_plugins[*]}"
fi
printf '%s\n' "$bin"
