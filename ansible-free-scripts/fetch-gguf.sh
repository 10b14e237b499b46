#!/usr/bin/env bash
# fetch-gguf.sh: download the shards of a GGUF model from Hugging Face (or a mirror that serves the
# same URLs) onto this host, check every shard's sha256, and make re-runs cheap and safe.
# Needs bash, coreutils, curl, flock, sha256sum, df; python3 only for --resolve; lib-common.sh beside it.
set -euo pipefail

PROG=${0##*/}
readonly PROG
export script_name=$PROG
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# (SC1091: a plain `shellcheck fetch-gguf.sh`, without -x, does not follow it.)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh disable=SC1091
source "$script_dir/lib-common.sh"
# Beside lib-common's EXIT_OK, EXIT_FAILURE, EXIT_USAGE and EXIT_SIG*: this script's own.
readonly EXIT_MANIFEST=3 EXIT_DISK=4 EXIT_VERIFY=5 EXIT_DOWNLOAD=6 EXIT_LOCKED=7

# Replaces lib-common's usage (this script's header is no usage text).
usage() {
  cat <<EOF
Usage: $PROG --dest DIR --base-url URL --repo OWNER/NAME [--revision REV]
         (--manifest FILE | --resolve FOLDER)
         [--connections N] [--token-stdin] [--reverify] [--progress-seconds S]
         [--attempts N] [--retry-delay S] [--retry-max-delay S]
         [--min-rate-bytes-per-second B] [--stall-seconds S]

Downloads the GGUF shards of a model repository into DIR and verifies each one's sha256.
Safe to re-run: verified shards are skipped without hashing, interrupted downloads resume
from their .partial file, and nothing but the listed shards' files is ever touched in DIR.

  --dest DIR            where the shards go: DIR/<path in repo>
  --base-url URL        e.g. https://huggingface.co (or a mirror with the same URL layout);
                        shard URL = URL/OWNER/NAME/resolve/REV/<path>
  --repo OWNER/NAME     e.g. unsloth/Kimi-K2.6-GGUF
  --revision REV        branch, tag or commit (default: main)
  --manifest FILE       TSV lines "sha256<TAB>size_bytes<TAB>path", path relative to the repo
                        root; blank lines and lines starting with # are ignored
  --resolve FOLDER      build the manifest from URL/api/models/OWNER/NAME/tree/REV/FOLDER:
                        every *.gguf file in FOLDER with its LFS sha256 (needs python3);
                        the resolved manifest is printed
  --connections N       download up to N shards at a time, in parallel, one connection per
                        shard (default: 4)
  --token-stdin         read a Hugging Face token (one line) from stdin; curl gets it on a
                        pipe (a curl config on /dev/fd), never in a file, argv or environment
  --reverify            re-hash shards even when their .verified sidecar matches
  --progress-seconds S  every S seconds print a progress line per active download and a
                        total line, with rate and ETA (default: 10)
  --attempts N          tries per shard in a row before giving up (default: 5); a dropped or
                        stalled transfer resumes from its .partial after a backoff; a try that
                        added at least B*S bytes (see below) starts the count again. HTTP
                        401/403/404 and other 4xx answers are never retried
  --retry-delay S       backoff before the first retry, doubled for each further one (default: 2)
  --retry-max-delay S   longest backoff (default: 60)
  --min-rate-bytes-per-second B
                        abort a transfer that runs below B bytes/s ... (default: 1024)
  --stall-seconds S     ... for S seconds in a row, then retry it (default: 60)
  -h, --help            show this help

Files per shard PATH: DIR/PATH (only ever a verified shard), DIR/PATH.verified (sidecar
"sha256 size mtime"), DIR/PATH.partial (download in progress), DIR/PATH.bad (the last file
that failed verification, kept for inspection). DIR/.fetch-gguf.lock keeps runs apart.
The last output line is "FETCH_GGUF_RESULT verified=K downloaded_bytes=B".

Exit codes:
  0  all shards verified             1  other error (missing tool, I/O error)
  2  usage error                     3  bad manifest, or --resolve failed
  4  not enough free disk space      5  a shard failed verification twice
     (before the first byte, or the disk filled up: the .partial is kept)
  6  a download failed               7  another run holds the lock on DIR
EOF
}

# Replaces lib-common's say: this script's stdout lines carry no prefix. Errors go through
# lib-common's log ("fetch-gguf.sh: ..." on stderr).
say() { printf '%s\n' "$*"; }
die_with() { # die_with EXIT_CODE MESSAGE...
  local code=$1
  shift
  log "error: $*"
  exit "$code"
}
usage_error() {
  log "$*"
  usage >&2
  exit "$EXIT_USAGE"
}

# ---------------------------------------------------------------------------- arguments
DEST='' BASE_URL='' REPO='' REVISION=main MANIFEST='' RESOLVE='' CONNECTIONS=4
TOKEN_STDIN=0 REVERIFY=0 PROGRESS_SECONDS=10
ATTEMPTS=5 RETRY_DELAY=2 RETRY_MAX_DELAY=60 MIN_RATE=1024 STALL_SECONDS=60
HAVE_MANIFEST=0 HAVE_RESOLVE=0

args=()
for a in "$@"; do
  case $a in
    --*=*) args+=("${a%%=*}" "${a#*=}") ;;
    *) args+=("$a") ;;
  esac
