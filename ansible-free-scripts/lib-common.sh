# shellcheck shell=bash
# Usage: source "$(dirname "${BASH_SOURCE[0]}")/lib-common.sh"   (not run on its own)
#
# The helpers the kit's host scripts share. The sourcing script sets `script_name` first (used in
# messages; `log_name` too when its lines carry a shorter prefix); its usage text is its header
# comment (see usage below); everything here is plain bash with no side effects at source time but
# the readonly EXIT_* names.

# Exit statuses the scripts give the same meaning (each script's header lists its own, and names
# any further ones itself): done, failed, bad usage; `status` of a script running a service of its
# own (gateway, monitoring, token limiter, usage exporter) when that service is not running; and
# the ones a script that traps signals exits with (128 + the signal's number, as bash killed by it).
# shellcheck disable=SC2034 # for the sourcing scripts
if [[ -z "${EXIT_OK+set}" ]]; then
  readonly EXIT_OK=0 EXIT_FAILURE=1 EXIT_USAGE=2 EXIT_NOT_RUNNING=3
  readonly EXIT_SIGHUP=129 EXIT_SIGINT=130 EXIT_SIGTERM=143
fi

# The sourcing script's header comment, from line 2 down to `set -euo`, without the comment marks.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

# Messages and exits ---------------------------------------------------------------------------
# log, die and say prefix their lines with log_name when the script sets one (a short name its
# callers know its lines by), else with script_name; die_usage always names the script file.
log() { echo "${log_name:-${script_name:-kimi-kit}}: $*" >&2; }
die() { log "$*"; exit "$EXIT_FAILURE"; }
die_usage() {
  echo "${script_name:-kimi-kit}: $*" >&2
  echo "Run ${script_name:-this script} --help for usage." >&2
  exit "$EXIT_USAGE"
}
# A progress line on stdout (the scripts whose stdout is read keep key=value lines apart from it).
say() { echo "${log_name:-${script_name:-kimi-kit}}: $*"; }

have() { command -v "$1" >/dev/null 2>&1; }

# Runs COMMAND as root: directly when this is root, else with `sudo -n`; dies when neither works.
as_root() { # command...
  if ((EUID == 0)); then "$@"
  elif have sudo; then sudo -n "$@"
  else die "need root to run '$*' (running as uid $EUID, no sudo)"; fi
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (it changes system configuration)"
}

# Argument checks ------------------------------------------------------------------------------
# The first argument (the action): -h or --help prints the usage and exits 0; anything but one of
# the ACTIONs is bad usage. The caller shifts it off.
need_action() { # value action...
  local value=$1 action list
  shift
  if [[ "$value" == -h || "$value" == --help ]]; then usage; exit "$EXIT_OK"; fi
  for action in "$@"; do [[ "$value" == "$action" ]] && return 0; done
  list=$(printf '%s, ' "${@:1:$#-1}")
  die_usage "the first argument must be ${list%, } or ${!#}"
}

need_value() { # flag remaining-argc
  (($2 >= 2)) || die_usage "$1 needs a value"
}

