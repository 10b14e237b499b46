#!/usr/bin/env bash
# Usage: usage-exporter.sh apply  --name NAME --from FILE.js --listen ADDRESS:PORT --upstream ADDRESS:PORT
#                                 --metrics ADDRESS:PORT [--state-dir DIR] [--install-dir DIR]
#                                 [--run-dir DIR] [--no-systemd] [--ready-seconds N]
#        usage-exporter.sh remove --name NAME [--purge-state] [--state-dir DIR] [--install-dir DIR]
#                                 [--run-dir DIR] [--no-systemd]
#        usage-exporter.sh status --name NAME [--install-dir DIR] [--run-dir DIR] [--no-systemd]
#
# The per-team usage exporter in front of one llama-server replica: tools/usage-exporter.ts as the
# plain JavaScript file components/exec/host-programs.ts makes of it (FILE.js), run by node (Debian's
# nodejs package, installed when `node` is missing; Node 18 or later). It proxies --listen to the
# replica at --upstream, counting requests and prompt/completion tokens per team (the X-Kimi-Team
# header the gateway sets), and serves the month-to-date counters for Prometheus on
# http://--metrics/metrics. ADDRESS is an IPv4 address or [IPv6]; --upstream may be a host name.
#
# `apply` installs FILE.js as --install-dir/NAME/usage-exporter.js (default install dir
# /opt/kimi-kit/usage-exporter) and keeps the counters in --state-dir/NAME.json (default
# /var/lib/kimi-kit/usage), so a restart keeps the month's counts. It runs as
# kimi-kit-usage-NAME.service (Restart=always) when systemd is PID 1, else as a daemon with a pid
# file and log in --run-dir (default /run/kimi-kit). It restarts the exporter only when the file or
# its arguments changed: re-running the same `apply` changes nothing (same pid). It waits until the
# exporter answers /metrics (at most --ready-seconds, default 30).
#
# `remove` stops it and deletes the installed file; the state (this month's counts) stays unless
# --purge-state. `status` prints key=value lines (usage_exporter, upstream, metrics, pid, ready,
# state).
#
# stdout: key=value lines (usage_exporter=LISTEN, metrics=ADDRESS:PORT, pid, changed). Exit codes:
# 0 done, 1 failed, 2 bad usage (status: 3 when it is not running).
set -euo pipefail

export script_name=usage-exporter.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
need_action "$action" apply remove status
shift

# ADDRESS:PORT with ADDRESS an IPv4 address or a bracketed IPv6 one; a host name too when ALLOW_NAME.
need_address_port() { # flag value [allow-name]
  local address=${2%:*} port=${2##*:}
  [[ "$2" == *:* && -n "$address" ]] || die_usage "$1 wants ADDRESS:PORT, got '$2'"
  need_port "$1" "$port"
  is_ipv4 "$address" && return 0
  [[ "$address" =~ ^\[[0-9A-Fa-f:.]+\]$ ]] && return 0
  if [[ "${3:-}" == allow-name && "$address" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$ ]]; then return 0; fi
  die_usage "$1 wants an IPv4 address (or [IPv6]) with a port, got '$2'"
}

name="" from="" listen="" upstream="" metrics="" purge_state=no
state_dir=/var/lib/kimi-kit/usage install_root=/opt/kimi-kit/usage-exporter run_dir=/run/kimi-kit
use_systemd=auto ready_seconds=30
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --from) need_value "$1" $#; [[ -f "$2" && -r "$2" ]] || die_usage "--from: cannot read the file '$2'"; from=$2; shift 2 ;;
    --listen) need_value "$1" $#; need_address_port "$1" "$2"; listen=$2; shift 2 ;;
    --upstream) need_value "$1" $#; need_address_port "$1" "$2" allow-name; upstream=$2; shift 2 ;;
    --metrics) need_value "$1" $#; need_address_port "$1" "$2"; metrics=$2; shift 2 ;;
    --purge-state) purge_state=yes; shift ;;
    --state-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; state_dir=${2%/}; shift 2 ;;
    --install-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; install_root=${2%/}; shift 2 ;;
    *) service_common_flag "$@"; shift "$flag_args" ;;  # --name, --run-dir, --no-systemd, --ready-seconds
  esac
done
[[ -n "$name" ]] || die_usage "--name is required"
if [[ "$action" == apply ]]; then
  [[ -n "$from" ]] || die_usage "--from is required"
  [[ -n "$listen" ]] || die_usage "--listen is required"
  [[ -n "$upstream" ]] || die_usage "--upstream is required"
  [[ -n "$metrics" ]] || die_usage "--metrics is required"
  [[ "$listen" != "$metrics" ]] || die_usage "--listen and --metrics are two listeners: give them different ports"
  [[ "$listen" != "$upstream" ]] || die_usage "--listen and --upstream are the same address: the proxy would call itself"
