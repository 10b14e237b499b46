#!/usr/bin/env bash
# Usage: gateway.sh apply  --name NAME --from DIR [--tls internal-ca|secrets] [--san NAME_OR_IP]...
#                          [--secrets-stdin] [--pem FILE] [--backend-key-file FILE]
#                          [--config-dir DIR] [--run-dir DIR] [--no-systemd] [--ready-seconds N]
#        gateway.sh revoke --name NAME --team TEAM [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#        gateway.sh remove --name NAME [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#        gateway.sh status --name NAME [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#
# The gateway in front of the llama-server replicas: its own HAProxy (the Debian package) with the
# configuration planner/gateway.ts writes. DIR holds haproxy.cfg, teams.map (sha256 of each team's
# key, then the team) and limits.map (team, then requests per minute), and may hold token-limits.map
# (team, then tokens per minute: read by the token limiter, not by HAProxy); `apply` installs them in
# --config-dir (default /etc/kimi-kit/gateway/NAME; files 0600), and creates tokens-blocked.map
# empty when it is missing (the token limiter's: the teams over their tokens per minute, kept across
# applies). The configuration is checked with `haproxy -c` before it is used; a refused one leaves
# the previous files in place.
#
# The certificate (server.pem in --config-dir, the chain and key in HAProxy's crt layout) comes from:
#   --tls internal-ca  a CA and a server certificate (for the listen address of DIR/haproxy.cfg,
#                      127.0.0.1, localhost and every --san) made here with openssl and kept in
#                      --config-dir: a re-run reuses the CA, and re-issues the server certificate
#                      only when its names change or it expires within 30 days. Prints
#                      ca_certificate_base64 (the CA certificate PEM, base64 on one line).
#   --tls secrets      the certificate chain and its private key as PEM on stdin.
#   --pem FILE         that PEM file, as it is.
#   none of these      the installed one (a later apply).
# The replicas' own API key (replaced for the team's on every request; as llama-server's
# --api-key-file reads it) becomes backend-key.map: --secrets-stdin reads it from stdin's first line
# (with --tls secrets the PEM follows it on stdin), so it is never on a command line;
# --backend-key-file FILE reads it from FILE; with neither, the installed key is kept.
#
# Teams live only in the maps: `apply` with another team list, or `revoke --team TEAM`, reloads
# HAProxy hitlessly (a new process takes over the listener; the old one finishes its requests),
# so a removed team's key is refused at once and the replicas are never touched. The per-team
# request-rate counters survive the reload: the configuration's `peers` section (its local peer on
# loopback) lets the old process hand its stick table to the new one (a reload within 6 s of
# HAProxy's start waits out the rest: a fresh process hands its table over only after 5 s).
#
# /etc/haproxy/haproxy.cfg and the distribution's haproxy service are never touched: HAProxy runs
# as kimi-kit-gateway-NAME.service when systemd is PID 1, else as a daemon with a pid file in
# --run-dir (default /run/kimi-kit). Re-running `apply` with the same inputs changes nothing.
# `remove` stops it and deletes --config-dir. `status` prints key=value lines.
#
# stdout: key=value lines (gateway, pid, teams, certificate_sha256, changed, and after
# `apply --tls internal-ca` ca_certificate_base64). Exit codes: 0 done, 1 failed, 2 bad usage
# (status: 3 when the gateway is not running).
set -euo pipefail

export script_name=gateway.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
need_action "$action" apply revoke remove status
shift

name="" from="" pem_in="" backend_key_in="" team="" config_dir="" run_dir=/run/kimi-kit
use_systemd=auto ready_seconds=30 tls_source="" secrets_stdin=no
sans=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --from) need_value "$1" $#; [[ -d "$2" ]] || die_usage "--from wants a folder, got '$2'"; from=$2; shift 2 ;;
    --pem) need_value "$1" $#; [[ -r "$2" ]] || die_usage "--pem: cannot read '$2'"; pem_in=$2; shift 2 ;;
    --backend-key-file) need_value "$1" $#; [[ -r "$2" ]] || die_usage "--backend-key-file: cannot read '$2'"; backend_key_in=$2; shift 2 ;;
    --tls) need_value "$1" $#; need_tls_source "$1" "$2"; tls_source=$2; shift 2 ;;
    --san) need_value "$1" $#; need_san "$1" "$2"; sans+=("$2"); shift 2 ;;
    --secrets-stdin) secrets_stdin=yes; shift ;;
    --team) need_value "$1" $#; need_name "$1" "$2"; team=$2; shift 2 ;;
    --config-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; config_dir=${2%/}; shift 2 ;;
    *) service_common_flag "$@"; shift "$flag_args" ;;  # --name, --run-dir, --no-systemd, --ready-seconds
  esac