need_port() { # flag value
  if [[ "$2" =~ ^[1-9][0-9]{0,4}$ ]] && ((10#$2 <= 65535)); then return 0; fi
  die_usage "$1 wants a TCP port 1-65535, got '$2'"
}

# A folder the script makes or writes: an absolute path without spaces.
need_abs_dir() { # flag value
  [[ "$2" == /?* && "$2" != *[[:space:]]* ]] || die_usage "$1 wants an absolute path without spaces, got '$2'"
}

# A number of seconds (at most 9999); the caller reads it as $((10#VALUE)).
need_seconds() { # flag value
  [[ "$2" =~ ^[0-9]{1,4}$ ]] || die_usage "$1 wants seconds, got '$2'"
}

# Where a kit HAProxy's certificate comes from (--tls).
need_tls_source() { # flag value
  [[ "$2" == internal-ca || "$2" == secrets ]] || die_usage "$1 wants internal-ca or secrets, got '$2'"
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

# A name the server certificate carries (--san): a host name or an IPv4 address.
need_san() { # flag value
  [[ "$2" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$ ]] || die_usage "$1 wants a host name or IPv4 address, got '$2'"
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

# wait_until SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds (returns 0) or SECONDS
# have passed (returns 1; the caller says what did not happen).
wait_until() {
  local _wait_deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < _wait_deadline)) || return 1
    sleep 0.2
  done
}

# Whether PID has exited: no such process, or a zombie its (new) parent has not reaped yet.
pid_gone() { # pid
  [[ ! -r "/proc/$1/stat" ]] || [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || true)" =~ ^(Z|X|)$ ]]
}

# Whether PID is no process at all (a zombie is reaped).
pid_reaped() { # pid
  [[ ! -d "/proc/$1" ]]
}

# hold_run_lock LOCKFILE: one run at a time per name. Holds an exclusive lock on LOCKFILE on
# descriptor 9 until the script exits (waiting up to 120 s for another run to finish); daemons that
# service_apply starts do not inherit the descriptor.
hold_run_lock() {
  exec 9>"$1"
  flock -w 120 9 || die "another ${script_name:-kimi-kit script} holds $1"
}

# ------------------------------------------------------------------------ the kit's own services
# monitoring.sh, usage-exporter.sh, gateway.sh and front-door.sh each run one long-lived process of
# their own: a systemd unit of its own (/etc/systemd/system/UNIT) where systemd is PID 1, else a
# daemon with a pid file. A script names its service once with service_init; the other service_*
# functions act on that one.

# service_init MODE UNIT PIDFILE MARKER STOP_SECONDS [LOGFILE]: MODE is auto (a systemd unit when
# systemd is PID 1) or no (--no-systemd: a daemon); MARKER is something only this service's process
# has on its command line (live_pid_from_file); STOP_SECONDS is how long service_stop waits after
# TERM before KILL; LOGFILE takes a daemon's output. Sets service_systemd (yes|no), service_unit,
# service_unit_file, service_pidfile, service_marker, service_stop_seconds and service_logfile.
service_init() {
  service_systemd=$1 service_unit=$2 service_unit_file="/etc/systemd/system/$2" service_pidfile=$3
  service_marker=$4 service_stop_seconds=$5 service_logfile=${6:-/dev/null}
  if [[ "$service_systemd" == auto ]]; then
    if systemd_is_pid1; then service_systemd=yes; else service_systemd=no; fi
  fi
}

# service_common_flag ARG...: the flags monitoring.sh and usage-exporter.sh share, at the head of
# ARG...: --name NAME, --run-dir DIR, --no-systemd and --ready-seconds N, which set the caller's
# name, run_dir, use_systemd and ready_seconds. Sets flag_args to how many arguments it took (the
# caller shifts them off); any other argument is bad usage.
service_common_flag() {
  # shellcheck disable=SC2034 # the caller's variables
  case "$1" in
    --name) need_value "$1" $#; need_name "$1" "$2"; name=$2; flag_args=2 ;;
    --run-dir) need_value "$1" $#; need_abs_dir "$1" "$2"; run_dir=${2%/}; flag_args=2 ;;
    --no-systemd) use_systemd=no; flag_args=1 ;;
    --ready-seconds) need_value "$1" $#; need_seconds "$1" "$2"; ready_seconds=$((10#$2)); flag_args=2 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
}

# service_pid: the running process's pid (the unit's main pid under systemd); fails when none runs.
service_pid() {
  if [[ "$service_systemd" == yes ]]; then
    local pid
    pid=$(systemctl show -p MainPID --value "$service_unit" 2>/dev/null || true)
    [[ "$pid" =~ ^[1-9][0-9]*$ ]] && echo "$pid" && return 0
    return 1
  fi
  live_pid_from_file "$service_pidfile" "$service_marker"
}

# service_stop: stops the service. A unit is disabled and stopped and its file removed; a daemon
# gets TERM, then KILL after STOP_SECONDS, and its pid file goes; it returns once the exited daemon
# is reaped (its parent, init, may reap only every few seconds), or 5 s later (an init that never
# reaps would leave the zombie for good).
service_stop() {
  if [[ "$service_systemd" == yes ]]; then
    if [[ -f "$service_unit_file" ]]; then
      systemctl disable --now "$service_unit" >&2 || true
      rm -f -- "$service_unit_file"
      systemctl daemon-reload
    fi
    return 0
  fi
  local pid
  pid=$(live_pid_from_file "$service_pidfile" "$service_marker") || { rm -f -- "$service_pidfile"; return 0; }
  kill -TERM "$pid"
  wait_until "$service_stop_seconds" pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  wait_until 5 pid_reaped "$pid" || true
  rm -f -- "$service_pidfile"
}

