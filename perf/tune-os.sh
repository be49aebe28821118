#!/usr/bin/env bash
# Kernel settings for a box that holds a million or more TCP connections (server and load
# generator on the same machine count twice: two sockets per loopback connection).
#
# Idempotent: each setting is only written when it differs (limits are only ever raised, never
# lowered); prints `key: old -> new` for what changed and `key: ok (value)` for what did not.
#   perf/tune-os.sh            apply (needs root)
#   perf/tune-os.sh --dry-run  only print what would change
#
# Not changeable here: the per-process open-file limit. RLIMIT_NOFILE's hard limit is 20,000
# on this machine and cannot be raised (not by root either: the container caps it), whatever
# fs.nr_open says; so one process holds at most ~19,900 sockets. That is why perf/c1m.sh runs
# the server as a cluster of many single-core nodes and the load generator as many workers.
set -euo pipefail

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

changed=0
say() { echo "tune-os: $*"; }

path_of() { echo "/proc/sys/${1//.//}"; }

# set KEY VALUE [raise]: "raise" = only when every field of the current value is lower.
set_key() {
    local key=$1 want=$2 mode=${3:-exact} p cur
    p=$(path_of "$key")
    if [[ ! -e "$p" ]]; then
        say "$key: not present on this kernel (skipped)"
        return 0
    fi
    cur=$(tr -s ' \t' ' ' <"$p" | sed 's/^ //; s/ $//')
    if [[ "$mode" == raise ]]; then
        # Compare field by field; keep the current value when it is already >= wanted.
        local -a c w
        read -r -a c <<<"$cur"
        read -r -a w <<<"$want"
        local lower=0 i
        for i in "${!w[@]}"; do
            if (( ${c[$i]:-0} < ${w[$i]} )); then lower=1; fi
        done
        if (( lower == 0 )); then
            say "$key: ok ($cur)"
            return 0
        fi
    elif [[ "$cur" == "$want" ]]; then
        say "$key: ok ($cur)"
        return 0
    fi
    if (( DRY )); then
        say "$key: $cur -> $want (dry run)"
    elif echo "$want" >"$p" 2>/dev/null; then
        say "$key: $cur -> $(tr -s ' \t' ' ' <"$p")"
        changed=$((changed + 1))
    else
        say "$key: could not set to $want (still $cur; not root or read-only /proc/sys?)"
    fi
}

# File handles: 2 per loopback connection system-wide plus slack.
set_key fs.file-max 4194304 raise
set_key fs.nr_open 1048576 raise
# Ephemeral ports: ~55,500 per (source address, destination) pair. Listening ports used by the
# perf scripts stay below 10000.
set_key net.ipv4.ip_local_port_range "10000 65535"
# Accept queues and SYN backlog for connect bursts (the server's --listen_backlog is 65535).
set_key net.core.somaxconn 65535 raise
set_key net.ipv4.tcp_max_syn_backlog 65535 raise
set_key net.core.netdev_max_backlog 65536 raise
# TCP memory in pages (low, pressure, high): 3, 4 and 6 GiB of socket buffers. Idle streams
# hold almost none, but bursts of replays or heartbeats to a million sockets do.
set_key net.ipv4.tcp_mem "786432 1048576 1572864" raise
# Reuse TIME_WAIT sockets for new outgoing connections (ramps that restart).
set_key net.ipv4.tcp_tw_reuse 1
# Connection tracking (when the module is loaded) would drop new connections past its table.
set_key net.netfilter.nf_conntrack_max 2097152 raise
# Orphans after a mass close of a million sockets.
set_key net.ipv4.tcp_max_orphans 1048576 raise

say "$changed setting(s) changed"
say "per-process open files: soft $(ulimit -Sn), hard $(ulimit -Hn) — the hard limit cannot be" \
    "raised here (fs.nr_open does not lift it), so keep each process at <= 19,000 sockets"
