#!/usr/bin/env bash
# Usage: probe-host.sh [--model-dir DIR] [--min-ram-bytes N] [--min-physical-cores N]
#                      [--min-numa-nodes N] [--min-gpus N] [--min-gpu-vram-bytes N]
#                      [--min-free-disk-bytes N]
#
# Reports what this host has for serving a large MoE model with llama.cpp, as key=value lines
# on stdout: ram_bytes, physical_cores, logical_cpus, sockets, numa_nodes, cpu_model,
# cpu_flags_avx512, gpu_count, gpu_names, gpu_vram_bytes, nvidia_driver, cuda_major_supported,
# llama_image_variant, model_dir, free_disk_path, free_disk_bytes, docker, docker_cli, shortfalls.
#
# Each --min-* flag is a requirement; --min-gpu-vram-bytes applies to EVERY GPU (the smallest
# counts). Every shortfall is reported on stderr as
#   probe: <what>: host has <found>; the stack says at least <wanted>
# and the script exits 3 after reporting all of them.
# --model-dir (default /srv/models, DEFAULTS.modelDir in planner/config.ts) is where the model shards go; free disk is
# measured on it, or on its nearest existing parent.
#
# Exit codes: 0 all requirements met, 2 bad usage, 3 at least one shortfall.
# Read-only: it changes nothing on the host, so running it again is always safe.
set -euo pipefail

export script_name=probe-host.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"
readonly EXIT_SHORTFALL=3

model_dir=/srv/models
min_ram=0 min_cores=0 min_numa=0 min_gpus=0 min_vram=0 min_disk=0

need_uint() { # name value
  [[ "$2" =~ ^[0-9]+$ ]] || die_usage "$1 wants a non-negative integer, got '$2'"
}

while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --model-dir|--min-ram-bytes|--min-physical-cores|--min-numa-nodes|--min-gpus|--min-gpu-vram-bytes|--min-free-disk-bytes)
      (($# >= 2)) || die_usage "$1 needs a value"
      case "$1" in
        --model-dir) [[ -n "$2" ]] || die_usage "--model-dir must not be empty"; model_dir="$2" ;;
        --min-ram-bytes) need_uint "$1" "$2"; min_ram="$2" ;;
        --min-physical-cores) need_uint "$1" "$2"; min_cores="$2" ;;
        --min-numa-nodes) need_uint "$1" "$2"; min_numa="$2" ;;
        --min-gpus) need_uint "$1" "$2"; min_gpus="$2" ;;
        --min-gpu-vram-bytes) need_uint "$1" "$2"; min_vram="$2" ;;
        --min-free-disk-bytes) need_uint "$1" "$2"; min_disk="$2" ;;
      esac
      shift 2 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done

# Values end up in key=value lines: no newlines, no '=' surprises for the parser (value = rest).
oneline() { tr '\n\r' '  ' | sed 's/[[:space:]]\+/ /g; s/^ //; s/ $//'; }

# --- memory -------------------------------------------------------------------------------
ram_kib=$(awk '/^MemTotal:/ {print $2; exit}' /proc/meminfo)
ram_bytes=$((ram_kib * 1024))

# --- CPU topology -------------------------------------------------------------------------
# Physical cores = distinct (socket, core) pairs: SMT siblings share a core id, and core ids
# restart on every socket, so counting core ids alone undercounts multi-socket hosts.
if have lscpu && lscpu -p=CPU,Core,Socket >/dev/null 2>&1; then
  topo=$(lscpu -p=CPU,Core,Socket | grep -v '^#')
  logical_cpus=$(printf '%s\n' "$topo" | wc -l)
  physical_cores=$(printf '%s\n' "$topo" | awk -F, '{print $3 "," $2}' | sort -u | wc -l)
  sockets=$(printf '%s\n' "$topo" | awk -F, '{print $3}' | sort -u | wc -l)
else
  logical_cpus=$(grep -c '^processor' /proc/cpuinfo)
  physical_cores=$(awk -F': *' '/^physical id/ {s=$2} /^core id/ {print s "," $2}' /proc/cpuinfo | sort -u | wc -l)
  sockets=$(awk -F': *' '/^physical id/ {print $2}' /proc/cpuinfo | sort -u | wc -l)
  # Some VMs and ARM kernels print neither field: fall back to one core per logical CPU.
  ((physical_cores > 0)) || physical_cores=$logical_cpus
  ((sockets > 0)) || sockets=1
fi

numa_nodes=$( (find /sys/devices/system/node -maxdepth 1 -name 'node[0-9]*' 2>/dev/null || true) | wc -l)
((numa_nodes > 0)) || numa_nodes=1

cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo | oneline)
if [[ -z "$cpu_model" ]] && have lscpu; then
  cpu_model=$(lscpu | awk -F': *' '/^Model name/ {print $2; exit}' | oneline)
fi
[[ -n "$cpu_model" ]] || cpu_model=unknown

if grep -qw 'avx512f' /proc/cpuinfo; then cpu_flags_avx512=yes; else cpu_flags_avx512=no; fi

