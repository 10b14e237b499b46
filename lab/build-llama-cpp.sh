#!/usr/bin/env bash
# Usage: lab/build-llama-cpp.sh [--print-dir]
# Builds llama-server, llama-gguf-split, llama-quantize and test-llama-archs from the llama.cpp
# release source shipped inside the node-llama-cpp npm package, into a cache outside the clone
# keyed by that package's version, and prints the directory holding the binaries.
# Re-running is a no-op once the cache is complete. LLAMA_CPP_BIN_DIR skips the build entirely.
set -euo pipefail

NODE_LLAMA_CPP_VERSION="${NODE_LLAMA_CPP_VERSION:-3.22.1}"   # ships llama.cpp tag v0.5.0
TARGETS=(llama-server llama-gguf-split llama-quantize test-llama-archs ggml-rpc-server)
# The build's options, part of the cache key: a change rebuilds (incrementally) in the same tree.
BUILD_OPTIONS=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON -DGGML_RPC=ON)

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

if [[ -n "${LLAMA_CPP_BIN_DIR:-}" ]]; then
  for target in "${TARGETS[@]}"; do
    [[ -x "$LLAMA_CPP_BIN_DIR/$target" ]] || { echo "LLAMA_CPP_BIN_DIR=$LLAMA_CPP_BIN_DIR lacks $target" >&2; exit 1; }
  done
  echo "$LLAMA_CPP_BIN_DIR"; exit 0
fi

cache_root="${KIMI_KIT_CACHE:-$HOME/.cache/kimi-kit}"
work="$cache_root/llama.cpp-node-llama-cpp-$NODE_LLAMA_CPP_VERSION"
bin="$work/build/bin"
done_marker="$work/.complete-$(printf '%s\n' "${BUILD_OPTIONS[@]}" "${TARGETS[@]}" | sha256sum | cut -c1-12)"

if [[ -f "$done_marker" ]]; then echo "$bin"; exit 0; fi

mkdir -p "$work"
exec 9>"$work/.lock"
flock 9   # two test workers must not build the same tree at once
if [[ -f "$done_marker" ]]; then echo "$bin"; exit 0; fi

if [[ ! -d "$work/src/.git" ]]; then
  pack_dir="$work/pack"
  rm -rf "$pack_dir" "$work/src.partial"
  mkdir -p "$pack_dir"
  (cd "$pack_dir" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" >/dev/null)
  tar -xzf "$pack_dir"/node-llama-cpp-*.tgz -C "$pack_dir" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
  git clone -q "$pack_dir/package/llama/gitRelease.bundle" "$work/src.partial"
  cp "$pack_dir/package/llama/llama.cpp.info.json" "$work/llama.cpp.info.json"
  mv "$work/src.partial" "$work/src"
  rm -rf "$pack_dir"
fi

cmake -S "$work/src" -B "$work/build" "${BUILD_OPTIONS[@]}" >"$work/cmake-configure.log" 2>&1 \
  || { tail -n 40 "$work/cmake-configure.log" >&2; exit 1; }
cmake --build "$work/build" -j"$(nproc)" --target "${TARGETS[@]}" >"$work/cmake-build.log" 2>&1 \
  || { tail -n 40 "$work/cmake-build.log" >&2; exit 1; }
for target in "${TARGETS[@]}"; do [[ -x "$bin/$target" ]] || { echo "build produced no $bin/$target" >&2; exit 1; }; done
touch "$done_marker"
echo "$bin"
