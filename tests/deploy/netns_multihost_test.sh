#!/usr/bin/env bash
# A real multi-host run on one machine: three network namespaces are three "hosts", each
# with its own address on a private 10.x subnet, joined by veth pairs to a bridge that lives
# in a fourth namespace (so the machine's own network is never touched). mpiexec runs in
# host 1 and starts the daemons on hosts 2 and 3 through a launcher agent that enters their
# namespace with `ip netns exec` where a cluster would use ssh. Only TCP is used, for MPI
# (btl tcp,self) and for Open MPI's own out-of-band channel, both restricted to the subnet.
#
# 1. A short training on 3 ranks completes and the replicas agree (history.json's
#    replica_hashes are equal within every epoch).
# 2. The links are slowed and the same run is repeated: it completes, the replicas agree,
#    and the exposed all-reduce wait (rank_timings.allreduce_wait_ms, mean over ranks and
#    epochs) is higher than without the slowdown. Both figures are printed. The slowdown is
#    `tc qdisc add dev eth0 root netem delay 2ms` on every host; where the kernel has no
#    netem (said so loudly), every frame is held 2 ms in a user-space switch (DELAY_HUB);
#    without that either, a tbf rate limit of 400 Mbit/s.
#
# The namespaces share the filesystem, so every "host" sees the binary and the data.
# Exit 77 (CTest SKIP_RETURN_CODE) with the reason printed where namespaces cannot be made
# (not root, no CAP_NET_ADMIN, no iproute2). Every name carries this process's PID, so
# parallel runs do not collide, and a trap removes the namespaces whatever happens.
#
# usage: netns_multihost_test.sh EPOCHAL_BINARY MPIEXEC CONFIG [DELAY_HUB]
# DELAY_HUB (tests/deploy/delay_hub.cc, built by CMake) stands in for netem where the kernel
# lacks it: a user-space switch on TAP devices that holds every frame 2 ms, so the second
# run goes over a second fabric (TAP ports on the hub, subnet 10.(a+128).b) instead.
# environment: DATA_DIR (default /usr/share/datasets/fashion-mnist), KEEP_DIR=1 keeps the
# scratch directory for inspection, EPOCHAL_NETNS_TIMEOUT (seconds per run, default 240),
# EPOCHAL_NETNS_HUB_CONTROL=1 adds a run through the hub with no delay (what the hub itself
# costs), for measurements.
set -euo pipefail

binary="${1:?usage: $0 EPOCHAL_BINARY MPIEXEC CONFIG}"
mpiexec="${2:?usage: $0 EPOCHAL_BINARY MPIEXEC CONFIG}"
config="${3:?usage: $0 EPOCHAL_BINARY MPIEXEC CONFIG}"
delay_hub="${4:-}"
data_dir="${DATA_DIR:-/usr/share/datasets/fashion-mnist}"
run_timeout="${EPOCHAL_NETNS_TIMEOUT:-240}"

skip() {
  echo "SKIP: $*"
  exit 77
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ -x "$binary" ] || fail "no epochal binary at $binary"
[ -x "$mpiexec" ] || command -v "$mpiexec" >/dev/null || fail "no mpiexec at $mpiexec"
[ -f "$config" ] || fail "no config at $config"
[ -f "$data_dir/train-images-idx3-ubyte.gz" ] || fail "no Fashion-MNIST in $data_dir"

