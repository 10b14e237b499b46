#!/usr/bin/env bash
# Usage: measure-bandwidth.sh [--threads N] [--seconds S] [--block-mib M] [--best-effort]
#
# Measures this host's multi-threaded memory READ bandwidth — what llama.cpp's decode streams the
# weights with — and prints key=value lines on stdout (like probe-host.sh):
#   read_bandwidth_gbps=<GB/s, 1e9 bytes/s>   threads=<N>   block_bytes=<per thread>
#   seconds=<S>   numa_interleave=<yes|no>   tool=sysbench <version>
# With --best-effort a failure (no apt-get, no network, sysbench failing) prints
# read_bandwidth_gbps= (empty) and error=<why>, and exits 0: the deployment goes on without it.
#
#   --threads N     reader threads (default: the physical cores, which is what llama-server's -t uses)
#   --seconds S     how long sysbench reads, 1-120 (default 10); the whole measurement is killed
#                   after 2 × S + 60 s (buffer set-up included), the package install after 300 s
#   --block-mib M   MiB each thread reads over and over (a power of two; default 64, halved while the
#                   buffers would take more than a quarter of MemAvailable)
#
# The tool: sysbench (Debian/Ubuntu package `sysbench`), installed with apt-get when missing, so no
# compiler is needed on the host. `sysbench memory --memory-oper=read --memory-scope=local` has
# every thread read its own buffer sequentially, all threads at once, which is the access pattern
# of a decode step. The alternative package, mbw, is single-threaded and times memcpy (read + write),
# so it can neither fill the memory channels of a server nor measure reads alone.
# Known biases, against STREAM (the usual reference):
#   - read-only: no write-allocate and no write-back traffic, so it reads above STREAM Copy/Triad
#     (which also do not count write-allocate), typically by 5-20% — closer to decode, which reads;
#   - scalar 8-byte loads (ConcurrencyKit ck_pr_load_64, not vectorised): on a few-core machine
#     with high per-core bandwidth the threads may not saturate the channels, so it can read low
#     there; with all the cores of a server, the prefetchers keep the channels busy;
#   - sysbench fills every buffer from its main thread, so first touch puts all of them on one NUMA
#     node; on a multi-node host the run is wrapped in `numactl --interleave=all` (package numactl,
#     installed the same way), which spreads the pages over every node, as llama.cpp's memory-mapped
#     weights are spread. Without numactl the figure would be one node's, read from every socket;
#   - the 64 MiB per-thread buffers are larger than any core's share of the last-level cache, so the
#     reads come from RAM, not from cache.
#
# Exit codes: 0 measured (or --best-effort), 1 could not measure, 2 bad usage.
# Idempotent: it only reads memory; the one change it may make is installing the package(s) once.
set -euo pipefail

script_name=measure-bandwidth.sh
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-common.sh"

threads=""
seconds=10
block_mib=64
best_effort=false