done
set -- "${args[@]}"

value_of() { # value_of FLAG ARGC [VALUE]
  [[ $2 -ge 2 ]] || usage_error "$1 needs a value"
}
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit "$EXIT_OK" ;;
    --dest) value_of "$1" $#; DEST=$2; shift 2 ;;
    --base-url) value_of "$1" $#; BASE_URL=$2; shift 2 ;;
    --repo) value_of "$1" $#; REPO=$2; shift 2 ;;
    --revision) value_of "$1" $#; REVISION=$2; shift 2 ;;
    --manifest) value_of "$1" $#; MANIFEST=$2; HAVE_MANIFEST=1; shift 2 ;;
    --resolve) value_of "$1" $#; RESOLVE=$2; HAVE_RESOLVE=1; shift 2 ;;
    --connections) value_of "$1" $#; CONNECTIONS=$2; shift 2 ;;
    --progress-seconds) value_of "$1" $#; PROGRESS_SECONDS=$2; shift 2 ;;
    --attempts) value_of "$1" $#; ATTEMPTS=$2; shift 2 ;;
    --retry-delay) value_of "$1" $#; RETRY_DELAY=$2; shift 2 ;;
    --retry-max-delay) value_of "$1" $#; RETRY_MAX_DELAY=$2; shift 2 ;;
    --min-rate-bytes-per-second) value_of "$1" $#; MIN_RATE=$2; shift 2 ;;
    --stall-seconds) value_of "$1" $#; STALL_SECONDS=$2; shift 2 ;;
    --token-stdin) TOKEN_STDIN=1; shift ;;
    --reverify) REVERIFY=1; shift ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done