[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (CAP_NET_ADMIN); running as uid $(id -u)"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
command -v tc >/dev/null || skip "no 'tc' command (iproute2)"
command -v timeout >/dev/null || fail "no 'timeout' command (coreutils)"

pid=$$
tag="ep${pid}"
hosts=("${tag}h1" "${tag}h2" "${tag}h3")
switch_ns="${tag}sw"
# A /24 derived from the PID. The subnet lives only inside these namespaces, so it cannot
# clash with the machine's own addresses; deriving it keeps concurrent runs apart in logs.
subnet_prefix="10.$(((pid >> 8) & 255)).$((pid & 255))"
subnet="${subnet_prefix}.0/24"
addresses=("${subnet_prefix}.1" "${subnet_prefix}.2" "${subnet_prefix}.3")
# The delay hub's fabric, when it is used: another /24, on TAP devices named hub0..hub2.
hub_prefix="10.$((((pid >> 8) + 128) & 255)).$((pid & 255))"
hub_subnet="${hub_prefix}.0/24"
hub_addresses=("${hub_prefix}.1" "${hub_prefix}.2" "${hub_prefix}.3")

scratch="$(mktemp -d "${TMPDIR:-/tmp}/epochal_netns.XXXXXX")"
made_namespaces=()
cleanup() {
  local ns
  for ns in "${made_namespaces[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ "${KEEP_DIR:-0}" = 1 ]; then
    echo "scratch kept in $scratch"
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The first namespace and the bridge in it tell whether this machine lets us do this at all
# (creating a namespace needs CAP_SYS_ADMIN, the links in it CAP_NET_ADMIN).
if ! err="$(ip netns add "$switch_ns" 2>&1)"; then
  skip "cannot create a network namespace (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): ip netns add: $err"
fi
made_namespaces+=("$switch_ns")
if ! err="$(ip -n "$switch_ns" link add br0 type bridge 2>&1)"; then
  skip "cannot create links in a network namespace (needs CAP_NET_ADMIN): ip link add: $err"
fi
for ns in "${hosts[@]}"; do
  ip netns add "$ns"
  made_namespaces+=("$ns")
done

# The switch: a bridge in its own namespace, one veth pair per host.
ip -n "$switch_ns" link set br0 up
for i in 0 1 2; do
  ns="${hosts[$i]}"
  ip link add eth0 netns "$ns" type veth peer name "port$i" netns "$switch_ns"
  ip -n "$switch_ns" link set "port$i" master br0
  ip -n "$switch_ns" link set "port$i" up
  ip -n "$ns" addr add "${addresses[$i]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done
echo "hosts: ${hosts[*]} at ${addresses[*]} (subnet $subnet, bridge in $switch_ns)"

# Reachability before MPI: host 1 pings hosts 2 and 3 (bounded; a bridge port needs a
# moment to forward).
for i in 1 2; do
  ok=0
  for _ in $(seq 1 20); do
    if ip netns exec "${hosts[0]}" ping -c 1 -W 1 "${addresses[$i]}" >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.25
  done
  if [ "$ok" != 1 ] && command -v ping >/dev/null; then
    fail "host 1 cannot reach ${addresses[$i]}"
  fi
done

# The launcher agent: Open MPI calls it as `agent [options] HOST COMMAND...` where it
# would call ssh, and the command is shell text, as ssh would hand it to the remote shell.
agent="$scratch/netns-agent.sh"
{
  echo '#!/bin/sh'
  cat <<'EOF'
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
host="$1"
shift
case "$host" in
EOF
  for i in 0 1 2; do echo "  ${addresses[$i]} | ${hub_addresses[$i]}) ns=${hosts[$i]} ;;"; done
  cat <<'EOF'
  *) echo "netns-agent: unknown host $host" >&2; exit 255 ;;
esac
EOF
  echo "echo \"\$host \$ns\" >>'$scratch/agent.log'"
  # shellcheck disable=SC2016  # written literally into the agent
  echo 'exec ip netns exec "$ns" /bin/sh -c "$*"'
} >"$agent"
chmod +x "$agent"

for a in "${addresses[@]}"; do echo "$a slots=1"; done >"$scratch/hostfile"
for a in "${hub_addresses[@]}"; do echo "$a slots=1"; done >"$scratch/hostfile.hub"

# A short real training: 3 ranks x 16 samples a step, 480 training samples (10 steps an
# epoch), 2 epochs, one thread per rank.
# train OUT HOSTFILE SUBNET ADDRESSES...
train() {
  local out="$1" hostfile="$2" net="$3"
  shift 3
  local -a addrs=("$@")
  local log
  log="$scratch/$(basename "$out").log"
  local rc=0
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
    timeout --kill-after=10 "$run_timeout" \
    ip netns exec "${hosts[0]}" "$mpiexec" \
    -np 3 --hostfile "$hostfile" --bind-to none \
    --mca plm_rsh_agent "$agent" --mca plm_rsh_no_tree_spawn 1 \
    --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include "$net" \
    --mca oob_tcp_if_include "$net" \
    "$binary" train --config "$config" --data-dir "$data_dir" --out "$out" \
    --epochs 2 --batch-size 16 --limit-train 480 --limit-val 200 --threads 1 --no-scan \
    ${EPOCHAL_NETNS_TRAIN_ARGS:-} >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -n 40 "$log" >&2
    [ "$rc" = 124 ] && fail "training over the namespaces did not finish in ${run_timeout}s"
    fail "training over the namespaces failed (exit $rc); log above"
  fi
  if [ ! -f "$out/history.json" ]; then
    grep -v ETA "$log" | tail -n 40 >&2
    fail "mpiexec exited 0 but wrote no $out/history.json; log above"
  fi
  if grep -q "differ from rank 0" "$log"; then fail "the trainer reported diverged replicas"; fi
  # Hosts 2 and 3 were reached through the agent, so their ranks ran in their namespaces.
  for i in 1 2; do
    grep -qx "${addrs[$i]} ${hosts[$i]}" "$scratch/agent.log" ||
      fail "the launcher never started a daemon on ${addrs[$i]} through the agent"
  done
  rm -f "$scratch/agent.log"
}

# history.json flattened to one line, for the checks below (no JSON tool is assumed).
flat() { tr -d ' \n\t' <"$1/history.json"; }

# Every epoch has 3 replica hashes and they are equal.
check_replicas() {
  local out="$1" epochs=0 line
  while read -r line; do
    epochs=$((epochs + 1))
    local hashes
    hashes="$(echo "$line" | grep -o '"[0-9a-f]\{16\}"' | sort -u | wc -l)"
    local count
    count="$(echo "$line" | grep -o '"[0-9a-f]\{16\}"' | wc -l)"
    [ "$count" = 3 ] || fail "epoch $epochs: $count replica hashes, expected 3: $line"
    [ "$hashes" = 1 ] || fail "epoch $epochs: replicas differ: $line"
  done < <(flat "$out" | grep -o '"replica_hashes":\[[^]]*\]')
  [ "$epochs" = 2 ] || fail "$out: $epochs epochs with replica hashes, expected 2"
  echo "replicas agree after each of $epochs epochs"
}

# Mean of rank_timings.allreduce_wait_ms over ranks and epochs (ms per step).
mean_wait_ms() {
  flat "$1" | grep -o '"allreduce_wait_ms":[-0-9.eE+]*' | cut -d: -f2 |
    awk '{ s += $1; n++ } END { if (n == 0) exit 1; printf "%.3f\n", s / n }'
}
# Mean step time, for context.
mean_step_ms() {
  flat "$1" | grep -o '"step_ms":[-0-9.eE+]*' | cut -d: -f2 |
    awk '{ s += $1; n++ } END { if (n == 0) exit 1; printf "%.3f\n", s / n }'
}

echo "run 1: links as they are"
train "$scratch/plain" "$scratch/hostfile" "$subnet" "${addresses[@]}"
check_replicas "$scratch/plain"
plain_wait="$(mean_wait_ms "$scratch/plain")"
plain_step="$(mean_step_ms "$scratch/plain")"

# The delay hub: start_hub DELAY_US creates TAP ports hub0..hub2 in the switch namespace,
# moves hub<i> into host i with its hub_addresses entry; stop_hub ends it (the
# TAP devices go with it).
hub_pid=""
start_hub() {
  local i ns
  : >"$scratch/hub.out"
  ip netns exec "$switch_ns" "$delay_hub" "$1" hub0 hub1 hub2 >"$scratch/hub.out" 2>&1 &
  hub_pid=$!
  for _ in $(seq 1 40); do
    grep -q ready "$scratch/hub.out" && break
    kill -0 "$hub_pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q ready "$scratch/hub.out" || fail "the delay hub did not start: $(cat "$scratch/hub.out")"
  for i in 0 1 2; do
    ns="${hosts[$i]}"
    ip -n "$switch_ns" link set "hub$i" netns "$ns"
    ip -n "$ns" addr add "${hub_addresses[$i]}/24" dev "hub$i"
    ip -n "$ns" link set "hub$i" mtu 9000 up
  done
}
stop_hub() {
  kill "$hub_pid" 2>/dev/null || true
  wait "$hub_pid" 2>/dev/null || true
  hub_pid=""
}

# One slowed run: OUT NAME HOSTFILE SUBNET ADDRESSES...; sets last_wait and last_step.
slowed_run() {
  local out="$1" name="$2"
  shift 2
  echo "run: $name"
  train "$out" "$@"
  check_replicas "$out"
  last_wait="$(mean_wait_ms "$out")"
  last_step="$(mean_step_ms "$out")"
}

# Slow the links. netem on every host's eth0 (egress: every message between two hosts
# crosses one such link) where the kernel has it; else the delay hub (2 ms in the switch,
# so also one delay per message); else a tbf rate limit (a slower link rather than a
# longer one, which raises the exposed wait as well).
control_line=""
if netem_err="$(ip netns exec "${hosts[0]}" tc qdisc add dev eth0 root netem delay 2ms 2>&1)"; then
  for ns in "${hosts[1]}" "${hosts[2]}"; do
    ip netns exec "$ns" tc qdisc add dev eth0 root netem delay 2ms
  done
  slowdown="netem delay 2ms"
  slowed_run "$scratch/slowed" "links slowed ($slowdown)" "$scratch/hostfile" "$subnet" "${addresses[@]}"
elif [ -n "$delay_hub" ] && [ -x "$delay_hub" ] && [ -c /dev/net/tun ]; then
  echo "NOTE: 'tc qdisc add dev eth0 root netem delay 2ms' failed: ${netem_err}" \
    "(this kernel lacks the netem qdisc, CONFIG_NET_SCH_NETEM);" \
    "delaying every frame 2 ms in a user-space switch (delay_hub) instead"
  if [ "${EPOCHAL_NETNS_HUB_CONTROL:-0}" = 1 ]; then
    start_hub 0
    slowed_run "$scratch/hub0" "through the delay hub, no delay (control)" \
      "$scratch/hostfile.hub" "$hub_subnet" "${hub_addresses[@]}"
    stop_hub
    control_line="  delay hub, 0 ms: ${last_wait} ms (step ${last_step} ms)"
  fi
  start_hub 2000
  slowdown="delay hub 2 ms"
  slowed_run "$scratch/slowed" "links delayed ($slowdown)" \
    "$scratch/hostfile.hub" "$hub_subnet" "${hub_addresses[@]}"
  stop_hub
else
  echo "NOTE: 'tc qdisc add dev eth0 root netem delay 2ms' failed: ${netem_err}" \
    "(this kernel lacks the netem qdisc, CONFIG_NET_SCH_NETEM), and no delay hub" \
    "(or no /dev/net/tun); slowing the links with a tbf rate limit of 400mbit instead"
  for ns in "${hosts[@]}"; do
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate 400mbit burst 64kb latency 400ms ||
      fail "neither netem nor tbf can be set on the links"
  done
  slowdown="tbf rate 400mbit"
  slowed_run "$scratch/slowed" "links slowed ($slowdown)" "$scratch/hostfile" "$subnet" "${addresses[@]}"
fi
slowed_wait="$last_wait"
slowed_step="$last_step"

echo "exposed all-reduce wait, mean ms per step over 3 ranks x 2 epochs:"
echo "  links as they are: ${plain_wait} ms (step ${plain_step} ms)"
[ -z "$control_line" ] || echo "$control_line"
echo "  ${slowdown}: ${slowed_wait} ms (step ${slowed_step} ms)"
if ! awk -v a="$plain_wait" -v b="$slowed_wait" 'BEGIN { exit !(b > a) }'; then
  fail "the exposed all-reduce wait did not rise with the slowed links ($plain_wait -> $slowed_wait ms)"
fi
echo "PASS: 3 hosts over TCP, replicas agree, exposed wait rose with $slowdown"
