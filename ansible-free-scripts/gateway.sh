#!/usr/bin/env bash
# Usage: gateway.sh apply  --name NAME --from DIR [--pem FILE] [--backend-key-file FILE]
#                          [--config-dir DIR] [--run-dir DIR] [--no-systemd] [--ready-seconds N]
#        gateway.sh revoke --name NAME --team TEAM [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#        gateway.sh remove --name NAME [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#        gateway.sh status --name NAME [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#
# The gateway in front of the llama-server replicas: its own HAProxy (the Debian package) with the
# configuration planner/gateway.ts writes. DIR holds haproxy.cfg, teams.map (sha256 of each team's
# key, then the team) and limits.map (team, then requests per minute); `apply` installs them in
# --config-dir (default /etc/kimi-kit/gateway/NAME; files 0600), with --pem (the certificate chain
# and key, HAProxy's crt layout) as server.pem and --backend-key-file (the replicas' own API key,
# as llama-server's --api-key-file reads it) as backend-key.map; either may be left out on a later
# apply to keep the installed one. The configuration is checked with `haproxy -c` before it is
# used; a refused one leaves the previous files in place.
#
# Teams live only in the maps: `apply` with another team list, or `revoke --team TEAM`, reloads
# HAProxy hitlessly (a new process takes over the listener; the old one finishes its requests),
# so a removed team's key is refused at once and the replicas are never touched. A reload resets
# the per-team request-rate counters.
#
# /etc/haproxy/haproxy.cfg and the distribution's haproxy service are never touched: HAProxy runs
# as kimi-kit-gateway-NAME.service when systemd is PID 1, else as a daemon with a pid file in
# --run-dir (default /run/kimi-kit). Re-running `apply` with the same files changes nothing.
# `remove` stops it and deletes --config-dir. `status` prints key=value lines.
#
# stdout: key=value lines (gateway, pid, teams, changed). Exit codes: 0 done, 1 failed, 2 bad usage
# (status: 3 when the gateway is not running).
set -euo pipefail

export script_name=gateway.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
case "$action" in
  -h|--help) usage; exit 0 ;;
  apply|revoke|remove|status) shift ;;
  *) die_usage "the first argument must be apply, revoke, remove or status" ;;
esac

name="" from="" pem_in="" backend_key_in="" team="" config_dir="" run_dir=/run/kimi-kit
use_systemd=auto ready_seconds=30
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) need_value "$1" $#; need_name "$1" "$2"; name=$2; shift 2 ;;
    --from) need_value "$1" $#; [[ -d "$2" ]] || die_usage "--from wants a folder, got '$2'"; from=$2; shift 2 ;;
    --pem) need_value "$1" $#; [[ -r "$2" ]] || die_usage "--pem: cannot read '$2'"; pem_in=$2; shift 2 ;;
    --backend-key-file) need_value "$1" $#; [[ -r "$2" ]] || die_usage "--backend-key-file: cannot read '$2'"; backend_key_in=$2; shift 2 ;;
    --team) need_value "$1" $#; need_name "$1" "$2"; team=$2; shift 2 ;;
    --config-dir) need_value "$1" $#; [[ "$2" == /?* ]] || die_usage "--config-dir wants an absolute path"; config_dir=$2; shift 2 ;;
    --run-dir) need_value "$1" $#; [[ "$2" == /?* ]] || die_usage "--run-dir wants an absolute path"; run_dir=$2; shift 2 ;;
    --no-systemd) use_systemd=no; shift ;;
    --ready-seconds) need_value "$1" $#; [[ "$2" =~ ^[0-9]{1,4}$ ]] || die_usage "--ready-seconds wants seconds"; ready_seconds=$2; shift 2 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[[ -n "$name" ]] || die_usage "--name is required"
config_dir=${config_dir:-/etc/kimi-kit/gateway/$name}
cfg="$config_dir/haproxy.cfg"
teams_map="$config_dir/teams.map"
limits_map="$config_dir/limits.map"
pidfile="$run_dir/gateway-$name.pid"
unit="kimi-kit-gateway-$name.service"
unit_file="/etc/systemd/system/$unit"
if [[ "$use_systemd" == auto ]]; then
  if systemd_is_pid1; then use_systemd=yes; else use_systemd=no; fi
fi

running_pid() {
  if [[ "$use_systemd" == yes ]]; then
    local pid
    pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null || true)
    [[ "$pid" =~ ^[1-9][0-9]*$ ]] && echo "$pid" && return 0
    return 1
  fi
  live_pid_from_file "$pidfile" "$cfg"
}

# The public listener: the first `bind` line with ssl in the configuration.
listen_of() { awk '$1 == "bind" && / ssl / { print $2; exit }' "$cfg"; }

stop_haproxy() { haproxy_stop "$use_systemd" "$unit" "$unit_file" "$pidfile" "$cfg"; }