[[ -n $DEST ]] || usage_error "--dest is required"
[[ -n $BASE_URL ]] || usage_error "--base-url is required"
[[ -n $REPO ]] || usage_error "--repo is required"
[[ $BASE_URL =~ ^https?://[^[:space:]]+$ ]] || usage_error "--base-url must be an http(s) URL: $BASE_URL"
while [[ $BASE_URL == */ ]]; do BASE_URL=${BASE_URL%/}; done
[[ $REPO =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
  usage_error "--repo must look like OWNER/NAME: $REPO"
[[ $REVISION =~ ^[A-Za-z0-9._/-]+$ && $REVISION != *..* ]] || usage_error "bad --revision: $REVISION"
((HAVE_MANIFEST + HAVE_RESOLVE == 1)) || usage_error "give exactly one of --manifest FILE or --resolve FOLDER"
[[ $CONNECTIONS =~ ^[1-9][0-9]?$ ]] || usage_error "--connections must be an integer from 1 to 99: $CONNECTIONS"
[[ $PROGRESS_SECONDS =~ ^[1-9][0-9]{0,5}$ ]] || usage_error "--progress-seconds must be a positive integer: $PROGRESS_SECONDS"
[[ $ATTEMPTS =~ ^[1-9][0-9]?$ ]] || usage_error "--attempts must be an integer from 1 to 99: $ATTEMPTS"
[[ $RETRY_DELAY =~ ^(0|[1-9][0-9]{0,3})$ ]] || usage_error "--retry-delay must be a number of seconds from 0 to 9999: $RETRY_DELAY"
[[ $RETRY_MAX_DELAY =~ ^(0|[1-9][0-9]{0,3})$ ]] || usage_error "--retry-max-delay must be a number of seconds from 0 to 9999: $RETRY_MAX_DELAY"
[[ $MIN_RATE =~ ^[1-9][0-9]{0,9}$ ]] || usage_error "--min-rate-bytes-per-second must be a positive integer: $MIN_RATE"
[[ $STALL_SECONDS =~ ^[1-9][0-9]{0,4}$ ]] || usage_error "--stall-seconds must be a positive integer of seconds: $STALL_SECONDS"

# A path relative to the repository root: no leading /, no empty, "." or ".." component.
valid_relpath() {
  local p=$1 part
  [[ -n $p && $p != /* && $p != */ && $p != *[[:cntrl:]]* ]] || return 1
  local IFS=/
  for part in $p; do
    [[ -n $part && $part != . && $part != .. ]] || return 1
  done
  [[ $p != */.fetch-gguf.lock && $p != .fetch-gguf.lock ]]
}
if ((HAVE_RESOLVE)) && [[ $RESOLVE != . ]]; then
  RESOLVE=${RESOLVE%/}
  valid_relpath "$RESOLVE" || usage_error "--resolve needs a folder relative to the repo root (or .): $RESOLVE"
fi

for tool in curl flock sha256sum df stat date mktemp mv; do
  have "$tool" || die_with "$EXIT_FAILURE" "$tool is required but not installed"
done
if ((HAVE_RESOLVE)); then
  have python3 || die_with "$EXIT_FAILURE" "--resolve needs python3 (or pass --manifest FILE)"
fi

# ---------------------------------------------------------------------------- work dir, traps
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-gguf.XXXXXX")
declare -A RUNNING=() # worker pid -> shard index
CHILD=''              # the long-running child of this shell (curl, sha256sum, sleep), if any
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM HUP
  if [[ -n $CHILD ]]; then kill -TERM "$CHILD" 2>/dev/null || true; fi
  for pid in "${!RUNNING[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${!RUNNING[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit "$EXIT_SIGINT"' INT
trap 'exit "$EXIT_SIGTERM"' TERM
trap 'exit "$EXIT_SIGHUP"' HUP

# The token lives only in this shell's memory (never exported): curl reads it from a curl
# config on a pipe (process substitution, /dev/fd/N), written by the printf builtin in a forked
# subshell. It is never in a file, in any process's argv or in any environment.
TOKEN=''
if ((TOKEN_STDIN)); then
  if [[ -t 0 ]]; then
    IFS= read -r -s -p "Hugging Face token: " TOKEN || true
    echo >&2
  else
    IFS= read -r TOKEN || true
  fi
  TOKEN=${TOKEN//[[:space:]]/}
  [[ -n $TOKEN ]] || usage_error "--token-stdin: no token on stdin"
  TOKEN=${TOKEN//\\/\\\\} # escaped for a double-quoted curl config value
  TOKEN=${TOKEN//\"/\\\"}
fi
auth_config() { printf 'header = "Authorization: Bearer %s"\n' "$TOKEN"; }

# run_curl OUT ERR ARGS...: curl ARGS in the background (so a TERM to this shell can stop it,
# see worker_setup), stdout to OUT, stderr to ERR; with --token-stdin the token goes on a pipe.
run_curl() {
  local out=$1 errf=$2 rc=0
  shift 2
  if [[ -n $TOKEN ]]; then
    curl --config <(auth_config) "$@" >"$out" 2>"$errf" &
  else
    curl "$@" >"$out" 2>"$errf" &
  fi
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=''
  return "$rc"
}

# ---------------------------------------------------------------------------- helpers
urlencode_path() {
  local LC_ALL=C s=$1 out='' c v i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~/-]) out+=$c ;;
      *) printf -v v '%d' "'$c"; printf -v c '%%%02X' $((v & 255)); out+=$c ;;
    esac
  done
  printf '%s' "$out"
}
REV_ENC=${REVISION//\//%2F}

file_size() { stat -c %s -- "$1"; }
file_mtime() { date -r "$1" +%s.%N; }
now_us() { local t=${EPOCHREALTIME//[.,]/}; printf '%s' "$((10#$t))"; }

# "12.3 GiB" (or MiB / KiB / B when smaller); $2 picks the unit from another number.
human() {
  local b=$1 ref=${2:-$1} unit=1073741824 name=GiB
  if ((ref < 1024)); then printf '%d B' "$b"; return; fi
  if ((ref < 1048576)); then unit=1024 name=KiB
  elif ((ref < 1073741824)); then unit=1048576 name=MiB; fi
  local tenths=$(((b * 10 + unit / 2) / unit))
  printf '%d.%d %s' $((tenths / 10)) $((tenths % 10)) "$name"
}
gib() {
  local tenths=$((($1 * 10 + 536870912) / 1073741824))
  printf '%d.%d GiB' $((tenths / 10)) $((tenths % 10))
}

# Runs a long command in the background and waits for it, so a TERM to a worker can stop it too.
run_child() {
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=''
  return "$rc"
}
worker_setup() {
  trap - EXIT INT HUP
  trap 'if [[ -n $CHILD ]]; then kill -TERM "$CHILD" 2>/dev/null || true; fi; exit "$EXIT_SIGTERM"' TERM
}

SHA_RESULT=''
sha256_of() { # sha256_of FILE TAG -> sets SHA_RESULT (no $(...): a TERM must reach sha256sum)
  local out="$WORK/sha.$2" digest _
  run_child sha256sum -- "$1" >"$out"
  read -r digest _ <"$out"
  rm -f -- "$out"
  SHA_RESULT=${digest#\\}
}

write_sidecar() { # FINAL SHA SIZE
  local mtime
  mtime=$(file_mtime "$1")
  printf '%s %s %s\n' "$2" "$3" "$mtime" >"$1.verified.tmp"
  mv -f -- "$1.verified.tmp" "$1.verified"
}
sidecar_matches() { # FINAL SHA SIZE
  local s_sha='' s_size='' s_mtime='' _rest
  [[ -f $1.verified ]] || return 1
  read -r s_sha s_size s_mtime _rest <"$1.verified" || true
  [[ $s_sha == "$2" && $s_size == "$3" ]] || return 1
  [[ $(file_size "$1") == "$3" && $(file_mtime "$1") == "$s_mtime" ]]
}

free_bytes() { # free_bytes DIR: bytes available to us on DIR's (or its nearest existing parent's) fs
  local d=$1 _header avail=''
  while [[ ! -d $d ]]; do d=$(dirname -- "$d"); done
  { read -r _header && read -r avail; } < <(df --output=avail -B1 -- "$d")
  avail=${avail//[[:space:]]/}
  [[ $avail =~ ^[0-9]+$ ]] || die_with "$EXIT_FAILURE" "could not read free space of $d from df"
  printf '%s' "$avail"
}

# ---------------------------------------------------------------------------- manifest
SHAS=() SIZES=() PATHS=()
parse_manifest() { # FILE LABEL
  local file=$1 label=$2 line n=0 sha size path
  local re=$'^([^\t]*)\t([^\t]*)\t([^\t]*)$'
  local -A seen=()
  [[ -f $file && -r $file ]] || die_with "$EXIT_MANIFEST" "manifest $file does not exist or is not readable"
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*$ || $line =~ ^[[:space:]]*# ]] && continue
    [[ $line =~ $re ]] ||
      die_with "$EXIT_MANIFEST" "$label line $n: expected sha256<TAB>size_bytes<TAB>path: $line"
    sha=${BASH_REMATCH[1],,} size=${BASH_REMATCH[2]} path=${BASH_REMATCH[3]}
    [[ $sha =~ ^[0-9a-f]{64}$ ]] || die_with "$EXIT_MANIFEST" "$label line $n: not a sha256 (64 hex digits): $line"
    [[ $size =~ ^[0-9]{1,17}$ ]] || die_with "$EXIT_MANIFEST" "$label line $n: size is not a byte count: $line"
    valid_relpath "$path" ||
      die_with "$EXIT_MANIFEST" "$label line $n: path must be relative to the repo root, without '..': $line"
    [[ -z ${seen[$path]:-} ]] || die_with "$EXIT_MANIFEST" "$label line $n: $path is listed twice: $line"
    seen[$path]=1
    SHAS+=("$sha") SIZES+=($((10#$size))) PATHS+=("$path")
  done <"$file"
  ((${#PATHS[@]} > 0)) || die_with "$EXIT_MANIFEST" "$label lists no shards"
}

resolve_manifest() { # -> writes $WORK/manifest.tsv
  local folder_url='' url code rc=0 detail
  [[ $RESOLVE == . ]] || folder_url="/$(urlencode_path "$RESOLVE")"
  url="$BASE_URL/api/models/$REPO/tree/$REV_ENC$folder_url"
  run_curl "$WORK/tree.code" "$WORK/tree.err" -sS -L --retry 3 --connect-timeout 30 --max-time 300 \
    --speed-limit "$MIN_RATE" --speed-time "$STALL_SECONDS" \
    -o "$WORK/tree.json" -w '%{http_code}' -- "$url" || rc=$?
  code=$(<"$WORK/tree.code")
  detail=$(<"$WORK/tree.err")
  detail=${detail//$'\n'/ }
  if ((rc != 0)); then
    die_with "$EXIT_MANIFEST" "cannot list folder $RESOLVE: $url unreachable (curl exit $rc, HTTP ${code:-000})${detail:+: $detail}"
  fi
  case $code in
    200) ;;
    401 | 403) die_with "$EXIT_MANIFEST" "cannot list folder $RESOLVE: HTTP $code from $url: the Hugging Face token is missing or wrong (pass one that can read $REPO with --token-stdin)" ;;
    404) die_with "$EXIT_MANIFEST" "cannot list folder $RESOLVE: HTTP 404 from $url: no such repo, revision $REVISION or folder" ;;
    *) die_with "$EXIT_MANIFEST" "cannot list folder $RESOLVE: HTTP $code from $url" ;;
  esac
  python3 - "$WORK/tree.json" "$RESOLVE" "$url" >"$WORK/manifest.tsv" <<'PY' || exit "$EXIT_MANIFEST"
import json, re, sys

tree, folder, url = sys.argv[1:4]

def fail(msg):
    print(f"fetch-gguf.sh: error: {msg}", file=sys.stderr)
    sys.exit(3)

try:
    with open(tree, encoding="utf-8") as f:
        entries = json.load(f)
except ValueError as e:
    fail(f"folder {folder}: {url} did not return JSON: {e}")
if not isinstance(entries, list):
    fail(f"folder {folder}: {url} did not return a JSON array")
rows = []
for e in entries:
    if not isinstance(e, dict) or e.get("type") != "file":
        continue
    path = e.get("path")
    if not isinstance(path, str) or not path.endswith(".gguf"):
        continue
    lfs = e.get("lfs") if isinstance(e.get("lfs"), dict) else {}
    oid, size = lfs.get("oid"), lfs.get("size", e.get("size"))
    if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", oid):
        fail(f"folder {folder}: {path} has no LFS sha256 in {url}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        fail(f"folder {folder}: {path} has no size in {url}")
    if any(c in path for c in "\t\r\n"):
        fail(f"folder {folder}: unusable file name {path!r} in {url}")
    rows.append((oid.lower(), size, path))
if not rows:
    fail(f"folder {folder}: no .gguf files listed at {url}")
for sha, size, path in sorted(rows, key=lambda r: r[2]):
    print(f"{sha}\t{size}\t{path}")
PY
  local n=0 total=0 line
  while IFS=$'\t' read -r _ line _; do n=$((n + 1)) total=$((total + line)); done <"$WORK/manifest.tsv"
  say "# manifest resolved from $url: $n shard(s), $total bytes ($(human "$total"))"
  while IFS= read -r line; do say "$line"; done <"$WORK/manifest.tsv"
}

if ((HAVE_RESOLVE)); then
  resolve_manifest
  parse_manifest "$WORK/manifest.tsv" "resolved manifest"
else
  parse_manifest "$MANIFEST" "manifest $MANIFEST"
fi
K=${#PATHS[@]}
TOTAL_BYTES=0
for s in "${SIZES[@]}"; do TOTAL_BYTES=$((TOTAL_BYTES + s)); done

# ---------------------------------------------------------------------------- lock
mkdir -p -- "$DEST" || die_with "$EXIT_FAILURE" "cannot create $DEST"
exec 9>>"$DEST/.fetch-gguf.lock"
flock -n 9 || die_with "$EXIT_LOCKED" "another fetch-gguf.sh run is already working in $DEST (it holds $DEST/.fetch-gguf.lock); wait for it to finish or stop it, then re-run"

say "fetch-gguf: $REPO@$REVISION -> $DEST: $K shard(s), $TOTAL_BYTES bytes ($(human "$TOTAL_BYTES"))"

# ---------------------------------------------------------------------------- worker pool
# run_pool FUNC SHOW_PROGRESS INDEX... runs FUNC INDEX in background workers, up to
# $CONNECTIONS at a time. On the first failure no new worker starts and the running ones are
# stopped (downloads keep their .partial); POOL_RC holds that first failure's exit code.
POOL_RC=0
declare -A PREV_BYTES=() PREV_T=()
TOTAL_PREV_BYTES=-1 TOTAL_PREV_T=0
progress_bytes() { # bytes of shard $1 on disk so far
  local p="$DEST/${PATHS[$1]}"
  if [[ -f $p.partial ]]; then file_size "$p.partial"
  elif [[ -f $p ]]; then file_size "$p"
  else printf 0; fi
}
human_rate() { printf '%s/s' "$(human "$1")"; } # bytes per second
eta() {                                             # eta REMAINING_BYTES BYTES_PER_SECOND
  local s
  if (($2 <= 0)); then printf -- '--:--'; return; fi
  s=$((($1 + $2 - 1) / $2))
  if ((s >= 3600)); then printf '%d:%02d:%02d' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
  else printf '%d:%02d' $((s / 60)) $((s % 60)); fi
}
ON_DISK=0 DONE_SHARDS=0
total_on_disk() { # -> ON_DISK: bytes of the model on disk (verified shards count whole), DONE_SHARDS
  local i b
  ON_DISK=0 DONE_SHARDS=0
  for ((i = 0; i < K; i++)); do
    if [[ -e $WORK/verified.$i || -e $WORK/fetched.$i ]]; then
      ON_DISK=$((ON_DISK + SIZES[i])) DONE_SHARDS=$((DONE_SHARDS + 1))
      continue
    fi
    b=$(progress_bytes "$i" 2>/dev/null) || b=0
    ((b <= SIZES[i])) || b=${SIZES[i]}
    ON_DISK=$((ON_DISK + b))
  done
}
# One line per running download and one for the whole model:
#   [3/4] PATH 1.2 MiB / 4.0 MiB (30%) 256.0 KiB/s ETA 0:11
#   total: 9.1 MiB / 15.0 MiB (60%) 1.2 MiB/s ETA 0:05, 2 of 4 shard(s) verified
# Rates are over the last interval; ETA = what is left at that rate.
print_progress() {
  local pid i b t dt rate pct size all
  t=$(now_us)
  for pid in "${!RUNNING[@]}"; do
    i=${RUNNING[$pid]}
    size=${SIZES[i]}
    b=$(progress_bytes "$i" 2>/dev/null) || b=0
    ((b <= size)) || b=$size
    dt=$((t - PREV_T[$i]))
    ((dt > 0)) || dt=1
    rate=$(((b - PREV_BYTES[$i]) * 1000000 / dt))
    ((rate >= 0)) || rate=0
    pct=100
    ((size == 0)) || pct=$((b * 100 / size))
    say "[$((i + 1))/$K] ${PATHS[i]} $(human "$b" "$size") / $(human "$size") ($pct%) $(human_rate "$rate") ETA $(eta $((size - b)) "$rate")"
    PREV_BYTES[$i]=$b PREV_T[$i]=$t
  done
  total_on_disk
  all=$ON_DISK
  rate=0
  if ((TOTAL_PREV_BYTES >= 0)); then
    dt=$((t - TOTAL_PREV_T))
    ((dt > 0)) || dt=1
    rate=$(((all - TOTAL_PREV_BYTES) * 1000000 / dt))
    ((rate >= 0)) || rate=0
  fi
  pct=100
  ((TOTAL_BYTES == 0)) || pct=$((all * 100 / TOTAL_BYTES))
  say "total: $(human "$all" "$TOTAL_BYTES") / $(human "$TOTAL_BYTES") ($pct%) $(human_rate "$rate") ETA $(eta $((TOTAL_BYTES - all)) "$rate"), $DONE_SHARDS of $K shard(s) verified"
  TOTAL_PREV_BYTES=$all TOTAL_PREV_T=$t
}
run_pool() {
  local func=$1 show_progress=$2
  shift 2
  local queue=("$@") next=0 pid other rc i last_tick now
  POOL_RC=0
  last_tick=$(now_us)
  if ((show_progress)); then
    total_on_disk
    TOTAL_PREV_BYTES=$ON_DISK TOTAL_PREV_T=$last_tick
  fi
  while ((next < ${#queue[@]} || ${#RUNNING[@]} > 0)); do
    while ((POOL_RC == 0 && next < ${#queue[@]} && ${#RUNNING[@]} < CONNECTIONS)); do
      i=${queue[next]}
      next=$((next + 1))
      if ((show_progress)); then
        PREV_BYTES[$i]=$(progress_bytes "$i" 2>/dev/null || printf 0)
        PREV_T[$i]=$(now_us)
      fi
      (worker_setup; "$func" "$i") &
      RUNNING[$!]=$i
    done
    sleep 0.2
    for pid in "${!RUNNING[@]}"; do
      kill -0 "$pid" 2>/dev/null && continue
      unset "RUNNING[$pid]"
      rc=0
      wait "$pid" || rc=$?
      if ((rc != 0 && POOL_RC == 0)); then
        POOL_RC=$rc
        next=${#queue[@]}
        for other in "${!RUNNING[@]}"; do kill -TERM "$other" 2>/dev/null || true; done
      fi
    done
    now=$(now_us)
    if ((show_progress && POOL_RC == 0 && now - last_tick >= PROGRESS_SECONDS * 1000000)); then
      print_progress
      last_tick=$now
    fi
  done
}

# ---------------------------------------------------------------------------- existing files
# Worker: re-hash a final file that has no matching sidecar (or --reverify).
verify_existing() {
  local i=$1 tag="[$(($1 + 1))/$K] ${PATHS[$1]}" final="$DEST/${PATHS[$1]}" sha=${SHAS[$1]} size=${SIZES[$1]}
  local have found
  have=$(file_size "$final")
  rm -f -- "$final.verified"
  if ((have != size)); then
    say "$tag: has $have bytes but the manifest says $size: moving it to $final.bad, will fetch again"
    mv -f -- "$final" "$final.bad"
    return 0
  fi
  say "$tag: hashing the existing file ($(human "$size"))"
  sha256_of "$final" "$i"
  found=$SHA_RESULT
  if [[ $found == "$sha" ]]; then
    write_sidecar "$final" "$sha" "$size"
    : >"$WORK/verified.$i"
    say "$tag: sha256 ok, skipping"
  else
    mv -f -- "$final" "$final.bad"
    log "$tag: sha256 mismatch: expected $sha, found $found; moved it to $final.bad, will fetch again"
  fi
}

SKIPPED=0
TO_HASH=()
for ((i = 0; i < K; i++)); do
  final="$DEST/${PATHS[i]}"
  if [[ -f $final ]]; then
    if ((!REVERIFY)) && sidecar_matches "$final" "${SHAS[i]}" "${SIZES[i]}"; then
      say "[$((i + 1))/$K] ${PATHS[i]}: verified earlier, skipping"
      : >"$WORK/verified.$i"
    else
      TO_HASH+=("$i")
    fi
  fi
done
if ((${#TO_HASH[@]} > 0)); then
  run_pool verify_existing 0 "${TO_HASH[@]}"
  ((POOL_RC == 0)) || die_with "$EXIT_FAILURE" "could not check the existing shards in $DEST"
fi

TO_FETCH=()
NEEDED=0
for ((i = 0; i < K; i++)); do
  final="$DEST/${PATHS[i]}"
  if [[ -e $WORK/verified.$i ]]; then
    SKIPPED=$((SKIPPED + 1))
    if [[ -f $final.partial ]]; then
      say "[$((i + 1))/$K] ${PATHS[i]}: removing a leftover $final.partial"
      rm -f -- "$final.partial"
    fi
    continue
  fi
  TO_FETCH+=("$i")
  have=0
  [[ -f $final.partial ]] && have=$(file_size "$final.partial")
  if ((have > SIZES[i])); then have=0; fi
  NEEDED=$((NEEDED + SIZES[i] - have))
done

# ---------------------------------------------------------------------------- disk space
if ((${#TO_FETCH[@]} > 0)); then
  AVAIL=$(free_bytes "$DEST")
  if ((NEEDED > AVAIL)); then
    die_with "$EXIT_DISK" "not enough free disk space in $DEST: ${#TO_FETCH[@]} shard(s) still to download need $NEEDED bytes ($(gib "$NEEDED")), available $AVAIL bytes ($(gib "$AVAIL")). Nothing was downloaded. Files already in $DEST (other tiers included) are kept, never deleted: free space there or pick another --dest."
  fi
  say "downloading ${#TO_FETCH[@]} shard(s), $NEEDED bytes ($(human "$NEEDED")), up to $CONNECTIONS at a time; $AVAIL bytes ($(gib "$AVAIL")) free in $DEST"
fi

# ---------------------------------------------------------------------------- downloads
W_CODE=000 W_SPEED=0
read_writeout() { # INDEX -> W_CODE (last HTTP status), W_SPEED (average bytes/s of the transfer)
  local c sp
  W_CODE=000 W_SPEED=0
  if [[ -s $WORK/curl.$1.out ]]; then
    while read -r c sp; do
      [[ -n $c ]] && W_CODE=$c W_SPEED=${sp%%[.,]*}
    done <"$WORK/curl.$1.out"
  fi
  [[ $W_SPEED =~ ^[0-9]+$ ]] || W_SPEED=0
}

# classify_failure RC INDEX PATH AFTER SIZE -> FAIL_KIND (retry | fatal | disk) and FAIL_WHY,
# "curl exit RC, what happened" (curl's own words, if any, in FAIL_DETAIL).
FAIL_KIND='' FAIL_WHY='' FAIL_DETAIL=''
classify_failure() {
  local rc=$1 code=$W_CODE why
  FAIL_DETAIL=''
  [[ -f $WORK/curl.$2.err ]] && FAIL_DETAIL=$(<"$WORK/curl.$2.err")
  FAIL_DETAIL=${FAIL_DETAIL//$'\n'/ }
  FAIL_DETAIL=${FAIL_DETAIL#curl: }
  FAIL_KIND=retry
  case $rc in
    0) why="HTTP $code: the server ended the transfer after $4 of $5 bytes" ;;
    22)
      case $code in
        401 | 403) FAIL_KIND=fatal why="HTTP $code: the Hugging Face token is missing or wrong (pass one that can read $REPO with --token-stdin)" ;;
        404) FAIL_KIND=fatal why="HTTP 404: $3 not found in $REPO at revision $REVISION" ;;
        408 | 429 | 5??) why="HTTP $code" ;;
        *) FAIL_KIND=fatal why="HTTP $code" ;;
      esac
      ;;
    23) FAIL_KIND=disk why="could not write" ;;
    28)
      if [[ $FAIL_DETAIL == *"too slow"* ]]; then
        why="transfer too slow: $(human_rate "$W_SPEED") on average, below --min-rate-bytes-per-second $MIN_RATE for --stall-seconds $STALL_SECONDS"
      else
        why="timed out"
      fi
      ;;
    18) why="the connection dropped before the end of the shard" ;;
    7) why="could not connect" ;;
    52) why="the server closed the connection without a reply" ;;
    55 | 56) why="the connection failed while transferring" ;;
    6 | 16 | 35 | 92) why="network or protocol error" ;;
    *) FAIL_KIND=fatal why="HTTP $code" ;;
  esac
  [[ $code != 000 ]] || why=${why/HTTP 000/no HTTP response}
  FAIL_WHY="curl exit $rc, $why"
}

# Worker: download one shard into .partial (resuming, retrying with backoff), verify it, move
# it to its final name.
download_shard() {
  local i=$1 path=${PATHS[$1]} sha=${SHAS[$1]} size=${SIZES[$1]}
  local tag="[$(($1 + 1))/$K] ${PATHS[$1]}" final="$DEST/${PATHS[$1]}"
  local partial="$final.partial" bad="$final.bad" url verify_round=1 have after rc found got=0
  local fails=0 delay avail headway=$((MIN_RATE * STALL_SECONDS)) note=''
  url="$BASE_URL/$REPO/resolve/$REV_ENC/$(urlencode_path "$path")"
  mkdir -p -- "${final%/*}"
  rm -f -- "$final.verified"
  while :; do
    have=0
    [[ -f $partial ]] && have=$(file_size "$partial")
    if ((have > size)); then
      say "$tag: $partial has $have bytes, more than the manifest's $size: moving it to $bad and starting over"
      mv -f -- "$partial" "$bad"
      have=0
    fi
    if ((have < size)); then
      if ((have > 0)); then
        say "$tag: resuming at byte $have of $size from $url$note"
      else
        say "$tag: downloading $size bytes from $url$note"
      fi
      rc=0
      run_curl "$WORK/curl.$i.out" "$WORK/curl.$i.err" -fL -C - -sS --connect-timeout 30 \
        --speed-limit "$MIN_RATE" --speed-time "$STALL_SECONDS" \
        -w '%{http_code} %{speed_download}\n' -o "$partial" -- "$url" || rc=$?
      after=0
      [[ -f $partial ]] && after=$(file_size "$partial")
      got=$((got + after - have))
      printf '%s\n' "$got" >"$WORK/bytes.$i"
      if ((rc != 0 || after < size)); then
        read_writeout "$i"
        classify_failure "$rc" "$i" "$path" "$after" "$size"
        if [[ $FAIL_KIND == disk ]]; then
          avail=$(free_bytes "${partial%/*}")
          if ((avail < size - after)); then
            log "disk full in $DEST: $tag: writing $partial stopped at $after of $size bytes ($FAIL_WHY; $avail bytes free, $((size - after)) more needed) from $url${FAIL_DETAIL:+; curl: $FAIL_DETAIL}. The $after bytes received stay in $partial: free space in $DEST, then re-run to resume."
            return "$EXIT_DISK"
          fi
          log "$tag: cannot write $partial ($FAIL_WHY) from $url${FAIL_DETAIL:+; curl: $FAIL_DETAIL}. The $after bytes received stay there; re-run to resume."
          return "$EXIT_FAILURE"
        fi
        if [[ $FAIL_KIND == fatal ]]; then
          log "$tag: download failed ($FAIL_WHY) from $url${FAIL_DETAIL:+; curl: $FAIL_DETAIL}. Not retried: this will not heal by itself. Bytes received so far ($after) stay in $partial; re-run to resume."
          return "$EXIT_DOWNLOAD"
        fi
        # A try that moved the download on by at least a stall window's worth starts the count again.
        if ((after - have >= headway)); then fails=1; else fails=$((fails + 1)); fi
        if ((fails >= ATTEMPTS)); then
          log "$tag: download failed $fails time(s) in a row ($FAIL_WHY) from $url${FAIL_DETAIL:+; curl: $FAIL_DETAIL}; the last try ran at $(human_rate "$W_SPEED"). $after of $size bytes are kept in $partial; re-run to resume."
          return "$EXIT_DOWNLOAD"
        fi
        delay=$((RETRY_DELAY << (fails - 1)))
        ((delay <= RETRY_MAX_DELAY && fails <= 30)) || delay=$RETRY_MAX_DELAY
        say "$tag: try $fails of $ATTEMPTS failed ($FAIL_WHY) at $(human_rate "$W_SPEED"); $after of $size bytes kept in $partial; retrying in $delay s"
        ((delay == 0)) || run_child sleep "$delay"
        note=" (try $((fails + 1)) of $ATTEMPTS)"
        continue
      fi
    elif [[ ! -f $partial ]]; then
      : >"$partial" # an empty shard
    fi
    say "$tag: checking sha256"
    sha256_of "$partial" "$i"
    found=$SHA_RESULT
    if [[ $found == "$sha" ]] && (($(file_size "$partial") == size)); then
      mv -f -- "$partial" "$final"
      write_sidecar "$final" "$sha" "$size"
      : >"$WORK/fetched.$i"
      say "$tag: sha256 ok, $size bytes"
      return 0
    fi
    mv -f -- "$partial" "$bad"
    log "$tag: sha256 mismatch for $final: expected $sha, found $found; the file is now $bad"
    if ((verify_round >= 2)); then
      log "$tag: failed verification twice (expected sha256 $sha, found $found) from $url; giving up"
      return "$EXIT_VERIFY"
    fi
    verify_round=2 fails=0 note=''
    say "$tag: downloading it once more from scratch"
  done
}

if ((${#TO_FETCH[@]} > 0)); then
  run_pool download_shard 1 "${TO_FETCH[@]}"
  if ((POOL_RC != 0)); then
    case $POOL_RC in
      "$EXIT_FAILURE" | "$EXIT_DISK" | "$EXIT_DOWNLOAD" | "$EXIT_VERIFY") exit "$POOL_RC" ;;
    esac
    die_with "$EXIT_DOWNLOAD" "a download worker failed (exit $POOL_RC)"
  fi
fi

# ---------------------------------------------------------------------------- summary
FETCHED=0 DOWNLOADED=0 VERIFIED=0
for ((i = 0; i < K; i++)); do
  [[ -e $WORK/fetched.$i ]] && FETCHED=$((FETCHED + 1))
  if [[ -f $WORK/bytes.$i ]]; then
    read -r b <"$WORK/bytes.$i"
    DOWNLOADED=$((DOWNLOADED + b))
  fi
  if sidecar_matches "$DEST/${PATHS[i]}" "${SHAS[i]}" "${SIZES[i]}"; then
    VERIFIED=$((VERIFIED + 1))
  else
    log "[$((i + 1))/$K] ${PATHS[i]}: not verified after the run"
  fi
done
((VERIFIED == K)) || die_with "$EXIT_FAILURE" "only $VERIFIED of $K shard(s) verified in $DEST"
say "fetched $FETCHED shard(s), $DOWNLOADED bytes; skipped $SKIPPED verified shard(s); all $K shard(s) verified in $DEST"
say "FETCH_GGUF_RESULT verified=$VERIFIED downloaded_bytes=$DOWNLOADED"
