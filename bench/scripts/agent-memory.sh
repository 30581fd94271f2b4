#!/usr/bin/env bash
# Proxy RSS per agent tunnel with N simulated agents (release build; loopback ports 4190/4191).
# Usage: bench/scripts/agent-memory.sh [N]
set -euo pipefail
N=${1:-1000}
H=${HOP:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)/target/release/hop}  # cargo build --release -p hop first
D=$(mktemp -d)
cat > $D/hop.yaml <<CFG
version: v1
hop:
  data_dir: $D/data
  diag_addr: 127.0.0.1:4191
auth_service:
  cluster_name: m.test
  login:
    attempts_per_ip_per_minute: 1000000
proxy_service:
  listen_addr: 127.0.0.1:4190
  max_connections_per_ip: 100000
CFG
$H start --config $D/hop.yaml > $D/out 2> $D/err &
P=$!
sleep 3
PIN=$(grep "CA pin" $D/out | awk '{print $3}')
TOK=$($H admin -d $D/data tokens add --type app --ttl 2h --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
# Join once, caching identities; then measure on a fresh proxy with cached identities.
timeout 120 $H admin -d $D/cache loadtest agents --count $N --proxy 127.0.0.1:4190 --ca-pin $PIN --token $TOK --duration 5s > $D/join.out 2>&1 || true
kill $P; wait $P 2>/dev/null || true
$H start --config $D/hop.yaml > $D/out2 2> $D/err2 &
P=$!
sleep 15
BASE=$(grep VmRSS /proc/$P/status | awk '{print $2}')
$H admin -d $D/cache loadtest agents --count $N --proxy 127.0.0.1:4190 --ca-pin $PIN --token $TOK --duration 60s > $D/lt.out 2>&1 &
L=$!
for i in $(seq 1 120); do
  c=$(curl -s 127.0.0.1:4191/metrics | grep '^hop_proxy_tunnels_connected' | awk '{print $2}')
  [ "${c:-0}" = "$N" ] && break
  sleep 1
done
sleep 10
LOADED=$(grep VmRSS /proc/$P/status | awk '{print $2}')
echo "agents=$c base_kib=$BASE loaded_kib=$LOADED per_agent_kib=$(( (LOADED-BASE)/N ))"
kill $L 2>/dev/null || true; kill $P; wait $P 2>/dev/null || true
rm -rf $D
