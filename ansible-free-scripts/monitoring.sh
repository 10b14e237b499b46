#!/usr/bin/env bash
# Usage: monitoring.sh apply  --name NAME --from DIR [--listen ADDRESS:PORT] [--bearer-stdin]
#                             [--config-dir DIR] [--data-dir DIR] [--run-dir DIR] [--no-systemd]
#                             [--ready-seconds N]
#        monitoring.sh remove --name NAME [--purge-data] [--config-dir DIR] [--data-dir DIR]
#                             [--run-dir DIR] [--no-systemd]
#        monitoring.sh status --name NAME [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#
# The fleet's Prometheus: its own prometheus process (the Debian package, installed when missing)
# with the files planner/monitoring.ts writes. DIR holds prometheus.yml (prometheusConfig) and
# rules.yml (alertRules); `apply` installs them in --config-dir (default
# /etc/kimi-kit/monitoring/NAME; folder 0700, files 0600), so the config should name its rule file
# as `rules.yml` (Prometheus resolves relative paths against the config file's folder).
#
# Replicas started with --api-key-file serve /metrics only with their key. With --bearer-stdin the
# first line of stdin (the key) is installed, mode 0600, as the file the config's credentials_file
# names (prometheusConfig's replicaBearerTokenFile, which the planner sets): it must be a file
# directly in --config-dir, named relative to the config (MONITORING_BEARER_TOKEN_FILE,
# `credentials_file: bearer-token`, works with any --config-dir) or as CONFIG-DIR/FILE (e.g.
# /etc/kimi-kit/monitoring/NAME/replica-key). Left out on a later apply, the installed key is kept.
#
# The files are checked with `promtool check config` (which also checks the rules and that the key
# file exists) before use; a refused set leaves the previous files in place and the running
# Prometheus untouched. Changed files reach a running Prometheus by SIGHUP (a reload: the data and
# the listener stay); a changed --listen or --data-dir restarts it. Re-running `apply` with the same
# files changes nothing. `apply` waits until its own Prometheus answers /-/ready (at most
# --ready-seconds, default 60) and has loaded the new files.
#
# Prometheus has no authentication: --listen (default 127.0.0.1:9090) must be a loopback or private
# address (127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, [::1]). Its storage is --data-dir
# (default /var/lib/kimi-kit/monitoring/NAME). It runs as root (the key file is root's only).
#
# /etc/prometheus and the distribution's prometheus service are never touched (note that installing
# the package on a systemd host starts that service on *:9090: pick another --listen port there).
# This one runs as kimi-kit-monitoring-NAME.service when systemd is PID 1, else as a daemon with a
# pid file and log in --run-dir (default /run/kimi-kit). `remove` stops it and deletes --config-dir;
# the data stay unless --purge-data. `status` prints key=value lines (monitoring, pid, ready).
#
# stdout: key=value lines (monitoring=ADDRESS:PORT, pid, changed). Exit codes: 0 done, 1 failed,
# 2 bad usage (status: 3 when it is not running).
set -euo pipefail

export script_name=monitoring.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
need_action "$action" apply remove status
shift

# A listener Prometheus may bind: loopback or RFC 1918 IPv4 (or [::1]), with a port.
need_listen() { # flag value
  local address=${2%:*} port=${2##*:} a b
  [[ "$2" == *:* ]] || die_usage "$1 wants ADDRESS:PORT, got '$2'"
  need_port "$1" "$port"
  [[ "$address" == "[::1]" ]] && return 0
  is_ipv4 "$address" || die_usage "$1 wants an IPv4 address (or [::1]) with a port, got '$2'"
  IFS=. read -r a b _ <<<"$address"
  a=$((10#$a)) b=$((10#$b))
  if ((a == 127 || a == 10 || (a == 172 && b >= 16 && b <= 31) || (a == 192 && b == 168))); then return 0; fi
  die_usage "$1: $address is neither loopback nor private; Prometheus has no authentication, so it may not listen there"
}

name="" from="" listen="" bearer_stdin=no purge_data=no config_dir="" data_dir="" run_dir=/run/kimi-kit
use_systemd=auto ready_seconds=60
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --from) need_value "$1" $#; [[ -d "$2" ]] || die_usage "--from wants a folder, got '$2'"; from=$2; shift 2 ;;
    --listen) need_value "$1" $#; need_listen "$1" "$2"; listen=$2; shift 2 ;;
    --bearer-stdin) bearer_stdin=yes; shift ;;
    --purge-data) purge_data=yes; shift ;;
    --config-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; config_dir=${2%/}; shift 2 ;;
    --data-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; data_dir=${2%/}; shift 2 ;;
    *) service_common_flag "$@"; shift "$flag_args" ;;  # --name, --run-dir, --no-systemd, --ready-seconds
  esac
