#!/usr/bin/env bash
# Usage: token-limiter.sh apply  --name NAME --from FILE.js --prometheus URL --limits FILE --socket PATH
#                                --blocked-map FILE [--interval SECONDS] [--install-dir DIR] [--run-dir DIR]
#                                [--no-systemd] [--ready-seconds N]
#        token-limiter.sh remove --name NAME [--install-dir DIR] [--run-dir DIR] [--no-systemd]
#        token-limiter.sh status --name NAME [--install-dir DIR] [--run-dir DIR] [--no-systemd]
#
# The gateway's tokens-per-minute limits: tools/token-limiter.ts as the plain JavaScript file
# components/exec/host-programs.ts makes of it (FILE.js), run by node (Debian's nodejs, installed when
# `node` is missing). Every --interval seconds (default 10) it asks Prometheus at URL for each team's
# tokens over the last minute, reads the limits (`<team> <tokens per minute>` lines: the gateway's
# token-limits.map) and, through HAProxy's admin socket PATH, adds the teams at or over their limit
# to the blocked map FILE (the gateway answers them 429) and removes the others; it writes FILE too,
# so a reload of the gateway keeps the blocks.
#
# `apply` installs FILE.js as --install-dir/NAME/token-limiter.js (default /opt/kimi-kit/token-limiter)
# and runs one round first (`--once`: Prometheus and the socket must answer), then the loop as
# kimi-kit-token-limiter-NAME.service when systemd is PID 1, else as a daemon with a pid file and log
# in --run-dir (default /run/kimi-kit). It restarts the loop only when the file or its arguments
# changed: re-running the same `apply` changes nothing (same pid). `remove` stops it and deletes the
# installed file (the blocked map is the gateway's: it stays). `status` prints key=value lines.
#
# stdout: key=value lines (token_limiter=NAME, pid, changed). Exit codes: 0 done, 1 failed, 2 bad
# usage (status: 3 when it is not running).
set -euo pipefail

export script_name=token-limiter.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
need_action "$action" apply remove status
shift

need_abs_file() { # flag value
  [[ "$2" == /* && ! "$2" =~ [[:space:]] ]] || die_usage "$1 wants an absolute path without spaces, got '$2'"
}

name="" from="" prometheus="" limits="" socket="" blocked="" interval=10
install_root=/opt/kimi-kit/token-limiter run_dir=/run/kimi-kit use_systemd=auto ready_seconds=30
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --from) need_value "$1" $#; [[ -f "$2" && -r "$2" ]] || die_usage "--from: cannot read the file '$2'"; from=$2; shift 2 ;;
    --prometheus) need_value "$1" $#; [[ "$2" =~ ^https?://[^[:space:]/]+(/[^[:space:]]*)?$ ]] || die_usage "--prometheus wants a URL like http://127.0.0.1:9190, got '$2'"; prometheus=$2; shift 2 ;;
    --limits) need_value "$1" $#; need_abs_file "$1" "$2"; limits=$2; shift 2 ;;
    --socket) need_value "$1" $#; need_abs_file "$1" "$2"; socket=$2; shift 2 ;;
    --blocked-map) need_value "$1" $#; need_abs_file "$1" "$2"; blocked=$2; shift 2 ;;
    --interval) need_value "$1" $#; need_seconds "$1" "$2"; ((10#$2 >= 1)) || die_usage "--interval wants at least 1 second, got '$2'"; interval=$((10#$2)); shift 2 ;;
    --install-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; install_root=${2%/}; shift 2 ;;
    *) service_common_flag "$@"; shift "$flag_args" ;;  # --name, --run-dir, --no-systemd, --ready-seconds
  esac
done
[[ -n "$name" ]] || die_usage "--name is required"
if [[ "$action" == apply ]]; then
  for flag in from prometheus limits socket blocked; do
    [[ -n "${!flag}" ]] || die_usage "--${flag/blocked/blocked-map} is required"
  done
else
  [[ -z "$from$prometheus$limits$socket$blocked" ]] || die_usage "--from, --prometheus, --limits, --socket and --blocked-map are for apply"
fi

install_dir="$install_root/$name"
js="$install_dir/token-limiter.js"
applied_file="$install_dir/applied.sha256"
logfile="$run_dir/token-limiter-$name.log"
lockfile="$run_dir/token-limiter-$name.lock"
service_init "$use_systemd" "kimi-kit-token-limiter-$name.service" "$run_dir/token-limiter-$name.pid" "$js" 10 "$logfile"

case "$action" in
  status)
    [[ -f "$js" ]] || { echo "token_limiter=absent"; exit "$EXIT_NOT_RUNNING"; }
    pid=$(service_pid || true)
    echo "token_limiter=$name"
    echo "pid=${pid:-none}"
    [[ -n "$pid" ]] || exit "$EXIT_NOT_RUNNING"
    exit "$EXIT_OK" ;;
  remove)
    need_root
    service_stop
    rm -rf -- "$install_dir"
    rm -f -- "$logfile" "$lockfile"
    if [[ "$install_root" == /opt/kimi-kit/token-limiter ]]; then rmdir /opt/kimi-kit/token-limiter /opt/kimi-kit 2>/dev/null || true; fi
    echo "token_limiter=removed"
    exit "$EXIT_OK" ;;
esac

# ------------------------------------------------------------------------------------------ apply
need_root
node_bin=$(kit_program_node --from "$from" TOKENS_LAST_MINUTE_QUERY "token limiter")
[[ -r "$limits" ]] || die "--limits $limits is missing (the gateway's apply writes it)"
[[ -S "$socket" ]] || die "--socket $socket is not a socket (is the gateway running?)"

umask 077
mkdir -p -- "$install_dir" "$run_dir"
hold_run_lock "$lockfile"

args=(--prometheus "$prometheus" --limits "$limits" --socket "$socket" --blocked-map "$blocked" --interval "$interval")
# One round now: a Prometheus or socket that does not answer fails the apply, not a log line later.
"$node_bin" "$from" "${args[@]}" --once || die "the first round failed (see the line above): Prometheus at $prometheus and HAProxy's socket $socket must answer"

kit_program_service "kimi-kit token limiter $name (tokens per minute per team at the gateway)" "$node_bin" "$from" "$js" "$applied_file" -- "${args[@]}" <<SERVICE
RestartSec=5s
SERVICE
changed=$service_changed
# The loop runs: a daemon that died at once fails here, with its log.
limiter_running() { service_pid >/dev/null; }
service_wait_ready "$ready_seconds" "the token limiter" "the token limiter $name did not start" limiter_running
printf '%s\n' "$kit_program_applied" | install_if_changed "$applied_file" 0644 || true

echo "token_limiter=$name"
echo "pid=$(service_pid || echo none)"
echo "changed=$changed"
