#!/usr/bin/env bash
# Usage: front-door.sh up   --name NAME --listen ADDRESS --port PORT --backend-port PORT
#                           [--backend-address 127.0.0.1] [--tls internal-ca|secrets] [--san NAME_OR_IP]...
#                           [--web-ui] [--config-dir DIR] [--run-dir DIR] [--no-systemd] [--ready-seconds N]
#        front-door.sh down --name NAME [--config-dir DIR] [--run-dir DIR] [--no-systemd]
#
# The TLS front door of a public llama-server: HAProxy (the Debian package, installed when missing)
# terminates TLS on ADDRESS:PORT and forwards to llama-server on BACKEND-ADDRESS:BACKEND-PORT
# (loopback). Requests without an API key (Authorization: Bearer … or X-Api-Key) get 401 at the
# proxy, /health included; with --web-ui, unauthenticated GETs of the web UI's pages pass too.
# Plain HTTP on PORT is refused (the TLS handshake fails).
#
# --tls internal-ca (default): a CA and a server certificate (for ADDRESS, 127.0.0.1, localhost and
#   every --san) are made here with openssl and kept: re-running reuses the CA, and re-issues the
#   server certificate only when its names change or it expires within 30 days.
# --tls secrets: the certificate (chain) and its private key arrive as PEM on stdin.
#
# Everything it makes lives in --config-dir (default /etc/kimi-kit/front-door/NAME; files 0600) and
# --run-dir (default /run/kimi-kit); /etc/haproxy/haproxy.cfg and the distribution's haproxy
# service are never touched. HAProxy runs as a systemd unit (kimi-kit-front-door-NAME.service) when
# systemd is PID 1 (started again at boot), else as a daemon with a pid file (not restarted at
# boot: run `up` again). Re-running `up` with the same inputs changes
# nothing; with other inputs it reloads HAProxy without dropping the listener. `down` stops that
# HAProxy and removes only what `up` made (and the haproxy package only when `up` installed it).
#
# stdout (up): key=value lines: front_door, tls_source, certificate_sha256, changed (yes|no) and,
# for internal-ca, ca_certificate_base64 (the CA certificate PEM, base64 on one line).
# Exit codes: 0 done, 1 failed, 2 bad usage.
set -euo pipefail

export script_name=front-door.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
need_action "$action" up down
shift

name="" listen="" port="" backend_address=127.0.0.1 backend_port="" tls_source=internal-ca
web_ui=no config_dir="" run_dir=/run/kimi-kit use_systemd=auto ready_seconds=30
sans=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --listen) need_value "$1" $#; need_ipv4 "$1" "$2"; listen=$2; shift 2 ;;
    --port) need_value "$1" $#; need_port "$1" "$2"; port=$2; shift 2 ;;
    --backend-address) need_value "$1" $#; need_ipv4 "$1" "$2"; backend_address=$2; shift 2 ;;
    --backend-port) need_value "$1" $#; need_port "$1" "$2"; backend_port=$2; shift 2 ;;
    --tls) need_value "$1" $#; need_tls_source "$1" "$2"; tls_source=$2; shift 2 ;;
    --san) need_value "$1" $#; need_san "$1" "$2"; sans+=("$2"); shift 2 ;;
    --web-ui) web_ui=yes; shift ;;
    --config-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; config_dir=${2%/}; shift 2 ;;
    *) service_common_flag "$@"; shift "$flag_args" ;;  # --name, --run-dir, --no-systemd, --ready-seconds
  esac
done
[[ -n "$name" ]] || die_usage "--name is required"
config_dir=${config_dir:-/etc/kimi-kit/front-door/$name}
cfg="$config_dir/haproxy.cfg"
pem="$config_dir/server.pem"
installed_marker=/var/lib/kimi-kit/front-door-installed-haproxy
# HAProxy (its command line names CFG) exits promptly on TERM; KILL after 10 s.
service_init "$use_systemd" "kimi-kit-front-door-$name.service" "$run_dir/front-door-$name.pid" "$cfg" 10

if [[ "$action" == down ]]; then
  need_root
  service_stop
  rm -rf -- "$config_dir"
  # The shared parents under /etc go too once no other front door is left in them.
  if [[ "$config_dir" == "/etc/kimi-kit/front-door/$name" ]]; then rmdir /etc/kimi-kit/front-door /etc/kimi-kit 2>/dev/null || true; fi
  if [[ -f "$installed_marker" ]] && ! compgen -G "/etc/kimi-kit/front-door/*/haproxy.cfg" >/dev/null; then
    log "removing the haproxy package this kit installed"
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq haproxy >&2 || log "could not remove haproxy; leaving it installed"
    rm -f -- "$installed_marker"
  fi
  echo "front_door=removed"
  exit "$EXIT_OK"
