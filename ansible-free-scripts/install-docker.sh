#!/usr/bin/env bash
# Usage: install-docker.sh [--check]
#
# Makes sure a Docker engine runs on this host.
#   - `docker info` already answers: nothing to do ("already running").
#   - else installs the distribution's package if the docker CLI is missing
#     (apt: docker.io; dnf/yum: docker) and starts the engine with systemctl.
#     Without systemd it says how to start dockerd by hand and exits 1.
# --check only reports: exit 0 when the engine answers, 1 when it does not; changes nothing.
#
# Prints key=value lines a program may parse: docker_server=<version|none>, action=<unchanged|
# installed|started|none>.
# Exit codes: 0 engine running, 1 not running / install or start failed, 2 bad usage.
set -euo pipefail

export script_name=install-docker.sh
log_name=install-docker # the prefix of its say and die lines
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

check=no
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --check) check=yes; shift ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done

server_version() { docker info --format '{{.ServerVersion}}' 2>/dev/null; }

if have docker && version=$(server_version) && [[ -n "$version" ]]; then
  say "docker engine already running (server version $version); unchanged"
  echo "docker_server=$version"
  echo "action=unchanged"
  exit "$EXIT_OK"
fi

if [[ "$check" == yes ]]; then
  if have docker; then
    err=$(docker info 2>&1 >/dev/null | tail -n1 || true)
    say "docker CLI $(docker --version 2>/dev/null | sed -n 's/.*version \([^,]*\).*/\1/p') is installed but the engine does not answer: ${err:-no error text}" >&2
  else
    say "docker is not installed (no 'docker' on PATH=$PATH)" >&2
  fi
  echo "docker_server=none"
  echo "action=none"
  exit "$EXIT_FAILURE"
fi

action=started
if ! have docker; then
  if have apt-get; then
    say "installing docker.io with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
  elif have dnf; then
    say "installing docker with dnf"
    as_root dnf install -y docker
  elif have yum; then
    say "installing docker with yum"
    as_root yum install -y docker
  else
    die "found neither apt-get, dnf nor yum; install Docker Engine by hand (https://docs.docker.com/engine/install/)"
  fi
  have docker || die "the package installed but 'docker' is still not on PATH=$PATH"
  action=installed
fi

if have systemctl && [[ -d /run/systemd/system ]]; then
  say "starting docker with systemctl"
  as_root systemctl enable --now docker
else
  die "docker is installed but its engine is not running, and this host has no running systemd to start it; start it by hand, e.g. 'dockerd >/var/log/dockerd.log 2>&1 &' (or your init system's docker service), then re-run"
fi

for _ in $(seq 1 30); do
  if version=$(server_version) && [[ -n "$version" ]]; then
    say "docker engine running (server version $version); $action"
    echo "docker_server=$version"
    echo "action=$action"
    exit "$EXIT_OK"
  fi
  sleep 1
done
die "docker engine still does not answer 30 s after start: $(docker info 2>&1 >/dev/null | tail -n1); see 'journalctl -u docker'"