else
  [[ -z "$from$listen$upstream$metrics" ]] || die_usage "--from, --listen, --upstream and --metrics are for apply"
fi
[[ "$action" == remove || "$purge_state" == no ]] || die_usage "--purge-state is for remove"

install_dir="$install_root/$name"
js="$install_dir/usage-exporter.js"
settings="$install_dir/settings"
applied_file="$install_dir/applied.sha256"
state_file="$state_dir/$name.json"
logfile="$run_dir/usage-$name.log"
lockfile="$run_dir/usage-$name.lock"
# The installed file's path is on the exporter's command line only. node exits at once on TERM (the
# state is written after every request); KILL after 10 s.
service_init "$use_systemd" "kimi-kit-usage-$name.service" "$run_dir/usage-$name.pid" "$js" 10 "$logfile"

# A value of the installed settings (what the last apply ran with).
setting() { # key
  awk -F= -v key="$1" '$1 == key { print substr($0, length(key) + 2); exit }' "$settings" 2>/dev/null || true
}

# Whether the exporter's metrics listener answers with its counters (not something else on the port).
metrics_ready() { # address:port
  local at=$1
  [[ "$at" == 0.0.0.0:* ]] && at="127.0.0.1:${at##*:}"
  [[ "$at" == "[::]:"* ]] && at="[::1]:${at##*:}"
  curl -gfsS --noproxy '*' --max-time 5 "http://$at/metrics" 2>/dev/null | grep -q '^# TYPE kimi_team_requests_total counter$'
}

case "$action" in
  status)
    [[ -f "$js" ]] || { echo "usage_exporter=absent"; exit "$EXIT_NOT_RUNNING"; }
    pid=$(service_pid || true)
    metrics=$(setting metrics)
    echo "usage_exporter=$(setting listen)"
    echo "upstream=$(setting upstream)"
    echo "metrics=$metrics"
    echo "pid=${pid:-none}"
    if [[ -n "$pid" && -n "$metrics" ]] && metrics_ready "$metrics"; then echo "ready=yes"; else echo "ready=no"; fi
    echo "state=$(setting state)"
    [[ -n "$pid" ]] || exit "$EXIT_NOT_RUNNING"
    exit "$EXIT_OK" ;;
  remove)
    need_root
    service_stop
    rm -rf -- "$install_dir"
    rm -f -- "$logfile" "$lockfile"
    if [[ "$install_root" == /opt/kimi-kit/usage-exporter ]]; then rmdir /opt/kimi-kit/usage-exporter /opt/kimi-kit 2>/dev/null || true; fi
    if [[ "$purge_state" == yes ]]; then
      rm -f -- "$state_file" "$state_file.tmp"
      if [[ "$state_dir" == /var/lib/kimi-kit/usage ]]; then rmdir /var/lib/kimi-kit/usage /var/lib/kimi-kit 2>/dev/null || true; fi
    fi
    echo "usage_exporter=removed"
    if [[ "$purge_state" == no && -f "$state_file" ]]; then echo "state=$state_file"; fi
    exit "$EXIT_OK" ;;
esac

# ------------------------------------------------------------------------------------------ apply
need_root
node_bin=$(kit_program_node --from "$from" kimi_team_requests_total "usage exporter")
have curl || apt_install_missing curl >/dev/null
have curl || die "curl is missing after installing the curl package"

umask 077
mkdir -p -- "$install_dir" "$state_dir" "$run_dir"
# One apply at a time per name (the lock's descriptor is closed for the exporter itself).
hold_run_lock "$lockfile"

printf '%s\n' "listen=$listen" "upstream=$upstream" "metrics=$metrics" "state=$state_file" | install_if_changed "$settings" 0644 || true

# What the process is started with; a change to these or to the file restarts it.
kit_program_service "kimi-kit usage exporter $name (per-team request and token counts for $upstream)" "$node_bin" "$from" "$js" "$applied_file" \
  -- --listen "$listen" --upstream "$upstream" --metrics "$metrics" --state "$state_file" <<SERVICE
RestartSec=2s
ProtectSystem=strict
ReadWritePaths=$state_dir
SERVICE
changed=$service_changed

# Until its /metrics answers with the counters; a dead daemon fails at once.
service_wait_ready "$ready_seconds" "the usage exporter" "the usage exporter $name did not answer http://$metrics/metrics within ${ready_seconds}s" \
  metrics_ready "$metrics"
printf '%s\n' "$kit_program_applied" | install_if_changed "$applied_file" 0644 || true

echo "usage_exporter=$listen"
echo "metrics=$metrics"
echo "pid=$(service_pid || echo none)"
echo "changed=$changed"