done
[[ -n "$name" ]] || die_usage "--name is required"
if [[ "$action" != apply ]]; then
  [[ -z "$from" && -z "$listen" && "$bearer_stdin" == no ]] || die_usage "--from, --listen and --bearer-stdin are for apply"
fi
[[ "$action" == remove || "$purge_data" == no ]] || die_usage "--purge-data is for remove"
config_dir=${config_dir:-/etc/kimi-kit/monitoring/$name}
data_dir=${data_dir:-/var/lib/kimi-kit/monitoring/$name}
cfg="$config_dir/prometheus.yml"
rules="$config_dir/rules.yml"
listen_file="$config_dir/listen"
logfile="$run_dir/monitoring-$name.log"
lockfile="$run_dir/monitoring-$name.lock"
data_marker=".kimi-kit-monitoring"
# Its process has --config.file=CFG on its command line. Prometheus closes its storage and exits
# within seconds of TERM; KILL after 30 s.
service_init "$use_systemd" "kimi-kit-monitoring-$name.service" "$run_dir/monitoring-$name.pid" "--config.file=$cfg" 30 "$logfile"

installed_listen() { head -n1 "$listen_file" 2>/dev/null || true; }

# GET http://LISTEN/PATH (no proxy: the address is loopback or private).
http_get() { # listen path
  curl -fsS --noproxy '*' --max-time 5 "http://$1$2"
}

# Whether the Prometheus answering on LISTEN is ready and is this one (its --config.file is ours):
# another Prometheus (the distribution's, say) on the same port must not pass for it.
is_ours_and_ready() { # listen
  http_get "$1" /-/ready >/dev/null 2>&1 || return 1
  http_get "$1" /api/v1/status/flags 2>/dev/null | grep -qF "\"config.file\":\"$cfg\""
}

# The time of the last successful configuration load (a float), from Prometheus' own metrics.
last_reload() { # listen
  http_get "$1" /metrics 2>/dev/null | awk '$1 == "prometheus_config_last_reload_success_timestamp_seconds" { print $2; found = 1 } END { exit !found }'
}

case "$action" in
  status)
    [[ -f "$cfg" ]] || { echo "monitoring=absent"; exit "$EXIT_NOT_RUNNING"; }
    listen=$(installed_listen)
    pid=$(service_pid || true)
    echo "monitoring=${listen:-unknown}"
    echo "pid=${pid:-none}"
    if [[ -n "$pid" && -n "$listen" ]] && is_ours_and_ready "$listen"; then echo "ready=yes"; else echo "ready=no"; fi
    [[ -n "$pid" ]] || exit "$EXIT_NOT_RUNNING"
    exit "$EXIT_OK" ;;
  remove)
    need_root
    service_stop
    rm -rf -- "$config_dir"
    rm -f -- "$logfile" "$lockfile"
    if [[ "$config_dir" == "/etc/kimi-kit/monitoring/$name" ]]; then rmdir /etc/kimi-kit/monitoring /etc/kimi-kit 2>/dev/null || true; fi
    if [[ "$purge_data" == yes && -d "$data_dir" ]]; then
      # Only a folder this script created (it leaves a marker there): never a mistyped --data-dir.
      [[ -f "$data_dir/$data_marker" ]] || die "--purge-data: $data_dir has no $data_marker, so it is not ours; left in place"
      rm -rf -- "$data_dir"
    fi
    echo "monitoring=removed"
    exit "$EXIT_OK" ;;
esac

# ------------------------------------------------------------------------------------------ apply
need_root
[[ -n "$from" ]] || die_usage "--from is required"
for file in prometheus.yml rules.yml; do [[ -f "$from/$file" ]] || die "--from $from has no $file"; done
key=""
if [[ "$bearer_stdin" == yes ]]; then
  IFS= read -r key || true
  key=${key%$'\r'}
  [[ "$key" =~ ^[!-~]+$ ]] || die "--bearer-stdin: the first line of stdin must be the key, one word of printable ASCII"
fi
apt_install_missing prometheus curl >/dev/null
have prometheus || die "prometheus is missing after installing the prometheus package"
have promtool || die "promtool is missing after installing the prometheus package"

umask 077
mkdir -p -- "$config_dir" "$run_dir" "$data_dir"
chmod 0700 "$config_dir" "$data_dir"
# One apply at a time per name (the lock's descriptor is closed for Prometheus itself).
hold_run_lock "$lockfile"
[[ -f "$data_dir/$data_marker" ]] || : >"$data_dir/$data_marker"

