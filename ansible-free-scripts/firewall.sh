#!/usr/bin/env bash
# Usage: firewall.sh apply  [--table NAME] --allow PORT=CIDR[,CIDR...] [--allow ...] [--dry-run]
#        firewall.sh remove [--table NAME]
#        firewall.sh show   [--table NAME]
#
# Keeps the kit's host firewall rules in ONE nftables table of its own (default `inet kimi_kit`):
# for each --allow, TCP connections to PORT are admitted from the listed IPv4 CIDRs (and from the
# host itself, over loopback) and dropped from everywhere else, IPv6 included. Nothing else is
# filtered: other ports are not matched by any rule of this table, and an --allow for port 22 or a
# port sshd listens on is refused.
#
# `apply` replaces the whole table in one `nft -f` transaction (the table is declared, deleted and
# defined again in the same file), so there is never a moment without the rules, and re-running
# with the same arguments leaves the same ruleset. No other table, chain or rule is read, flushed or
# changed. `remove` deletes only this table (and succeeds when it is already gone). --dry-run
# prints the nft script instead of loading it. nftables (the Debian package) is installed when
# `nft` is missing.
#
# The table's base chain hooks `input` at priority filter - 10: a drop here is final for the
# packet, an accept only means "this table does not object" (another table may still drop it).
# Exit codes: 0 done, 1 failed, 2 bad usage.
set -euo pipefail

export script_name=firewall.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-common.sh
source "$script_dir/lib-common.sh"

action=${1:-}
need_action "$action" apply remove show
shift

table=kimi_kit dry_run=no
allows=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit "$EXIT_OK" ;;
    --table)
      need_value "$1" $#
      [[ "$2" =~ ^kimi_kit[a-z0-9_]{0,40}$ ]] || die_usage "--table wants a name starting with kimi_kit (letters, digits, _), got '$2'"
      table=$2; shift 2 ;;
    --allow)
      need_value "$1" $#
      [[ "$2" == *=* ]] || die_usage "--allow wants PORT=CIDR[,CIDR...], got '$2'"
      need_port "--allow" "${2%%=*}"
      # SSH is never the kit's to filter: a wrong CIDR list would lock the operator out.
      if [[ "${2%%=*}" == 22 ]] || { have ss && ss -Hltnp "( sport = :${2%%=*} )" 2>/dev/null | grep -q '"sshd"'; }; then
        die_usage "--allow ${2%%=*}: that is an SSH port; the kit never filters SSH"
      fi
      IFS=, read -r -a cidrs <<<"${2#*=}"
      ((${#cidrs[@]} > 0)) || die_usage "--allow $2: at least one CIDR"
      for cidr in "${cidrs[@]}"; do need_cidr "--allow" "$cidr"; done
      allows+=("$2"); shift 2 ;;
    --dry-run) dry_run=yes; shift ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done

ensure_nft() {
  have nft && return 0
  apt_install_missing nftables >/dev/null
  have nft || die "nft is still missing after installing nftables"
}

case "$action" in
  show)
    ensure_nft
    nft list table inet "$table" 2>/dev/null || echo "table inet $table: absent"
    exit "$EXIT_OK" ;;
  remove)
    need_root
    ensure_nft
    if nft list table inet "$table" >/dev/null 2>&1; then
      nft delete table inet "$table"
      echo "firewall=removed table=inet $table"
    else
      echo "firewall=absent table=inet $table"
    fi
    exit "$EXIT_OK" ;;
esac

((${#allows[@]} > 0)) || die_usage "apply needs at least one --allow PORT=CIDR[,CIDR...]"

# One element list per port, in a stable order: the same arguments always give the same script.
mapfile -t allows < <(printf '%s\n' "${allows[@]}" | sort -t= -k1,1n -s)
ports=()
rules=""
for allow in "${allows[@]}"; do
  port=${allow%%=*}
  for seen in "${ports[@]}"; do [[ "$seen" == "$port" ]] && die_usage "--allow: port $port is given twice; list its CIDRs once, comma-separated"; done
  ports+=("$port")
  elements=$(tr , '\n' <<<"${allow#*=}" | sort -u | paste -sd, - | sed 's/,/, /g')
  rules+="    iif \"lo\" tcp dport $port accept
    tcp dport $port ip saddr { $elements } counter accept
    tcp dport $port counter drop
"
done

script="# kimi-kit firewall.sh: the kit's own table, replaced as a whole.
table inet $table
delete table inet $table
table inet $table {
  chain input {
    type filter hook input priority filter - 10; policy accept;
$rules  }
}
"

if [[ "$dry_run" == yes ]]; then
  printf '%s' "$script"
  exit "$EXIT_OK"
fi
need_root
ensure_nft
nft -c -f - <<<"$script" || die "nft refused the rules (checked, nothing loaded)"
nft -f - <<<"$script"
echo "firewall=applied table=inet $table ports=$(paste -sd, - < <(printf '%s\n' "${ports[@]}"))"