# service_apply_unit DESCRIPTION FILES_CHANGED RELOAD < SERVICE_LINES: installs (or refreshes) the
# unit: DESCRIPTION, the [Service] lines on stdin, wanted by multi-user.target. Then starts it when
# it is not active, restarts it when the unit file changed, and otherwise, when FILES_CHANGED is yes
# (what the process reads changed since the last apply), runs RELOAD: `restart`, `reload` (systemctl
# reload: the unit's ExecReload) or a command run with the main pid. Sets service_changed (yes|no).
service_apply_unit() {
  local _description=$1 _files_changed=$2 _reload=$3 _unit_text _unit_changed=no
  _unit_text=$(
    printf '%s\n' "[Unit]" "Description=$_description" "After=network-online.target" "Wants=network-online.target" "" "[Service]"
    cat
    printf '%s\n' "" "[Install]" "WantedBy=multi-user.target"
  )
  install_if_changed "$service_unit_file" 0644 <<<"$_unit_text" && _unit_changed=yes
  [[ "$_unit_changed" == yes ]] && systemctl daemon-reload
  systemctl enable "$service_unit" >&2
  service_changed=yes
  if ! systemctl is-active --quiet "$service_unit"; then
    systemctl start "$service_unit" >&2
  elif [[ "$_unit_changed" == yes ]] || [[ "$_files_changed" == yes && "$_reload" == restart ]]; then
    systemctl restart "$service_unit" >&2
  elif [[ "$_files_changed" == yes && "$_reload" == reload ]]; then
    systemctl reload "$service_unit" >&2
  elif [[ "$_files_changed" == yes ]]; then
    "$_reload" "$(service_pid)"
  else
    service_changed=no
  fi
}

# service_apply_daemon FILES_CHANGED RELOAD COMMAND...: starts COMMAND as a daemon when none runs,
# restarts it when the running one's command line is not COMMAND, and otherwise, when FILES_CHANGED
# is yes, runs RELOAD: `restart`, `reload` (SIGHUP) or a command run with the pid. Sets
# service_changed (yes|no).
service_apply_daemon() {
  local _files_changed=$1 _reload=$2 _pid
  shift 2
  service_changed=yes
  if ! _pid=$(service_pid); then
    service_start_daemon "$@"
  elif [[ "$(tr '\0' '\n' <"/proc/$_pid/cmdline")" != "$(printf '%s\n' "$@")" ]] || [[ "$_files_changed" == yes && "$_reload" == restart ]]; then
    service_stop
    service_start_daemon "$@"
  elif [[ "$_files_changed" == yes && "$_reload" == reload ]]; then
    kill -HUP "$_pid"
  elif [[ "$_files_changed" == yes ]]; then
    "$_reload" "$_pid"
  else
    service_changed=no
  fi
}

# service_start_daemon COMMAND...: setsid execs COMMAND in a session of its own (no fork: $! is the
# process itself), output appended to LOGFILE, the run lock's descriptor 9 closed; writes the pid file.
service_start_daemon() {
  setsid "$@" </dev/null >>"$service_logfile" 2>&1 9>&- &
  echo $! >"$service_pidfile"
}

# service_apply DESCRIPTION FILES_CHANGED RELOAD COMMAND... < SERVICE_LINES: service_apply_unit
# under systemd (the [Service] lines name COMMAND in ExecStart), else service_apply_daemon.
service_apply() {
  local _description=$1
  shift
  if [[ "$service_systemd" == yes ]]; then
    service_apply_unit "$_description" "$1" "$2"
  else
    service_apply_daemon "$@"
  fi
}

# service_wait_ready SECONDS WHAT LATE_MESSAGE CHECK...: waits until CHECK succeeds; dies with
# LATE_MESSAGE after SECONDS, or at once (with the end of its log) when the daemon has exited.
service_wait_ready() {
  local _seconds=$1 _what=$2 _late=$3
  shift 3
  wait_until "$_seconds" service_ready_or_exited "$_what" "$@" || die "$_late"
}