need_uint_range() { # flag value min max
  if [[ "$2" =~ ^[0-9]{1,6}$ ]] && ((10#$2 >= $3 && 10#$2 <= $4)); then return 0; fi
  die_usage "$1 wants an integer $3-$4, got '$2'"
}

while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --threads) need_value "$1" $#; need_uint_range "$1" "$2" 1 65536; threads=$((10#$2)); shift 2 ;;
    --seconds) need_value "$1" $#; need_uint_range "$1" "$2" 1 120; seconds=$((10#$2)); shift 2 ;;
    --block-mib)
      need_value "$1" $#; need_uint_range "$1" "$2" 1 4096
      (( (10#$2 & (10#$2 - 1)) == 0 )) || die_usage "--block-mib wants a power of two, got '$2'"
      block_mib=$((10#$2)); shift 2 ;;
    --best-effort) best_effort=true; shift ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done

# A failure: with --best-effort an empty figure and the reason; otherwise exit 1.
fail() {
  if [[ "$best_effort" == true ]]; then
    log "no bandwidth measured: $*"
    printf 'read_bandwidth_gbps=\nerror=%s\n' "$(printf '%s' "$*" | tr '\n\r' '  ')"
    exit "$EXIT_OK"
  fi
  die "$*"
}

# Physical cores = distinct (socket, core) pairs, as probe-host.sh counts them.
physical_cores() {
  local count=0
  if have lscpu && lscpu -p=Core,Socket >/dev/null 2>&1; then
    count=$(lscpu -p=Core,Socket | grep -v '^#' | sort -u | wc -l)
  fi
  ((count > 0)) || count=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
  echo "$count"
}

numa_nodes=$( (find /sys/devices/system/node -maxdepth 1 -name 'node[0-9]*' 2>/dev/null || true) | wc -l)
((numa_nodes > 0)) || numa_nodes=1
[[ -n "$threads" ]] || threads=$(physical_cores)

packages=(sysbench)
if ((numa_nodes > 1)); then packages+=(numactl); fi
if ! have sysbench || { ((numa_nodes > 1)) && ! have numactl; }; then
  # Installing needs root; a bounded install, so a stuck mirror cannot hang the deployment.
  [[ $(id -u) -eq 0 ]] || fail "sysbench is not installed and installing it needs root"
  have apt-get || fail "sysbench is not installed and there is no apt-get (a Debian or Ubuntu host is expected)"
  export -f apt_install_missing log die have
  export script_name
  timeout --kill-after=10 300 bash -c 'apt_install_missing "$@" >/dev/null' _ "${packages[@]}" \
    || fail "could not install ${packages[*]} with apt-get"
  have sysbench || fail "sysbench is still missing after installing it"
fi

# Buffers: threads × block must stay well inside the memory that is free.
available_kib=$(awk '/^MemAvailable:/ {print $2; exit}' /proc/meminfo)
while ((block_mib > 1 && threads * block_mib * 1024 * 4 > ${available_kib:-0})); do block_mib=$((block_mib / 2)); done
((threads * block_mib * 1024 * 4 <= ${available_kib:-0})) || fail "$threads threads × $block_mib MiB is more than a quarter of the ${available_kib:-0} KiB available"

run=(sysbench memory --memory-oper=read --memory-access-mode=seq --memory-scope=local
  "--memory-block-size=${block_mib}M" --memory-total-size=0 "--threads=$threads" "--time=$seconds" run)
interleave=no
if ((numa_nodes > 1)) && have numactl; then run=(numactl --interleave=all "${run[@]}"); interleave=yes; fi

limit=$((seconds * 2 + 60))
if ! output=$(timeout --kill-after=10 "$limit" "${run[@]}" 2>&1); then
  fail "sysbench did not finish within ${limit}s or failed: $(printf '%s' "$output" | tail -n 3)"
fi
# "82176.00 MiB transferred (27361.59 MiB/sec)": MiB/s (2^20 bytes) → GB/s (1e9 bytes).
mib_per_second=$(printf '%s\n' "$output" | sed -n 's/.*MiB transferred (\([0-9.]*\) MiB\/sec).*/\1/p' | head -n1)
[[ "$mib_per_second" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "no MiB/sec figure in sysbench's output: $(printf '%s' "$output" | tail -n 3)"
gbps=$(awk -v rate="$mib_per_second" 'BEGIN { printf "%.2f", rate * 1048576 / 1e9 }')
awk -v value="$gbps" 'BEGIN { exit !(value > 0) }' || fail "sysbench reported $mib_per_second MiB/s"

printf 'read_bandwidth_gbps=%s\n' "$gbps"
printf 'threads=%s\nblock_bytes=%s\nseconds=%s\nnuma_interleave=%s\n' "$threads" "$((block_mib * 1048576))" "$seconds" "$interleave"
printf 'tool=%s\n' "$(sysbench --version 2>/dev/null | head -n1)"