# --- GPUs ---------------------------------------------------------------------------------
gpu_count=0 gpu_names="" gpu_vram_bytes="" nvidia_driver=none cuda_major_supported=none
min_gpu_vram=""
if have nvidia-smi && gpu_csv=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits 2>/dev/null); then
  while IFS=, read -r name mem_mib driver; do
    name=$(printf '%s' "$name" | oneline); mem_mib=$(printf '%s' "$mem_mib" | tr -dc '0-9')
    driver=$(printf '%s' "$driver" | tr -d ' ')
    [[ -n "$name" ]] || continue
    gpu_count=$((gpu_count + 1))
    bytes=$(( ${mem_mib:-0} * 1024 * 1024 ))
    gpu_names+="${gpu_names:+,}${name//,/ }"
    gpu_vram_bytes+="${gpu_vram_bytes:+,}$bytes"
    if [[ -z "$min_gpu_vram" ]] || ((bytes < min_gpu_vram)); then min_gpu_vram=$bytes; fi
    [[ -n "$driver" ]] && nvidia_driver=$driver
  done <<<"$gpu_csv"
  # The banner of plain nvidia-smi names the newest CUDA the driver supports ("CUDA Version: 13.0").
  cuda_version=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n1 || true)
  [[ -n "$cuda_version" ]] && cuda_major_supported=$cuda_version
fi

# Which official llama.cpp image tag fits: CUDA 13 builds (server-cuda13) need NVIDIA driver
# >= 580; older drivers only run the CUDA 12 build (server-cuda); no GPU means the CPU image.
if [[ "$nvidia_driver" == none ]]; then
  llama_image_variant=server
else
  driver_major=${nvidia_driver%%.*}
  if [[ "$driver_major" =~ ^[0-9]+$ ]] && ((driver_major >= 580)); then
    llama_image_variant=server-cuda13
  else
    llama_image_variant=server-cuda
  fi
fi

# --- disk ---------------------------------------------------------------------------------
free_disk_path=$model_dir
while [[ ! -e "$free_disk_path" ]]; do
  parent=$(dirname -- "$free_disk_path")
  [[ "$parent" != "$free_disk_path" ]] || break
  free_disk_path=$parent
done
free_disk_bytes=$(df -P -B1 -- "$free_disk_path" | awk 'NR==2 {print $4}')

# --- docker -------------------------------------------------------------------------------
docker_cli=none docker=none
if have docker; then
  docker_cli=$(docker version --format '{{.Client.Version}}' 2>/dev/null || true)
  [[ -n "$docker_cli" ]] || docker_cli=$(docker --version 2>/dev/null | sed -n 's/.*version \([^,]*\).*/\1/p' || true)
  [[ -n "$docker_cli" ]] || docker_cli=unknown
  docker=$(docker info --format '{{.ServerVersion}}' 2>/dev/null || true)
  [[ -n "$docker" ]] || docker=none
fi

cat <<EOF
ram_bytes=$ram_bytes
physical_cores=$physical_cores
logical_cpus=$logical_cpus
sockets=$sockets
numa_nodes=$numa_nodes
cpu_model=$cpu_model
cpu_flags_avx512=$cpu_flags_avx512
gpu_count=$gpu_count
gpu_names=$gpu_names
gpu_vram_bytes=$gpu_vram_bytes
nvidia_driver=$nvidia_driver
cuda_major_supported=$cuda_major_supported
llama_image_variant=$llama_image_variant
model_dir=$model_dir
free_disk_path=$free_disk_path
free_disk_bytes=$free_disk_bytes
docker=$docker
docker_cli=$docker_cli
EOF

# --- requirements -------------------------------------------------------------------------
gib() { awk -v b="$1" 'BEGIN { printf "%.1f GiB (%.0f bytes)", b / 1073741824, b }'; }
shortfalls=0
short() { echo "probe: $1: host has $2; the stack says at least $3" >&2; shortfalls=$((shortfalls + 1)); }

((ram_bytes >= min_ram)) || short ram "$(gib "$ram_bytes")" "$(gib "$min_ram")"
((physical_cores >= min_cores)) || short physical_cores "$physical_cores physical cores" "$min_cores"
((numa_nodes >= min_numa)) || short numa_nodes "$numa_nodes NUMA nodes" "$min_numa"
((gpu_count >= min_gpus)) || short gpus "$gpu_count NVIDIA GPUs (driver: $nvidia_driver)" "$min_gpus"
if ((min_vram > 0)); then
  if ((gpu_count == 0)); then
    short gpu_vram "no NVIDIA GPU" "$(gib "$min_vram") per GPU"
  elif ((min_gpu_vram < min_vram)); then
    short gpu_vram "$(gib "$min_gpu_vram") on its smallest GPU (all: $gpu_vram_bytes)" "$(gib "$min_vram") per GPU"
  fi
fi
((free_disk_bytes >= min_disk)) || short free_disk "$(gib "$free_disk_bytes") free on $free_disk_path" "$(gib "$min_disk")"

echo "shortfalls=$shortfalls"
((shortfalls == 0)) || exit "$EXIT_SHORTFALL"
