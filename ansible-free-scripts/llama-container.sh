#!/usr/bin/env bash
# Usage:
#   llama-container.sh up --name NAME --image IMAGE [--volume SRC:DST[:ro|:rw]]... [--env KEY=VALUE]...
#                         [--gpus all|device=0,1] [--network host] [--restart POLICY] [--health-cmd CMD]
#                         [--health-interval S] [--health-timeout S] [--health-retries N]
#                         [--health-url URL] [--wait-seconds N] [--secret-stdin PATH_IN_CONTAINER]
#                         [--label KEY=VALUE]... [--entrypoint PATH] -- ARGS...
#   llama-container.sh down --name NAME
#   llama-container.sh status --name NAME
#
# Runs kimi-kit's llama-server container with the docker CLI (the same spec the Pulumi component
# gives the docker provider). The container uses the host's network (--network host, the only mode
# accepted): the server's own --host/--port in ARGS decide where it listens. ARGS are
# llama-server's, or those of the program --entrypoint names.
#
# up:
#   --restart POLICY      no | always | unless-stopped (default) | on-failure[:N]
#   --health-cmd CMD      Docker HEALTHCHECK run inside the container (optional: needs a shell and
#                         curl/wget in the image); its start period is --wait-seconds.
#   --health-interval S, --health-timeout S, --health-retries N
#                         the health check's timing in whole seconds and its retries (defaults 30, 10
#                         and 3: HEALTH_TIMING in components/serving/container-spec.ts).
#   --health-url URL      polled from this host with `curl -fsS` until it answers 200.
#   --wait-seconds N      how long to wait for --health-url (default 1800, DEFAULTS.containerWaitSeconds in planner/config.ts).
#   --entrypoint PATH     the program to run instead of the image's own entrypoint (/app/llama-server
#                         in the llama.cpp images), e.g. /app/ggml-rpc-server for an RPC worker
#                         from the same image; an absolute path inside the image.
#   --secret-stdin PATH   reads the secret (e.g. API keys for --api-key-file, one per line) from
#                         stdin, stores it as $KIMI_KIT_STATE_DIR/secrets/NAME/<basename PATH>
#                         (dir 0700, file 0600, rewritten only when it changed) and bind-mounts it
#                         read-only at PATH. It never appears in argv, docker inspect or logs.
#   Volume sources must exist on the host (Docker would silently create an empty directory).
#   The spec (image ID, entrypoint, args, volumes, envs, gpus, restart, health check, labels, the
#   secret's sha256) is hashed into label kimi-kit.spec-sha256: a running container with the same
#   hash is left alone ("unchanged"); a different one is removed and recreated ("replaced"); none
#   is "created". A container of that name that this script did not create is never touched.
#   Last line on success: CONTAINER_RESULT action=<created|replaced|unchanged> id=<container id>
# down:  removes the container only (never model files, volume contents or the stored secret).
#   Last line: CONTAINER_RESULT action=<removed|absent> id=<id or empty>
# status: key=value lines name, state (running|exited|restarting|...|absent), health
#   (healthy|unhealthy|starting|none), spec_sha256, id, image, started_at, exit_code, restart_count.
#
# Environment: KIMI_KIT_STATE_DIR (default /var/lib/kimi-kit) holds secrets/.
# Exit codes: 0 done, 1 docker or host error, 2 bad usage, 3 the container exited or --health-url
# did not answer within --wait-seconds (its last 50 log lines are printed).
set -euo pipefail

export script_name=llama-container.sh
log_name=llama-container # the prefix of its say and die lines
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"
readonly EXIT_NOT_SERVING=3 # the container exited, or --health-url did not answer in time

# die_not_serving MESSAGE...: as lib-common's die, with exit status EXIT_NOT_SERVING.
die_not_serving() { log "$*"; exit "$EXIT_NOT_SERVING"; }

SPEC_LABEL=kimi-kit.spec-sha256
state_dir=${KIMI_KIT_STATE_DIR:-/var/lib/kimi-kit}