# Starts HAProxy, or reloads it when what it reads changed (configuration, maps, certificate, key).
start_or_reload() {
  local applied previous changed=no
  applied=$(cat "$cfg" "$teams_map" "$limits_map" "$config_dir/backend-key.map" "$config_dir/server.pem" | sha256sum | cut -d' ' -f1)
  previous=$(cat "$config_dir/applied.sha256" 2>/dev/null || true)
  changed=$(haproxy_start_or_reload "kimi-kit gateway $name (HAProxy: TLS, team keys, rate limits, replicas)" "$use_systemd" "$unit" "$unit_file" "$cfg" "$pidfile" "$applied" "$previous")
  printf '%s\n' "$applied" | install_if_changed "$config_dir/applied.sha256" 0600 || true
  echo "$changed"
}

wait_ready() {
  local listen
  listen=$(listen_of)
  haproxy_wait_tls "${listen%:*}" "${listen##*:}" "$ready_seconds"
}

report() { # changed
  local pid
  pid=$(running_pid || true)
  echo "gateway=$(listen_of)"
  echo "pid=${pid:-none}"
  echo "teams=$(grep -c . "$teams_map" || true)"
  echo "changed=$1"
}

case "$action" in
  status)
    [[ -f "$cfg" ]] || { echo "gateway=absent"; exit 3; }
    pid=$(running_pid || true)
    report no
    [[ -n "$pid" ]] || exit 3
    exit 0 ;;
  remove)
    need_root
    stop_haproxy
    rm -rf -- "$config_dir"
    if [[ "$config_dir" == "/etc/kimi-kit/gateway/$name" ]]; then rmdir /etc/kimi-kit/gateway /etc/kimi-kit 2>/dev/null || true; fi
    echo "gateway=removed"
    exit 0 ;;
esac

need_root
have haproxy || die "haproxy is missing (apt-get install haproxy)"
umask 077
mkdir -p -- "$config_dir" "$run_dir"
chmod 0700 "$config_dir"

if [[ "$action" == revoke ]]; then
  [[ -n "$team" ]] || die_usage "--team is required"
  [[ -f "$cfg" ]] || die "gateway $name is not applied ($cfg is missing)"
  awk -v team="$team" '$2 != team' "$teams_map" | install_if_changed "$teams_map" 0600 || true
  awk -v team="$team" '$1 != team' "$limits_map" | install_if_changed "$limits_map" 0600 || true
  haproxy -c -f "$cfg" >&2 || die "HAProxy refused the configuration $cfg"
  changed=$(start_or_reload)
  wait_ready
  report "$changed"
  exit 0
fi

# ------------------------------------------------------------------------------------------ apply
[[ -n "$from" ]] || die_usage "--from is required"
for file in haproxy.cfg teams.map limits.map; do [[ -f "$from/$file" ]] || die "--from $from has no $file"; done
[[ -n "$pem_in" || -s "$config_dir/server.pem" ]] || die_usage "--pem is required on the first apply"
[[ -n "$backend_key_in" || -s "$config_dir/backend-key.map" ]] || die_usage "--backend-key-file is required on the first apply"
# Map lines are `key value`: a map line that is not two words would be misread by HAProxy.
! grep -Evq '^[0-9a-f]{64} [A-Za-z0-9][A-Za-z0-9_.-]*$' "$from/teams.map" || die "$from/teams.map: every line must be '<sha256 hex> <team>'"
! grep -Evq '^[A-Za-z0-9][A-Za-z0-9_.-]* [1-9][0-9]*$' "$from/limits.map" || die "$from/limits.map: every line must be '<team> <requests per minute>'"

# Keep the installed files until the new set passes `haproxy -c`.
backup=$(mktemp -d "$config_dir/.previous.XXXXXX")
trap 'rm -rf -- "$backup"' EXIT
for file in haproxy.cfg teams.map limits.map backend-key.map server.pem; do
  [[ -f "$config_dir/$file" ]] && cp -p -- "$config_dir/$file" "$backup/$file"
done
install_if_changed "$cfg" 0600 <"$from/haproxy.cfg" || true
install_if_changed "$teams_map" 0600 <"$from/teams.map" || true
install_if_changed "$limits_map" 0600 <"$from/limits.map" || true
[[ -n "$pem_in" ]] && { install_if_changed "$config_dir/server.pem" 0600 <"$pem_in" || true; }
if [[ -n "$backend_key_in" ]]; then
  key=$(head -n1 "$backend_key_in" | tr -d '\r\n')
  [[ "$key" =~ ^[!-~]+$ ]] || die "--backend-key-file: the key must be one word of printable ASCII"
  printf 'key %s\n' "$key" | install_if_changed "$config_dir/backend-key.map" 0600 || true
fi
if ! haproxy -c -f "$cfg" >&2; then
  for file in haproxy.cfg teams.map limits.map backend-key.map server.pem; do
    if [[ -f "$backup/$file" ]]; then mv -f -- "$backup/$file" "$config_dir/$file"; else rm -f -- "$config_dir/$file"; fi
  done
  die "HAProxy refused the configuration from $from; the previous files are kept"
fi
changed=$(start_or_reload)
wait_ready
report "$changed"