# service_ready_or_exited WHAT CHECK...: CHECK's result; dies when the daemon is not running.
service_ready_or_exited() {
  local _what=$1
  shift
  "$@" && return 0
  if [[ "$service_systemd" == no ]] && ! service_pid >/dev/null; then
    tail -n 20 "$service_logfile" >&2 || true
    die "$_what exited (log: $service_logfile)"
  fi
  return 1
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

# Runs one of the kit's own programs as the service service_init named: FROM installed as JS (0644),
# `node JS ARGS...` started, and restarted when the file or the command line changed (node reads
# the file once). The unit's [Service] holds ExecStart, Restart=always and the hardening every
# program gets, then the lines on stdin. Sets service_changed, and kit_program_applied to the hash
# the caller stores (in APPLIED_FILE) once the program answers.
kit_program_service() { # description node_bin from js applied_file -- args...
  local description=$1 node_bin=$2 from=$3 js=$4 applied_file=$5 file_changed=no files_changed=no previous extra
  shift 5
  [[ "${1:-}" == -- ]] && shift
  extra=$(cat)
  install_if_changed "$js" 0644 <"$from" && file_changed=yes
  kit_program_applied=$({ cat "$js"; printf '%s\n' "$node_bin" "$js" "$@"; } | sha256sum | cut -d' ' -f1)
  previous=$(cat "$applied_file" 2>/dev/null || true)
  [[ "$file_changed" == yes || "$kit_program_applied" != "$previous" ]] && files_changed=yes
  service_apply "$description" "$files_changed" restart "$node_bin" "$js" "$@" <<SERVICE
ExecStart=$node_bin $js $*
Restart=always
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectHome=yes
$extra
SERVICE
}

# The node that runs one of the kit's own programs (a JavaScript file made by components/exec/host-programs.ts):
# Debian's nodejs when `node` is missing, Node 18 or later; FILE must contain MARKER (it is that
# program) and parse. Prints node's path; dies naming the flag otherwise.
kit_program_node() { # flag file marker program-name
  local node_bin
  if ! have node; then
    apt_install_missing nodejs >/dev/null
    have node || die "node is missing after installing the nodejs package"
  fi
  node_bin=$(command -v node)
  "$node_bin" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
    || die "$node_bin is Node $("$node_bin" --version 2>/dev/null || echo '?'); the $4 needs Node 18 or later"
  grep -q -- "$3" "$2" || die "$1 $2 is not the $4 (no $3 in it); make it with hostProgramJavaScript()"
  "$node_bin" --check "$2" >&2 || die "$1 $2 is not valid JavaScript for $node_bin"
  echo "$node_bin"
}

# ---------------------------------------------------------------- the kit's own HAProxy instances
# front-door.sh and gateway.sh each run one HAProxy of their own as their service (service_init;
# MARKER: the configuration file). Never the Debian haproxy.service.

# haproxy_start_or_reload DESCRIPTION CFG FILES_CHANGED: starts the instance, or reloads it without
# dropping its listeners when FILES_CHANGED is yes (what it reads changed since the last apply).
# Prints yes when it started, restarted or reloaded, else no.
haproxy_start_or_reload() {
  local description=$1 cfg=$2 files_changed=$3 old_pid
  if [[ "$service_systemd" == yes ]]; then
    local haproxy_bin
    haproxy_bin=$(command -v haproxy)
    service_apply_unit "$description" "$files_changed" reload <<SERVICE
Type=notify
ExecStartPre=$haproxy_bin -c -q -f $cfg
ExecStart=$haproxy_bin -Ws -f $cfg
ExecReload=$haproxy_bin -c -q -f $cfg
ExecReload=/bin/kill -USR2 \$MAINPID
KillMode=mixed
Restart=always
RestartSec=2s
SERVICE
  elif old_pid=$(service_pid); then
    service_changed=no
    if [[ "$files_changed" == yes ]]; then
      # The new process binds beside the old one, which stops accepting, finishes and exits.
      haproxy -D -f "$cfg" -p "$service_pidfile" -sf "$old_pid" >&2
      service_changed=yes
    fi
  else
    haproxy -D -f "$cfg" -p "$service_pidfile" >&2
    service_changed=yes
  fi
  echo "$service_changed"
}

# Whether ADDRESS:PORT completes a TLS handshake.
tls_handshake_ok() { # address port
  timeout 5 openssl s_client -connect "$1:$2" -servername localhost </dev/null >/dev/null 2>&1
}

# haproxy_wait_tls ADDRESS PORT SECONDS: until the listener completes a TLS handshake (0.0.0.0 is
# probed on loopback); dies after SECONDS.
haproxy_wait_tls() {
  local address=$1 port=$2 seconds=$3
  [[ "$address" == 0.0.0.0 ]] && address=127.0.0.1
  wait_until "$seconds" tls_handshake_ok "$address" "$port" \
    || die "HAProxy did not complete a TLS handshake on $address:$port within ${seconds}s"
}

# ----------------------------------------------------------------- TLS of the kit's own HAProxies
# front-door.sh and gateway.sh keep their certificate in DIR/server.pem (the chain, then the private
# key: HAProxy's crt layout), from one of two sources (--tls): an internal CA kept beside it, or a
# PEM the operator hands over on stdin. WORK is a private scratch folder (0700) the caller removes.

# tls_internal_ca DIR WORK OWNER CA_COMMON_NAME NAME...: a CA made once and kept (DIR/ca.key,
# DIR/ca.crt, ten years) and a server certificate it signs for the NAMEs (host names or IPv4
# addresses; sorted, duplicates dropped; listed in DIR/server.names), issued anew only when it is
# missing, its names changed, it expires within 30 days or the CA did not sign it.
tls_internal_ca() {
  local dir=$1 work=$2 owner=$3 ca_common_name=$4
  shift 4
  local ca_key="$dir/ca.key" ca_crt="$dir/ca.crt" pem="$dir/server.pem" san_list san_ext entry reissue=no
  if [[ ! -s "$ca_key" || ! -s "$ca_crt" ]]; then
    log "creating the internal CA for $owner"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
      -subj "/CN=$ca_common_name" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null || die "openssl could not create the internal CA"
    chmod 0600 "$work/ca.key" "$work/ca.crt"
    mv -f -- "$work/ca.key" "$ca_key"
    mv -f -- "$work/ca.crt" "$ca_crt"
    rm -f -- "$pem"
  fi
  san_list=$(printf '%s\n' "$@" | sort -u)
  san_ext=$(while read -r entry; do if is_ipv4 "$entry"; then echo "IP:$entry"; else echo "DNS:$entry"; fi; done <<<"$san_list" | paste -sd, -)
  if [[ ! -s "$pem" ]] || [[ "$(cat "$dir/server.names" 2>/dev/null || true)" != "$san_list" ]]; then
    reissue=yes
  elif ! openssl x509 -in "$pem" -noout -checkend 2592000 >/dev/null 2>&1 || ! openssl verify -CAfile "$ca_crt" "$pem" >/dev/null 2>&1; then
    reissue=yes
  fi
  [[ "$reissue" == yes ]] || return 0
  log "issuing the server certificate for: $(paste -sd' ' - <<<"$san_list")"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$san_ext" >"$work/server.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/CN=$(head -n1 <<<"$san_list")" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null \
    || die "openssl could not create the server key"
  openssl x509 -req -sha256 -days 397 -in "$work/server.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null \
    || die "openssl could not sign the server certificate"
  cat "$work/server.crt" "$work/server.key" | install_if_changed "$pem" 0600 || true
  rm -f -- "$work/server.key"
  printf '%s\n' "$san_list" | install_if_changed "$dir/server.names" 0600 || true
}

# tls_secrets_pem DIR WORK INPUT: installs the certificate chain and unencrypted private key in the
# PEM file INPUT (what arrived on stdin) as DIR/server.pem after checking that the key belongs to the
# first certificate and that it has not expired; drops an internal CA kept in DIR.
tls_secrets_pem() {
  local dir=$1 work=$2 input=$3 cert_pub key_pub
  openssl x509 -in "$input" -noout 2>/dev/null || die "--tls secrets: stdin holds no PEM certificate (expected the certificate chain and its private key)"
  openssl pkey -in "$input" -out "$work/input.key" 2>/dev/null || die "--tls secrets: stdin holds no unencrypted PEM private key"
  cert_pub=$(openssl x509 -in "$input" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)
  key_pub=$(openssl pkey -in "$work/input.key" -pubout -outform DER | sha256sum)
  [[ "$cert_pub" == "$key_pub" ]] || die "--tls secrets: the private key does not belong to the (first) certificate"
  openssl x509 -in "$input" -noout -checkend 0 >/dev/null || die "--tls secrets: the certificate has expired"
  # Every certificate of the chain, in order, then the key (HAProxy's crt file layout).
  { awk '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/' "$input"; cat "$work/input.key"; } \
    | install_if_changed "$dir/server.pem" 0600 || true
  rm -f -- "$work/input.key" "$dir/ca.key" "$dir/ca.crt" "$dir/server.names"
}

# tls_certificate_sha256 PEM: the SHA-256 fingerprint of the (first) certificate: hex digits, no colons.
tls_certificate_sha256() {
  openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d :
}

# tls_ca_base64 DIR: the internal CA's certificate (PEM), base64 on one line.
tls_ca_base64() {
  base64 -w0 <"$1/ca.crt"
}