# Without --listen, a re-apply keeps the installed listener.
listen=${listen:-$(installed_listen)}
listen=${listen:-127.0.0.1:9090}

# The key file is the one the config's credentials_file names, and it must sit in --config-dir (a
# config may not make root write elsewhere); the key must reach Prometheus, so --bearer-stdin wants one.
token="" token_name=""
mapfile -t credentials < <(grep -oE 'credentials_file:[[:space:]]*[^[:space:],}]+' "$from/prometheus.yml" | sed -E 's/^credentials_file:[[:space:]]*//; s/["'\'']//g' | sort -u)
((${#credentials[@]} <= 1)) || die "$from/prometheus.yml names several credentials_file (${credentials[*]}); monitoring.sh installs one key"
if ((${#credentials[@]} == 1)); then
  token_name=${credentials[0]#"$config_dir"/}
  [[ "$token_name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ && "$token_name" != @(prometheus.yml|rules.yml|listen|applied.sha256) ]] \
    || die "$from/prometheus.yml: credentials_file '${credentials[0]}' must be a file in --config-dir ($config_dir/FILE, or FILE relative to the config)"
  token="$config_dir/$token_name"
fi
[[ "$bearer_stdin" == no || -n "$token" ]] \
  || die "--bearer-stdin: $from/prometheus.yml names no credentials_file, so the key would not be sent; generate it with replicaBearerTokenFile"

# Keep the installed files until the new set passes promtool.
backup=$(mktemp -d "$config_dir/.previous.XXXXXX")
trap 'rm -rf -- "$backup"' EXIT
for file in prometheus.yml rules.yml $token_name; do
  [[ -f "$config_dir/$file" ]] && cp -p -- "$config_dir/$file" "$backup/$file"
done
install_if_changed "$cfg" 0600 <"$from/prometheus.yml" || true
install_if_changed "$rules" 0600 <"$from/rules.yml" || true
[[ -n "$key" ]] && { printf '%s\n' "$key" | install_if_changed "$token" 0600 || true; }
if ! (cd "$config_dir" && promtool check config "$cfg") >&2; then
  for file in prometheus.yml rules.yml $token_name; do
    if [[ -f "$backup/$file" ]]; then mv -f -- "$backup/$file" "$config_dir/$file"; else rm -f -- "$config_dir/$file"; fi
  done
  die "promtool refused the configuration from $from; the previous files are kept"
fi
printf '%s\n' "$listen" | install_if_changed "$listen_file" 0600 || true

prometheus_bin=$(command -v prometheus)
# What the process is started with; a change here restarts it (a reload cannot move a listener).
args=("--config.file=$cfg" "--storage.tsdb.path=$data_dir" "--web.listen-address=$listen")
read_files=("$cfg" "$rules")
[[ -n "$token" && -f "$token" ]] && read_files+=("$token")
applied=$(cat "${read_files[@]}" | sha256sum | cut -d' ' -f1)
previous=$(cat "$config_dir/applied.sha256" 2>/dev/null || true)
if [[ "$applied" != "$previous" ]]; then files_changed=yes; else files_changed=no; fi

# Whether Prometheus' last successful configuration load is newer than BEFORE.
reloaded_since() { # before
  local now
  now=$(last_reload "$listen") && awk -v now="$now" -v before="$1" 'BEGIN { exit !(now > before) }'
}

# Sends SIGHUP and waits until Prometheus has loaded the files (its last successful load is newer).
reload_prometheus() { # pid
  local before
  before=$(last_reload "$listen") || die "cannot read Prometheus' last reload time from http://$listen/metrics"
  kill -HUP "$1"
  wait_until "$ready_seconds" reloaded_since "$before" \
    || die "Prometheus did not load the new files within ${ready_seconds}s (see its log)"
}

# Started (or restarted: a changed command line or unit) with ARGS; changed files are reloaded.
service_apply "kimi-kit monitoring $name (Prometheus for the llama-server fleet)" "$files_changed" reload_prometheus \
  "$prometheus_bin" "${args[@]}" <<SERVICE
ExecStart=$prometheus_bin ${args[*]}
ExecReload=/bin/kill -HUP \$MAINPID
Restart=always
RestartSec=2s
TimeoutStopSec=60s
SERVICE
changed=$service_changed

# Until its own Prometheus (not another on the same port) answers /-/ready; a dead one fails at once.
service_wait_ready "$ready_seconds" Prometheus "Prometheus $name did not answer ready on $listen within ${ready_seconds}s" \
  is_ours_and_ready "$listen"
printf '%s\n' "$applied" | install_if_changed "$config_dir/applied.sha256" 0600 || true

echo "monitoring=$listen"
echo "pid=$(service_pid || echo none)"
echo "changed=$changed"