(($#)) || { usage >&2; exit "$EXIT_USAGE"; }
case "$1" in
  -h|--help) usage; exit "$EXIT_OK" ;;
  up|down|status) cmd=$1; shift ;;
  *) die_usage "unknown command '$1' (expected up, down or status)" ;;
esac

name="" image="" entrypoint="" gpus="" network=host restart=unless-stopped health_cmd="" health_url="" wait_seconds=1800
health_interval=30 health_timeout=10 health_retries=3
secret_path="" volumes=() envs=() labels=() args=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --) shift; args=("$@"); break ;;
    --name|--image|--entrypoint|--volume|--env|--gpus|--network|--restart|--health-cmd|--health-interval|--health-timeout|--health-retries|--health-url|--wait-seconds|--secret-stdin|--label)
      (($# >= 2)) || die_usage "$1 needs a value"
      if [[ "$cmd" != up && "$1" != --name ]]; then die_usage "$1 belongs to 'up', not '$cmd'"; fi
      case "$1" in
        --name) name=$2 ;;
        --image) image=$2 ;;
        --entrypoint) entrypoint=$2 ;;
        --volume) volumes+=("$2") ;;
        --env) envs+=("$2") ;;
        --gpus) gpus=$2 ;;
        --network) network=$2 ;;
        --restart) restart=$2 ;;
        --health-cmd) health_cmd=$2 ;;
        --health-interval) health_interval=$2 ;;
        --health-timeout) health_timeout=$2 ;;
        --health-retries) health_retries=$2 ;;
        --health-url) health_url=$2 ;;
        --wait-seconds) wait_seconds=$2 ;;
        --secret-stdin) secret_path=$2 ;;
        --label) labels+=("$2") ;;
      esac
      shift 2 ;;
    *) die_usage "unknown argument '$1' (the server's arguments go after '--')" ;;
  esac
done