done
[[ -n "$name" ]] || die_usage "--name is required"
[[ -n "$pem_in" && -n "$tls_source" ]] && die_usage "--pem and --tls are two sources of the certificate: give one"
[[ -n "$backend_key_in" && "$secrets_stdin" == yes ]] && die_usage "--backend-key-file and --secrets-stdin both give the replicas' key: give one"
((${#sans[@]} == 0)) || [[ "$tls_source" == internal-ca ]] || die_usage "--san names the internal CA's server certificate: it needs --tls internal-ca"
config_dir=${config_dir:-/etc/kimi-kit/gateway/$name}
cfg="$config_dir/haproxy.cfg"
teams_map="$config_dir/teams.map"
limits_map="$config_dir/limits.map"
# HAProxy (its command line names CFG) exits promptly on TERM; KILL after 10 s.
service_init "$use_systemd" "kimi-kit-gateway-$name.service" "$run_dir/gateway-$name.pid" "$cfg" 10

# The public listener: the first `bind` line with ssl in the configuration (default: the installed one).
listen_of() { awk '$1 == "bind" && / ssl / { print $2; exit }' "${1:-$cfg}"; }

# The certificate file that bind line reads (its `crt`).
crt_of() { awk '$1 == "bind" && / ssl / { for (i = 3; i < NF; i++) if ($i == "crt") { print $(i + 1); exit } }' "$1"; }

# A HAProxy that started without a predecessor to learn its stick table from hands the table over
# on a reload only once its peers resync window (HAProxy's PEER_RESYNC_TIMEOUT, 5 s) has passed:
# a reload sooner would start the new process with empty per-team counters. So a reload waits
# until the running process is 6 s old (at most 6 s, and only when applies follow each other that
# closely; a process that did learn from a predecessor would not need it, but its age is what the
# script can see).
wait_peers_resync() { # pid
  local age
  while age=$(ps -o etimes= -p "$1" 2>/dev/null | tr -d ' ') && [[ "$age" =~ ^[0-9]+$ ]] && ((age < 6)); do
    sleep 0.5
  done
}

# Starts HAProxy, or reloads it when what it reads changed (configuration, maps, certificate, key).
start_or_reload() {
  local applied previous files_changed=no changed=no pid
  applied=$(cat "$cfg" "$teams_map" "$limits_map" "$config_dir/backend-key.map" "$config_dir/server.pem" | sha256sum | cut -d' ' -f1)
  previous=$(cat "$config_dir/applied.sha256" 2>/dev/null || true)
  [[ "$applied" != "$previous" ]] && files_changed=yes
  if [[ "$files_changed" == yes ]] && pid=$(service_pid); then wait_peers_resync "$pid"; fi
  changed=$(haproxy_start_or_reload "kimi-kit gateway $name (HAProxy: TLS, team keys, rate limits, replicas)" "$cfg" "$files_changed")
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
  pid=$(service_pid || true)
  echo "gateway=$(listen_of)"
  echo "pid=${pid:-none}"
  echo "teams=$(grep -c . "$teams_map" || true)"
  [[ -s "$config_dir/server.pem" ]] && echo "certificate_sha256=$(tls_certificate_sha256 "$config_dir/server.pem")"
  echo "changed=$1"
  if [[ "$tls_source" == internal-ca ]]; then echo "ca_certificate_base64=$(tls_ca_base64 "$config_dir")"; fi
}

case "$action" in
  status)
    [[ -f "$cfg" ]] || { echo "gateway=absent"; exit "$EXIT_NOT_RUNNING"; }
    pid=$(service_pid || true)
    report no
    [[ -n "$pid" ]] || exit "$EXIT_NOT_RUNNING"
    exit "$EXIT_OK" ;;
  remove)
    need_root
    service_stop
    rm -rf -- "$config_dir"
    if [[ "$config_dir" == "/etc/kimi-kit/gateway/$name" ]]; then rmdir /etc/kimi-kit/gateway /etc/kimi-kit 2>/dev/null || true; fi
    echo "gateway=removed"
    exit "$EXIT_OK" ;;
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
  if [[ -f "$config_dir/token-limits.map" ]]; then
    awk -v team="$team" '$1 != team' "$config_dir/token-limits.map" | install_if_changed "$config_dir/token-limits.map" 0600 || true
  fi
  haproxy -c -f "$cfg" >&2 || die "HAProxy refused the configuration $cfg"
  changed=$(start_or_reload)
  wait_ready
  report "$changed"
  exit "$EXIT_OK"
fi

# ------------------------------------------------------------------------------------------ apply
have openssl || die "openssl is missing"
[[ -n "$from" ]] || die_usage "--from is required"
for file in haproxy.cfg teams.map limits.map; do [[ -f "$from/$file" ]] || die "--from $from has no $file"; done
[[ -n "$pem_in" || -n "$tls_source" || -s "$config_dir/server.pem" ]] || die_usage "--tls (or --pem) is required on the first apply"
[[ -n "$backend_key_in" || "$secrets_stdin" == yes || -s "$config_dir/backend-key.map" ]] || die_usage "--secrets-stdin (or --backend-key-file) is required on the first apply"
# Map lines are `key value`: a map line that is not two words would be misread by HAProxy.
! grep -Evq '^[0-9a-f]{64} [A-Za-z0-9][A-Za-z0-9_.-]*$' "$from/teams.map" || die "$from/teams.map: every line must be '<sha256 hex> <team>'"
! grep -Evq '^[A-Za-z0-9][A-Za-z0-9_.-]* [1-9][0-9]*$' "$from/limits.map" || die "$from/limits.map: every line must be '<team> <requests per minute>'"
if [[ -f "$from/token-limits.map" ]]; then
  ! grep -Evq '^[A-Za-z0-9][A-Za-z0-9_.-]* [1-9][0-9]*$' "$from/token-limits.map" || die "$from/token-limits.map: every line must be '<team> <tokens per minute>'"
fi
if [[ -n "$tls_source" ]]; then
  crt=$(crt_of "$from/haproxy.cfg")
  [[ "$crt" == "$config_dir/server.pem" ]] || die "--tls writes $config_dir/server.pem, but $from/haproxy.cfg reads '$crt' (leave tls.certificatePath out)"
fi

work=$(mktemp -d "$config_dir/.work.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# The secrets, read before anything is installed; the key is never echoed.
backend_key="" key_source=""
if [[ "$secrets_stdin" == yes ]]; then
  key_source="--secrets-stdin: stdin's first line"
  IFS= read -r backend_key || [[ -n "$backend_key" ]] || die "--secrets-stdin: stdin is empty (expected the replicas' API key on its first line)"
  if [[ "$tls_source" == secrets ]]; then
    cat >"$work/input.pem"
  else
    rest=$(cat)
    [[ -z "${rest//[[:space:]]/}" ]] || die "--secrets-stdin: stdin holds more than the key line (a PEM follows the key only with --tls secrets)"
  fi
elif [[ -n "$backend_key_in" ]]; then
  key_source="--backend-key-file: the key"
  backend_key=$(head -n1 "$backend_key_in")
elif [[ "$tls_source" == secrets ]]; then
  cat >"$work/input.pem"
fi
backend_key=${backend_key%$'\r'}
if [[ -n "$key_source" ]]; then
  [[ "$backend_key" =~ ^[!-~]+$ ]] || die "$key_source must be one word of printable ASCII (the replicas' API key)"
fi

# Keep the installed files until the new set passes `haproxy -c`.
installed=(haproxy.cfg teams.map limits.map token-limits.map backend-key.map server.pem server.names ca.key ca.crt)
mkdir "$work/previous"
for file in "${installed[@]}"; do
  [[ -f "$config_dir/$file" ]] && cp -p -- "$config_dir/$file" "$work/previous/$file"
done
restore_previous() {
  for file in "${installed[@]}"; do
    if [[ -f "$work/previous/$file" ]]; then mv -f -- "$work/previous/$file" "$config_dir/$file"; else rm -f -- "$config_dir/$file"; fi
  done
}
case "$tls_source" in
  internal-ca)
    # The names the certificate carries: the listen address, loopback, --san.
    listen=$(listen_of "$from/haproxy.cfg")
    names=(127.0.0.1 localhost "${sans[@]}")
    [[ "${listen%:*}" != 0.0.0.0 && -n "${listen%:*}" ]] && names+=("${listen%:*}")
    tls_internal_ca "$config_dir" "$work" "$name" "kimi-kit $name gateway CA" "${names[@]}" ;;
  secrets)
    # Dies before it installs anything when the PEM is not a usable chain and key.
    tls_secrets_pem "$config_dir" "$work" "$work/input.pem" ;;
  *)
    if [[ -n "$pem_in" ]]; then install_if_changed "$config_dir/server.pem" 0600 <"$pem_in" || true; fi ;;
esac
rm -f -- "$work/input.pem"
if [[ -n "$backend_key" ]]; then
  printf 'key %s\n' "$backend_key" | install_if_changed "$config_dir/backend-key.map" 0600 || true
fi
install_if_changed "$cfg" 0600 <"$from/haproxy.cfg" || true
install_if_changed "$teams_map" 0600 <"$from/teams.map" || true
install_if_changed "$limits_map" 0600 <"$from/limits.map" || true
# No token limits: an empty file, so the limiter (if one still runs) blocks nobody.
install_if_changed "$config_dir/token-limits.map" 0600 <"$(if [[ -f "$from/token-limits.map" ]]; then echo "$from/token-limits.map"; else echo /dev/null; fi)" || true
# The token limiter's map: HAProxy must find it; its content is the limiter's, never replaced here.
[[ -f "$config_dir/tokens-blocked.map" ]] || install -m 0600 /dev/null "$config_dir/tokens-blocked.map"
if ! haproxy -c -f "$cfg" >&2; then
  restore_previous
  die "HAProxy refused the configuration from $from; the previous files are kept"
fi
changed=$(start_or_reload)
wait_ready
report "$changed"
