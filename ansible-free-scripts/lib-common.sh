# shellcheck shell=bash
# Usage: source "$(dirname "${BASH_SOURCE[0]}")/lib-common.sh"   (not run on its own)
#
# The helpers the kit's host scripts share. The sourcing script sets `script_name` first (used in
# messages); its usage text is its header comment (see usage below); everything here is plain bash
# with no side effects at source time.

# The sourcing script's header comment, from line 2 down to `set -euo`, without the comment marks.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

# Messages and exits ---------------------------------------------------------------------------
log() { echo "${script_name:-kimi-kit}: $*" >&2; }
die() { log "$*"; exit 1; }
die_usage() { log "$*"; echo "Run ${script_name:-this script} --help for usage." >&2; exit 2; }

have() { command -v "$1" >/dev/null 2>&1; }

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (it changes system configuration)"
}

# Argument checks ------------------------------------------------------------------------------
need_value() { # flag remaining-argc
  (($2 >= 2)) || die_usage "$1 needs a value"
}

need_port() { # flag value
  if [[ "$2" =~ ^[1-9][0-9]{0,4}$ ]] && ((10#$2 <= 65535)); then return 0; fi
  die_usage "$1 wants a TCP port 1-65535, got '$2'"
}

is_ipv4() { # value
  local IFS=. octet
  local -a octets
  [[ "$1" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || return 1
  read -r -a octets <<<"$1"
  for octet in "${octets[@]}"; do ((10#$octet <= 255)) || return 1; done
}

need_ipv4() { # flag value
  is_ipv4 "$2" || die_usage "$1 wants an IPv4 address like 192.0.2.10, got '$2'"
}

need_cidr() { # flag value — IPv4 network/prefix, as the kit's config validator allows
  local address=${2%/*} prefix=${2##*/}
  # No leading zeros (as the validator): 0.0.0.0/00 is a /0 in disguise.
  if [[ "$2" == */* && ! "$2" =~ (^|[./])0[0-9] ]] && is_ipv4 "$address" && [[ "$prefix" =~ ^[0-9]{1,2}$ ]] && ((10#$prefix <= 32)); then return 0; fi
  die_usage "$1 wants an IPv4 CIDR like 203.0.113.0/24 (no leading zeros), got '$2'"
}

# A kit-owned name (a deployment, an nftables table): no path or shell surprises.
need_name() { # flag value
  [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ]] || die_usage "$1 wants a name of letters, digits, _ . - (not starting with _ . -), got '$2'"
}

# Files ----------------------------------------------------------------------------------------
# Writes stdin to PATH with MODE, atomically (temp file in the same folder, then rename), and says
# whether the content changed: returns 0 when PATH was written anew, 1 when it already held exactly
# this; exits the script on a write error (callers test the result, which would mask `set -e`).
install_if_changed() { # path mode < content
  local path=$1 mode=$2 tmp
  tmp=$(mktemp "${path}.XXXXXX") || die "cannot create a file beside $path"
  { chmod "$mode" "$tmp" && cat >"$tmp"; } || { rm -f -- "$tmp"; die "cannot write $path"; }
  if [[ -f "$path" ]] && cmp -s "$tmp" "$path" && [[ $(stat -c %a "$path") == "${mode#0}" ]]; then
    rm -f -- "$tmp"
    return 1
  fi
  mv -f -- "$tmp" "$path" || die "cannot replace $path"
}

# Processes and services -----------------------------------------------------------------------
systemd_is_pid1() {
  [[ -d /run/systemd/system ]] && [[ "$(ps -p 1 -o comm= 2>/dev/null)" == systemd ]]
}

# The pid in a pid file when that process is alive and its command line contains MARKER (a file
# only this kit's process has on its command line): never signals a recycled pid.
live_pid_from_file() { # pidfile marker
  local pid
  [[ -r "$1" ]] || return 1
  pid=$(head -n1 "$1" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
  echo "$pid"
}

# Installs Debian packages that are missing; prints the ones it installed (nothing when none).
apt_install_missing() { # package...
  local package
  local -a missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  have apt-get || die "missing ${missing[*]} and no apt-get to install them (a Debian or Ubuntu host is expected)"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  printf '%s\n' "${missing[@]}"
}

# ---------------------------------------------------------------- the kit's own HAProxy instances
# front-door.sh and gateway.sh each run one HAProxy of their own: a systemd unit of its own where
# systemd is PID 1, else a daemon with a pid file. Never the Debian haproxy.service.

# haproxy_stop USE_SYSTEMD UNIT UNIT_FILE PIDFILE CFG: stops the instance and removes its unit.
haproxy_stop() {
  local use_systemd=$1 unit=$2 unit_file=$3 pidfile=$4 cfg=$5
  if [[ "$use_systemd" == yes ]]; then
    if [[ -f "$unit_file" ]]; then
      systemctl disable --now "$unit" >&2 || true
      rm -f -- "$unit_file"
      systemctl daemon-reload
    fi
    return 0
  fi
  local pid _
  pid=$(live_pid_from_file "$pidfile" "$cfg") || { rm -f -- "$pidfile"; return 0; }
  kill -TERM "$pid"
  # Bounded: HAProxy exits promptly on TERM; KILL after 10 s.
  for _ in $(seq 1 100); do
    [[ -d "/proc/$pid" ]] || break
    sleep 0.1
  done
  [[ -d "/proc/$pid" ]] && kill -KILL "$pid"
  rm -f -- "$pidfile"
}

# haproxy_start_or_reload DESCRIPTION USE_SYSTEMD UNIT UNIT_FILE CFG PIDFILE APPLIED PREVIOUS:
# starts the instance, or reloads it without dropping its listeners when APPLIED (a hash of what it
# reads) differs from PREVIOUS. Prints yes when it started, restarted or reloaded, else no.
haproxy_start_or_reload() {
  local description=$1 use_systemd=$2 unit=$3 unit_file=$4 cfg=$5 pidfile=$6 applied=$7 previous=$8 changed=no
  if [[ "$use_systemd" == yes ]]; then
    local haproxy_bin unit_changed=no
    haproxy_bin=$(command -v haproxy)
    install_if_changed "$unit_file" 0644 <<UNIT && unit_changed=yes
[Unit]
Description=$description
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
ExecStartPre=$haproxy_bin -c -q -f $cfg
ExecStart=$haproxy_bin -Ws -f $cfg
ExecReload=$haproxy_bin -c -q -f $cfg
ExecReload=/bin/kill -USR2 \$MAINPID
KillMode=mixed
Restart=always
RestartSec=2s

[Install]
WantedBy=multi-user.target
UNIT
    [[ "$unit_changed" == yes ]] && systemctl daemon-reload
    systemctl enable "$unit" >&2
    if ! systemctl is-active --quiet "$unit"; then
      systemctl start "$unit" >&2; changed=yes
    elif [[ "$unit_changed" == yes ]]; then
      systemctl restart "$unit" >&2; changed=yes
    elif [[ "$applied" != "$previous" ]]; then
      systemctl reload "$unit" >&2; changed=yes
    fi
  else
    local old_pid
    if old_pid=$(live_pid_from_file "$pidfile" "$cfg"); then
      if [[ "$applied" != "$previous" ]]; then
        # The new process binds beside the old one, which stops accepting, finishes and exits.
        haproxy -D -f "$cfg" -p "$pidfile" -sf "$old_pid" >&2
        changed=yes
      fi
    else
      haproxy -D -f "$cfg" -p "$pidfile" >&2
      changed=yes
    fi
  fi
  echo "$changed"
}

# haproxy_wait_tls ADDRESS PORT SECONDS: until the listener completes a TLS handshake (0.0.0.0 is
# probed on loopback); dies after SECONDS.
haproxy_wait_tls() {
  local address=$1 port=$2 seconds=$3 deadline
  [[ "$address" == 0.0.0.0 ]] && address=127.0.0.1
  deadline=$((SECONDS + seconds))
  until timeout 5 openssl s_client -connect "$address:$port" -servername localhost </dev/null >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "HAProxy did not complete a TLS handshake on $address:$port within ${seconds}s"
    sleep 0.2
  done
}
