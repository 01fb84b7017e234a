#!/bin/bash
# dots-lb: spread DOTS Call Home homes (DTLS over UDP and TLS over TCP) over several listener
# processes behind one address with nftables DNAT; conntrack keeps each flow on its backend.
# See scripts/lb/README.md. Needs root, nft and (for check/watch) conntrack.
#
#   dots-lb.sh apply    --vip ADDR [--port 4647] [--mode hash|rr|random] [--seed N] [--table dots_lb] --backend ADDR[:PORT] ...
#   dots-lb.sh check    (same options)  probe every backend once, keep only the live ones in the map,
#                                       and drop the conntrack entries of the dead ones
#   dots-lb.sh watch    (same options) [--interval S]   check every S seconds (default 5)
#   dots-lb.sh teardown [--table dots_lb]
#
# Every run prints one JSON line: {"action":...,"live":[...],"dead":[...]}.
set -eu

VIP=""
PORT=4647
MODE=hash
TABLE=dots_lb
INTERVAL=5
PROBE_TIMEOUT=1
BACKENDS=""
SEED=""

die() {
  printf 'dots-lb: %s\n' "$1" >&2
  exit 2
}

ACTION="${1:-}"
[ -n "$ACTION" ] || die "usage: dots-lb.sh apply|check|watch|teardown [options] (see the header of this script)"
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --vip) VIP="${2:?--vip needs an address}"; shift 2 ;;
    --port) PORT="${2:?--port needs a number}"; shift 2 ;;
    --mode) MODE="${2:?--mode needs hash, rr or random}"; shift 2 ;;
    --table) TABLE="${2:?--table needs a name}"; shift 2 ;;
    --interval) INTERVAL="${2:?--interval needs seconds}"; shift 2 ;;
    --probe-timeout) PROBE_TIMEOUT="${2:?--probe-timeout needs seconds}"; shift 2 ;;
    --seed) SEED="${2:?--seed needs a number}"; shift 2 ;;
    --backend) BACKENDS="$BACKENDS ${2:?--backend needs ADDR[:PORT]}"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done

# Checked before anything reaches nft: these values are pasted into the ruleset.
is_ipv4() { printf '%s' "$1" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}$'; }
is_port() { printf '%s' "$1" | grep -Eq '^[0-9]{1,5}$' && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
printf '%s' "$TABLE" | grep -Eq '^[A-Za-z][A-Za-z0-9_]{0,31}$' || die "--table: letters, digits and _ (at most 32)"
# jhash seed: without one the kernel draws a random seed per rule, so every check (which rebuilds
# the rule) and every balancer host would map new flows differently. A fixed seed, by default
# derived from VIP and port, gives every balancer host of one VIP the same map (ECMP between them).
if [ -z "$SEED" ]; then SEED=$(printf '%s:%s' "$VIP" "$PORT" | cksum | cut -d' ' -f1); fi
printf '%s' "$SEED" | grep -Eq '^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$' && [ $((SEED)) -le 4294967295 ] || die "--seed: 0..4294967295 (decimal or 0x hex)"
SEED=$(printf '0x%08x' $((SEED)))
AFTER=""
case "$MODE" in
  hash) PICK="jhash ip saddr . th sport mod"; AFTER="seed $SEED" ;;  # deterministic per home address and port
  rr) PICK="numgen inc mod" ;;                   # round robin over new flows
  random) PICK="numgen random mod" ;;            # as kube-proxy's nftables mode
  *) die "--mode must be hash, rr or random" ;;
esac
printf '%s' "$INTERVAL" | grep -Eq '^[0-9]+$' && [ "$INTERVAL" -ge 1 ] || die "--interval: whole seconds >= 1"
printf '%s' "$PROBE_TIMEOUT" | grep -Eq '^[0-9]+$' && [ "$PROBE_TIMEOUT" -ge 1 ] || die "--probe-timeout: whole seconds >= 1"

backend_list() {
  for b in $BACKENDS; do
    addr="${b%%:*}"
    bport="$PORT"
    [ "$addr" != "$b" ] && bport="${b#*:}"
    is_ipv4 "$addr" || die "--backend $b: an IPv4 address (this recipe is IPv4; see README.md for IPv6)"
    is_port "$bport" || die "--backend $b: bad port"
    printf '%s:%s\n' "$addr" "$bport"
  done
}

json_list() {
  out=""
  for x in $1; do out="$out${out:+,}\"$x\""; done
  printf '[%s]' "$out"
}

# The whole table in one nft transaction: the map changes atomically, established flows keep
# their conntrack entries (NAT is decided once per flow).
apply_live() {
  live="$1"
  n=0
  elems=""
  for b in $live; do
    elems="$elems${elems:+, }$n : ${b%%:*} . ${b#*:}"
    n=$((n + 1))
  done
  rule=""
  if [ "$n" -gt 0 ]; then
    rule="ip daddr $VIP meta l4proto { tcp, udp } th dport $PORT dnat ip to $PICK $n${AFTER:+ $AFTER} map { $elems }"
  fi
  nft -f - <<EOF
table ip $TABLE
delete table ip $TABLE
table ip $TABLE {
  comment "dots-lb: $VIP:$PORT mode $MODE"
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    $rule
  }
  chain output {
    type nat hook output priority -100; policy accept;
    $rule
  }
}
EOF
}

probe() {
  # a TCP connect to the listener's port: the listener serves TLS on TCP and DTLS on UDP there
  timeout "$PROBE_TIMEOUT" bash -c "exec 3<>/dev/tcp/${1%%:*}/${1#*:}" 2>/dev/null
}

check_once() {
  live=""
  dead=""
  for b in $(backend_list); do
    if probe "$b"; then live="$live $b"; else dead="$dead $b"; fi
  done
  apply_live "$live"
  for b in $dead; do
    # flows already sent to a dead backend would stay there: forget them, the next packet is NATed anew
    conntrack -D -p udp --orig-dst "$VIP" --reply-src "${b%%:*}" --reply-port-src "${b#*:}" >/dev/null 2>&1 || true
    conntrack -D -p tcp --orig-dst "$VIP" --reply-src "${b%%:*}" --reply-port-src "${b#*:}" >/dev/null 2>&1 || true
  done
  printf '{"action":"check","vip":"%s","port":%s,"live":%s,"dead":%s}\n' "$VIP" "$PORT" "$(json_list "$live")" "$(json_list "$dead")"
}

case "$ACTION" in
  apply)
    is_ipv4 "$VIP" || die "--vip: an IPv4 address"
    is_port "$PORT" || die "--port: 1..65535"
    list="$(backend_list)"
    [ -n "$list" ] || die "give at least one --backend"
    apply_live "$(printf '%s' "$list" | tr '\n' ' ')"
    printf '{"action":"apply","vip":"%s","port":%s,"live":%s,"dead":[]}\n' "$VIP" "$PORT" "$(json_list "$list")"
    ;;
  check | watch)
    is_ipv4 "$VIP" || die "--vip: an IPv4 address"
    is_port "$PORT" || die "--port: 1..65535"
    [ -n "$(backend_list)" ] || die "give at least one --backend"
    check_once
    if [ "$ACTION" = watch ]; then
      while sleep "$INTERVAL"; do check_once; done
    fi
    ;;
  teardown)
    nft delete table ip "$TABLE" 2>/dev/null || true
    printf '{"action":"teardown","table":"%s"}\n' "$TABLE"
    ;;
  *) die "unknown action $ACTION: apply, check, watch or teardown" ;;
esac
