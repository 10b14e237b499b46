#!/usr/bin/env bash
# Usage: tune-host.sh [--numa-nodes N] [--drop-caches] [--root DIR] [--dry-run]
#
# Kernel settings for llama.cpp on a multi-socket host.
#   --numa-nodes N   NUMA nodes llama-server will use (default: counted from
#                    ROOT/sys/devices/system/node). With N > 1 it sets kernel.numa_balancing=0
#                    now (ROOT/proc/sys/kernel/numa_balancing) and across reboots
#                    (ROOT/etc/sysctl.d/90-kimi-kit.conf): llama.cpp warns that the kernel's
#                    automatic NUMA balancing hurts its --numa modes by migrating pages it placed.
#   --drop-caches    sync, then write 3 to ROOT/proc/sys/vm/drop_caches: llama.cpp recommends
#                    dropping the page cache before the first start with --numa, so that the
#                    model's pages are placed afresh instead of where an earlier run left them.
#                    This one is an action, not a setting: it runs every time it is asked for.
#   --root DIR       apply under DIR instead of / (default /; for tests on a fake tree).
#   --dry-run        say what would change, change nothing.
#
# Every line says "changed", "unchanged" or "would change"; the last line is the key=value
# summary `tune_result changed=<n> unchanged=<n>`.
# Exit codes: 0 done, 1 a setting could not be applied, 2 bad usage.
set -euo pipefail

export script_name=tune-host.sh
log_name=tune-host # the prefix of its say and die lines
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

numa_nodes="" drop_caches=no root=/ dry_run=no
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --numa-nodes)
      (($# >= 2)) || die_usage "--numa-nodes needs a value"
      if ! [[ "$2" =~ ^[0-9]+$ ]] || (($2 < 1)); then die_usage "--numa-nodes wants an integer >= 1, got '$2'"; fi
      numa_nodes=$2; shift 2 ;;
    --drop-caches) drop_caches=yes; shift ;;
    --root)
      (($# >= 2)) || die_usage "--root needs a directory"
      [[ -d "$2" ]] || die_usage "--root '$2' is not a directory"
      root=$2; shift 2 ;;
    --dry-run) dry_run=yes; shift ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
root=${root%/}   # "/" becomes "", so "$root/proc/..." is "/proc/..."

changed=0 unchanged=0

if [[ -z "$numa_nodes" ]]; then
  numa_nodes=$( (find "$root/sys/devices/system/node" -maxdepth 1 -name 'node[0-9]*' 2>/dev/null || true) | wc -l)
  ((numa_nodes > 0)) || numa_nodes=1
  say "NUMA nodes: $numa_nodes (counted in ${root:-}/sys/devices/system/node)"
fi

if ((numa_nodes > 1)); then
  live="$root/proc/sys/kernel/numa_balancing"
  if [[ ! -e "$live" ]]; then
    say "kernel.numa_balancing: $live does not exist (kernel built without automatic NUMA balancing); unchanged"
    unchanged=$((unchanged + 1))
  else
    current=$(tr -d '[:space:]' <"$live")
    if [[ "$current" == 0 ]]; then
      say "kernel.numa_balancing: already 0 ($live); unchanged"
      unchanged=$((unchanged + 1))
    elif [[ "$dry_run" == yes ]]; then
      say "kernel.numa_balancing: is $current, want 0; would change $live"
      changed=$((changed + 1))
    else
      echo 0 >"$live" 2>/dev/null || die "kernel.numa_balancing: could not write 0 to $live (is $current; need root)"
      now=$(tr -d '[:space:]' <"$live")
      [[ "$now" == 0 ]] || die "kernel.numa_balancing: wrote 0 to $live but it reads back '$now'"
      say "kernel.numa_balancing: was $current, now 0 ($live); changed"
      changed=$((changed + 1))
    fi
  fi

  conf="$root/etc/sysctl.d/90-kimi-kit.conf"
  want_conf="# Written by kimi-kit tune-host.sh: llama.cpp's --numa modes place memory per node;
# the kernel's automatic NUMA balancing would migrate those pages again.
kernel.numa_balancing = 0"
  if [[ -f "$conf" && "$(cat "$conf")" == "$want_conf" ]]; then
    say "persistent setting: $conf already says kernel.numa_balancing = 0; unchanged"
    unchanged=$((unchanged + 1))
  elif [[ "$dry_run" == yes ]]; then
    say "persistent setting: would write kernel.numa_balancing = 0 to $conf"
    changed=$((changed + 1))
  else
    mkdir -p "$(dirname "$conf")" || die "could not create $(dirname "$conf")"
    tmp="$conf.tmp.$$"
    printf '%s\n' "$want_conf" >"$tmp" || die "could not write $tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$conf"
    say "persistent setting: wrote kernel.numa_balancing = 0 to $conf; changed"
    changed=$((changed + 1))
  fi
else
  say "kernel.numa_balancing: $numa_nodes NUMA node(s), so balancing has nothing to migrate between; unchanged"
  unchanged=$((unchanged + 1))
fi

if [[ "$drop_caches" == yes ]]; then
  caches="$root/proc/sys/vm/drop_caches"
  if [[ "$dry_run" == yes ]]; then
    say "page cache: would sync and write 3 to $caches"
  else
    [[ -e "$caches" ]] || die "page cache: $caches does not exist (expected the kernel's drop_caches file)"
    sync
    echo 3 >"$caches" 2>/dev/null || die "page cache: could not write 3 to $caches (need root)"
    say "page cache: synced and dropped (wrote 3 to $caches)"
  fi
fi

echo "tune_result changed=$changed unchanged=$unchanged dry_run=$dry_run"