fi

# ------------------------------------------------------------------------------------------ up
[[ -n "$listen" ]] || die_usage "--listen is required"
[[ -n "$port" ]] || die_usage "--port is required"
[[ -n "$backend_port" ]] || die_usage "--backend-port is required"
if [[ "$backend_address" == "$listen" || "$listen" == 0.0.0.0 ]] && [[ "$backend_port" == "$port" ]]; then
  die_usage "--backend-port must differ from --port (both would listen on $backend_address:$port)"
fi
need_root
have openssl || die "openssl is missing"

if ! have haproxy; then
  installed=$(apt_install_missing haproxy)
  if [[ -n "$installed" ]]; then
    mkdir -p "$(dirname "$installed_marker")"
    echo "installed by front-door.sh for $name" >"$installed_marker"
  fi
  have haproxy || die "haproxy is still missing after installing it"
fi

umask 077
mkdir -p -- "$config_dir" "$run_dir"
chmod 0700 "$config_dir"
work=$(mktemp -d "$config_dir/.work.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# --- certificate ------------------------------------------------------------------------------
if [[ "$tls_source" == internal-ca ]]; then
  # The names the certificate carries: the listen address, loopback, --san.
  names=(127.0.0.1 localhost "${sans[@]}")
  [[ "$listen" != 0.0.0.0 ]] && names+=("$listen")
  tls_internal_ca "$config_dir" "$work" "$name" "kimi-kit $name front door CA" "${names[@]}"
else
  # secrets: certificate chain and private key as PEM on stdin.
  cat >"$work/input.pem"
  tls_secrets_pem "$config_dir" "$work" "$work/input.pem"
fi

# --- HAProxy configuration --------------------------------------------------------------------
api_key_acls='    acl has_key req.hdr(authorization) -m beg -i "bearer "
    acl has_key req.hdr(x-api-key) -m found'
if [[ "$web_ui" == yes ]]; then
  # The web UI's pages load without a key (the UI asks for one and sends it on API calls).
  open_rule='    acl api_path path_beg /v1/ /health /metrics /props /models /slots /lora-adapters /api/ /completion /infill /embedding /rerank /tokenize /detokenize /apply-template
    acl read_method method GET HEAD
    http-request return status 401 content-type text/plain string "kimi-kit: an API key is required" hdr WWW-Authenticate Bearer if !has_key api_path or !has_key !read_method'
else
  open_rule='    http-request return status 401 content-type text/plain string "kimi-kit: an API key is required" hdr WWW-Authenticate Bearer if !has_key'
fi
# The workers drop root once the certificate is read and the port bound (the package's user).
privileges=""
if id -u haproxy >/dev/null 2>&1 && getent group haproxy >/dev/null 2>&1; then
  privileges=$'    user haproxy\n    group haproxy'
fi
install_if_changed "$cfg" 0600 <<EOF || true
# Written by kimi-kit front-door.sh for $name; re-run front-door.sh up to change it.
global
$privileges
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout http-request 30s
    timeout client 15m
    timeout server 60m

frontend kimi_kit_$name
    bind $listen:$port ssl crt $pem alpn http/1.1
    http-request set-header X-Forwarded-Proto https
$api_key_acls
$open_rule
    default_backend kimi_kit_${name}_llama

backend kimi_kit_${name}_llama
    server llama $backend_address:$backend_port
EOF
haproxy -c -q -f "$cfg" >&2 || die "HAProxy refused the configuration $cfg"
applied=$(cat "$cfg" "$pem" | sha256sum | cut -d' ' -f1)
previous=$(cat "$config_dir/applied.sha256" 2>/dev/null || true)
if [[ "$applied" != "$previous" ]]; then files_changed=yes; else files_changed=no; fi

# --- run it -----------------------------------------------------------------------------------
changed=$(haproxy_start_or_reload "kimi-kit front door $name (HAProxy, TLS)" "$cfg" "$files_changed")
printf '%s\n' "$applied" | install_if_changed "$config_dir/applied.sha256" 0600 || true

# Ready when the listener completes a TLS handshake (bounded by --ready-seconds).
haproxy_wait_tls "$listen" "$port" "$ready_seconds"

echo "front_door=$listen:$port"
echo "tls_source=$tls_source"
echo "certificate_sha256=$(tls_certificate_sha256 "$pem")"
[[ "$tls_source" == internal-ca ]] && echo "ca_certificate_base64=$(tls_ca_base64 "$config_dir")"
echo "changed=$changed"