[[ -n "$name" ]] || die_usage "--name is required"
[[ "$name" =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ ]] || die_usage "--name '$name' is not a valid container name (expected [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
if [[ "$cmd" != up && ${#args[@]} -gt 0 ]]; then die_usage "'$cmd' takes no server arguments"; fi

have docker || die "docker is not installed on this host; run install-docker.sh first"
docker info >/dev/null 2>&1 || die "the docker engine does not answer ('docker info' fails: $(docker info 2>&1 >/dev/null | tail -n1)); run install-docker.sh first"

# "id|status|spec hash|restart count|exit code" of the container NAME, or nothing when absent.
# (A whitespace separator would not do: read collapses runs of IFS whitespace, losing empty fields.)
inspect() {
  docker container inspect --format "{{.Id}}|{{.State.Status}}|{{index .Config.Labels \"$SPEC_LABEL\"}}|{{.RestartCount}}|{{.State.ExitCode}}" "$name" 2>/dev/null \
    | sed 's/<no value>//g' || true   # a container without labels prints "<no value>"
}

# ------------------------------------------------------------------------------------------
if [[ "$cmd" == status ]]; then
  info=$(docker container inspect --format "{{.Id}}|{{.State.Status}}|{{index .Config.Labels \"$SPEC_LABEL\"}}|{{.Config.Image}}|{{.State.StartedAt}}|{{.State.ExitCode}}|{{.RestartCount}}" "$name" 2>/dev/null | sed 's/<no value>//g' || true)
  echo "name=$name"
  if [[ -z "$info" ]]; then
    printf 'state=absent\nhealth=none\nspec_sha256=\nid=\nimage=\nstarted_at=\nexit_code=\nrestart_count=\n'
    exit "$EXIT_OK"
  fi
  IFS='|' read -r id state spec img started exit_code restarts <<<"$info"
  # Asked apart: a container without a health check has no State.Health, and a template naming it
  # fails outright on newer docker CLIs (the whole container would then read as absent).
  health=$(docker container inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null || true)
  health=${health:-none}
  printf 'state=%s\nhealth=%s\nspec_sha256=%s\nid=%s\nimage=%s\nstarted_at=%s\nexit_code=%s\nrestart_count=%s\n' \
    "$state" "$health" "$spec" "$id" "$img" "$started" "$exit_code" "$restarts"
  exit "$EXIT_OK"
fi

if [[ "$cmd" == down ]]; then
  info=$(inspect)
  if [[ -z "$info" ]]; then
    say "container $name already absent; unchanged"
    echo "CONTAINER_RESULT action=absent id="
    exit "$EXIT_OK"
  fi
  IFS='|' read -r id _ spec _ _ <<<"$info"
  [[ -n "$spec" ]] || die "container $name ($id) has no label $SPEC_LABEL, so llama-container.sh did not create it; refusing to remove it (remove it by hand if it is yours to remove)"
  docker rm -f "$name" >/dev/null || die "docker rm -f $name failed"
  say "removed container $name ($id); model files, volumes and the stored secret are untouched"
  echo "CONTAINER_RESULT action=removed id=$id"
  exit "$EXIT_OK"
fi

# --- up: validate -------------------------------------------------------------------------
[[ -n "$image" ]] || die_usage "--image is required"
if [[ -n "$entrypoint" && "$entrypoint" != /* ]]; then die_usage "--entrypoint wants an absolute path inside the image, got '$entrypoint'"; fi
[[ "$wait_seconds" =~ ^[0-9]+$ ]] || die_usage "--wait-seconds wants a non-negative integer, got '$wait_seconds'"
[[ "$network" == host ]] || die_usage "--network '$network' is not allowed (expected host: llama-server binds its planned address itself)"
for timing in "--health-interval:$health_interval" "--health-timeout:$health_timeout" "--health-retries:$health_retries"; do
  [[ "${timing#*:}" =~ ^[1-9][0-9]*$ ]] || die_usage "${timing%%:*} wants a positive integer, got '${timing#*:}'"
done
[[ "$restart" =~ ^(no|always|unless-stopped|on-failure(:[0-9]+)?)$ ]] \
  || die_usage "--restart '$restart' is not one of no, always, unless-stopped, on-failure[:N]"
[[ -z "$gpus" || "$gpus" =~ ^(all|device=[0-9A-Za-z-]+(,[0-9A-Za-z-]+)*)$ ]] \
  || die_usage "--gpus '$gpus' is neither 'all' nor 'device=0,1,...'"
for v in "${volumes[@]}"; do
  IFS=: read -r src dst mode extra <<<"$v"
  [[ -z "$extra" && "$src" == /* && "$dst" == /* && ( -z "$mode" || "$mode" == ro || "$mode" == rw ) ]] \
    || die_usage "--volume '$v' is not SRC:DST[:ro|:rw] with absolute paths"
  [[ -e "$src" ]] || die "volume source $src does not exist on this host (expected the directory or file to mount at $dst)"
done
for e in "${envs[@]}"; do
  [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die_usage "--env '$e' is not KEY=VALUE"
done
for l in "${labels[@]}"; do
  [[ "$l" =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*= ]] || die_usage "--label '$l' is not KEY=VALUE"
  [[ "$l" != "$SPEC_LABEL="* ]] || die_usage "--label $SPEC_LABEL is set by this script"
done
if [[ -n "$secret_path" && "$secret_path" != /* ]]; then die_usage "--secret-stdin wants an absolute path inside the container, got '$secret_path'"; fi
if [[ -n "$health_url" ]] && ! have curl; then die "--health-url needs curl on this host; install it"; fi
for a in "${args[@]}"; do
  case "$a" in
    --api-key|--api-key=*) say "warning: --api-key in the llama-server arguments shows the key in 'docker inspect'; prefer --secret-stdin with --api-key-file" >&2 ;;
  esac
done

# --- image --------------------------------------------------------------------------------
if ! image_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null); then
  say "image $image is not on this host; pulling it"
  docker pull "$image" || die "docker pull $image failed (expected the image to exist locally or in its registry)"
  image_id=$(docker image inspect --format '{{.Id}}' "$image") || die "image $image still missing after pull"
fi

# --- secret -------------------------------------------------------------------------------
secret_sha="" secret_file="" tmp_secret=""
cleanup() { if [[ -n "$tmp_secret" ]]; then rm -f -- "$tmp_secret"; fi; }
trap cleanup EXIT
if [[ -n "$secret_path" ]]; then
  secret_dir="$state_dir/secrets/$name"
  secret_file="$secret_dir/$(basename -- "$secret_path")"
  umask 077
  mkdir -p -- "$secret_dir" || die "could not create $secret_dir"
  chmod 0700 -- "$state_dir/secrets" "$secret_dir"
  [[ -t 0 ]] && say "reading the secret for $secret_path from stdin (end with Ctrl-D)" >&2
  tmp_secret=$(mktemp -- "$secret_dir/.incoming.XXXXXX")
  cat >"$tmp_secret"   # from stdin to a 0600 file: the secret is never an argument of any command
  [[ -s "$tmp_secret" ]] || die "--secret-stdin $secret_path given but stdin was empty (expected the secret on stdin)"
  if [[ -f "$secret_file" ]] && cmp -s -- "$tmp_secret" "$secret_file"; then
    rm -f -- "$tmp_secret"
    say "secret $secret_file unchanged"
  else
    chmod 0600 -- "$tmp_secret"
    mv -f -- "$tmp_secret" "$secret_file"
    say "secret written to $secret_file (mode 0600)"
  fi
  tmp_secret=""
  chmod 0600 -- "$secret_file"
  secret_sha=$(sha256sum -- "$secret_file" | cut -d' ' -f1)
fi

# --- spec hash ----------------------------------------------------------------------------
# NUL-separated, tagged fields: no value can run into the next one. Volumes, envs and labels are
# sorted (their order means nothing to Docker); llama-server's arguments keep theirs.
sorted() { if (($# > 0)); then printf '%s\0' "$@" | sort -z; fi; }
spec_sha=$(
  {
    printf '%s\0' "format=1" "image_id=$image_id" "network=$network" "restart=$restart" "gpus=$gpus" \
      "health_cmd=$health_cmd"
    [[ -z "$health_cmd" ]] || printf '%s\0' "health_start_period=${wait_seconds}s"
    # Only when not the defaults: a container started with them keeps the hash it always had.
    if [[ -n "$health_cmd" && "$health_interval/$health_timeout/$health_retries" != 30/10/3 ]]; then
      printf '%s\0' "health_timing=$health_interval/$health_timeout/$health_retries"
    fi
    # Only when set: a container started without --entrypoint keeps the hash it always had.
    [[ -z "$entrypoint" ]] || printf '%s\0' "entrypoint=$entrypoint"
    sorted "${volumes[@]/#/volume=}"
    sorted "${envs[@]/#/env=}"
    sorted "${labels[@]/#/label=}"
    [[ -z "$secret_path" ]] || printf '%s\0' "secret_path=$secret_path" "secret_sha256=$secret_sha"
    printf '%s\0' "args=${#args[@]}"
    if ((${#args[@]} > 0)); then printf '%s\0' "${args[@]}"; fi
  } | sha256sum | cut -d' ' -f1
)

# --- create / replace / keep --------------------------------------------------------------
action=created
info=$(inspect)
if [[ -n "$info" ]]; then
  IFS='|' read -r old_id old_state old_spec _ _ <<<"$info"
  [[ -n "$old_spec" ]] || die "container $name ($old_id) exists but has no label $SPEC_LABEL, so llama-container.sh did not create it; refusing to replace it (remove or rename it by hand)"
  if [[ "$old_spec" == "$spec_sha" && "$old_state" == running ]]; then
    action=unchanged
    say "container $name ($old_id) already runs this spec (sha256 $spec_sha); unchanged"
  else
    if [[ "$old_spec" == "$spec_sha" ]]; then
      say "container $name ($old_id) has this spec but is $old_state (expected running); recreating it"
    else
      say "container $name ($old_id) runs spec sha256 $old_spec, wanted $spec_sha; replacing it"
    fi
    docker rm -f "$name" >/dev/null || die "docker rm -f $name failed"
    action=replaced
  fi
fi

if [[ "$action" != unchanged ]]; then
  run=(docker run -d --name "$name" --network "$network" --restart "$restart" --label "$SPEC_LABEL=$spec_sha")
  for l in "${labels[@]}"; do run+=(--label "$l"); done
  for v in "${volumes[@]}"; do run+=(--volume "$v"); done
  for e in "${envs[@]}"; do run+=(--env "$e"); done
  [[ -z "$secret_path" ]] || run+=(--volume "$secret_file:$secret_path:ro")
  [[ -z "$entrypoint" ]] || run+=(--entrypoint "$entrypoint")
  case "$gpus" in
    "") ;;
    all) run+=(--gpus all) ;;
    *) run+=(--gpus "\"$gpus\"") ;;   # docker parses --gpus as CSV: a device list must be quoted
  esac
  if [[ -n "$health_cmd" ]]; then
    run+=(--health-cmd "$health_cmd" --health-interval "${health_interval}s" --health-timeout "${health_timeout}s"
          --health-retries "$health_retries" --health-start-period "${wait_seconds}s")
  fi
  run+=("$image" "${args[@]}")
  if ! new_id=$("${run[@]}"); then
    docker rm -f "$name" >/dev/null 2>&1 || true   # docker run may leave a created-but-unstarted container
    die "docker run for $name failed (image $image); see docker's message above"
  fi
  say "container $name ${action} ($new_id), spec sha256 $spec_sha"
fi

info=$(inspect)
[[ -n "$info" ]] || die_not_serving "container $name vanished right after docker run"
IFS='|' read -r id _ _ restarts0 _ <<<"$info"

# --- wait until it serves -----------------------------------------------------------------
show_logs() {
  # Docker copies a container's output into its log asynchronously, so right after an exit the
  # lines that explain it may still be on their way: read the log until two reads 0.5 s apart
  # agree (at most 5 s; a container that keeps restarting keeps writing).
  local previous="" current tries=0
  current=$(docker logs --tail 50 "$name" 2>&1 || true)
  while [[ "$current" != "$previous" ]] && ((tries < 10)); do
    previous=$current
    sleep 0.5
    tries=$((tries + 1))
    current=$(docker logs --tail 50 "$name" 2>&1 || true)
  done
  log "last 50 log lines of $name:"
  printf '%s\n' "$current" | sed 's/^/  | /' >&2
  log "the container is left in place for inspection; 'llama-container.sh down --name $name' removes it"
}
if [[ -n "$health_url" ]]; then
  say "waiting up to ${wait_seconds}s for $health_url"
  # Milliseconds from EPOCHREALTIME: bash's $SECONDS ticks in whole seconds from an arbitrary phase,
  # which would cut the wait short by up to a second.
  now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
  start=$(now_ms) last_report=$start
  while :; do
    IFS='|' read -r _ state _ restarts exit_code <<<"$(inspect)"
    if [[ "$state" != running || "$restarts" != "$restarts0" ]]; then
      show_logs
      die_not_serving "container $name stopped before $health_url answered: state ${state:-absent}, exit code ${exit_code:-?}, restarts ${restarts0}→${restarts:-?} (expected it running)"
    fi
    if err=$(curl -fsS -o /dev/null --max-time 5 "$health_url" 2>&1); then
      say "$health_url answered after $(( ($(now_ms) - start) / 1000 ))s"
      break
    fi
    if (($(now_ms) - start >= wait_seconds * 1000)); then
      show_logs
      die_not_serving "container $name is running but $health_url did not answer 200 within ${wait_seconds}s (last: ${err:-no answer})"
    fi
    if (($(now_ms) - last_report >= 10000)); then
      say "still waiting for $health_url ($(( ($(now_ms) - start) / 1000 ))s of ${wait_seconds}s): ${err:-no answer}"
      last_report=$(now_ms)
    fi
    sleep 1
  done
else
  say "no --health-url given; not waiting for the server"
fi

echo "CONTAINER_RESULT action=$action id=$id"
