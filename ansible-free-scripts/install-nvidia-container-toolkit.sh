#!/usr/bin/env bash
# Usage: install-nvidia-container-toolkit.sh [--check]
#
# Lets Docker containers use this host's NVIDIA GPUs (docker run --gpus ...).
#   - no `nvidia-smi` on PATH: "no NVIDIA GPU/driver found; nothing to do" (exit 0).
#   - `nvidia-smi` present but failing: the driver is broken; fix it first (exit 1).
#   - `nvidia-ctk` present and `docker info` lists the nvidia runtime: nothing to do.
#   - else installs nvidia-container-toolkit from NVIDIA's apt or yum/dnf repository,
#     runs `nvidia-ctk runtime configure --runtime=docker` and restarts docker.
# --check only reports: exit 0 when nothing needs doing, 1 when it would install or configure.
#
# Prints key=value lines a program may parse: nvidia_gpu=<yes|no>, nvidia_runtime=<yes|no>,
# action=<unchanged|installed|configured|none>.
# Exit codes: 0 ready (or no GPU), 1 not ready / failed, 2 bad usage.
set -euo pipefail

export script_name=install-nvidia-container-toolkit.sh
log_name=nvidia-toolkit # the prefix of its say and die lines
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

if ! have nvidia-smi; then
  say "no NVIDIA GPU/driver found; nothing to do"
  printf 'nvidia_gpu=no\nnvidia_runtime=no\naction=none\n'
  exit "$EXIT_OK"
fi
if ! gpus=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1); then
  die "nvidia-smi is installed but fails (${gpus//$'\n'/ }); fix the NVIDIA driver first (expected it to list the GPUs)"
fi
say "found GPU(s): ${gpus//$'\n'/; }"

have docker || die "docker is not installed; run install-docker.sh first"
docker info >/dev/null 2>&1 || die "the docker engine does not answer ('docker info' fails); run install-docker.sh first"

runtime_ready() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"'; }

if have nvidia-ctk && runtime_ready; then
  say "nvidia-container-toolkit $(nvidia-ctk --version 2>/dev/null | head -n1 | sed 's/.*version //') already installed and docker lists the nvidia runtime; unchanged"
  printf 'nvidia_gpu=yes\nnvidia_runtime=yes\naction=unchanged\n'
  exit "$EXIT_OK"
fi

if [[ "$check" == yes ]]; then
  have nvidia-ctk || say "nvidia-ctk is not installed (expected the nvidia-container-toolkit package)" >&2
  runtime_ready || say "docker info does not list an 'nvidia' runtime (expected after 'nvidia-ctk runtime configure --runtime=docker')" >&2
  printf 'nvidia_gpu=yes\nnvidia_runtime=no\naction=none\n'
  exit "$EXIT_FAILURE"
fi

# NVIDIA's documented repositories (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html).
repo_base=https://nvidia.github.io/libnvidia-container
action=configured
if ! have nvidia-ctk; then
  have curl || die "curl is needed to fetch NVIDIA's repository definition"
  if have apt-get; then
    keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    list=/etc/apt/sources.list.d/nvidia-container-toolkit.list
    have gpg || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnupg
    if [[ ! -s "$keyring" ]]; then
      say "adding NVIDIA's apt key to $keyring"
      curl -fsSL "$repo_base/gpgkey" | as_root gpg --dearmor --yes -o "$keyring"
    fi
    if [[ ! -s "$list" ]]; then
      say "adding NVIDIA's apt repository as $list"
      curl -fsSL "$repo_base/stable/deb/nvidia-container-toolkit.list" \
        | sed "s#deb https://#deb [signed-by=$keyring] https://#g" | as_root tee "$list" >/dev/null
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nvidia-container-toolkit
  elif have dnf || have yum; then
    repo=/etc/yum.repos.d/nvidia-container-toolkit.repo
    if [[ ! -s "$repo" ]]; then
      say "adding NVIDIA's yum repository as $repo"
      curl -fsSL "$repo_base/stable/rpm/nvidia-container-toolkit.repo" | as_root tee "$repo" >/dev/null
    fi
    if have dnf; then as_root dnf install -y nvidia-container-toolkit; else as_root yum install -y nvidia-container-toolkit; fi
  else
    die "found neither apt-get, dnf nor yum; install nvidia-container-toolkit by hand"
  fi
  have nvidia-ctk || die "nvidia-container-toolkit installed but 'nvidia-ctk' is not on PATH=$PATH"
  action=installed
fi

say "configuring docker's nvidia runtime (nvidia-ctk runtime configure --runtime=docker)"
as_root nvidia-ctk runtime configure --runtime=docker
if have systemctl && [[ -d /run/systemd/system ]]; then
  as_root systemctl restart docker
else
  die "configured /etc/docker/daemon.json, but this host has no running systemd; restart dockerd by hand and re-run to verify"
fi
for _ in $(seq 1 30); do
  if runtime_ready; then
    say "docker lists the nvidia runtime; $action"
    printf 'nvidia_gpu=yes\nnvidia_runtime=yes\naction=%s\n' "$action"
    exit "$EXIT_OK"
  fi
  sleep 1
done
die "docker restarted but 'docker info' still lists no nvidia runtime (runtimes: $(docker info --format '{{json .Runtimes}}' 2>/dev/null)); check /etc/docker/daemon.json"
