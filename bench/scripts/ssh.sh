#!/usr/bin/env bash
# SSH through Hop beside SSH straight to the same OpenSSH sshd, in one run (issue 4's benchmark):
#   - scp of SIZE MiB of random data, REPEATS times per contender, contenders interleaved, every
#     copy checked with cmp;
#   - new SSH sessions per second (`ssh HOST true`, SESSIONS in a row, one at a time).
# Contenders: `direct` (scp/ssh to sshd with the Hop user certificate), `hop-openssh` (the same
# sshd registered as an agentless node: the proxy terminates SSH and opens its own connection),
# `hop-node` (a node agent through its reverse tunnel; SSH end to end from the client to the
# agent's russh server, sftp-server behind it). Prints medians, spreads, ratios to direct, and the
# CPU-seconds of the appliance and the node agent per GiB moved.
#
# Usage: cargo build --release -p hop; bench/scripts/ssh.sh [SIZE_MIB] [REPEATS] [SESSIONS]
# Needs: openssh-client, openssh-server (sshd), openssh-sftp-server, oathtool, python3.
set -euo pipefail
SIZE=${1:-1024}
REP=${2:-3}
SESS=${3:-50}
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
H=${HOP:-$ROOT/target/release/hop}
[ -x "$H" ] || { echo "build hop first: cargo build --release -p hop (or set HOP=)" >&2; exit 2; }
D=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(port); SP=$(port); DIAG=$(port)
cat > "$D/hop.yaml" <<CFG
version: v1
hop:
  data_dir: $D/data
  diag_addr: 127.0.0.1:$DIAG
auth_service:
  cluster_name: b.test
  login:
    attempts_per_ip_per_minute: 1000000
proxy_service:
  listen_addr: 127.0.0.1:$P
CFG
"$H" start --config "$D/hop.yaml" > "$D/hop.out" 2> "$D/hop.err" &
HOP_PID=$!; PIDS+=("$HOP_PID")
for _ in $(seq 100); do grep -q "CA pin" "$D/hop.out" 2>/dev/null && break; sleep 0.1; done
PIN=$(grep "CA pin" "$D/hop.out" | awk '{print $3}')
A() { "$H" admin -d "$D/data" "$@"; }
export HOP_HOME=$D/home

# A user who may log in as root.
TOKEN=$(A users add bench --roles access --logins root --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
printf 'correct horse battery staple\n' | "$H" signup "$TOKEN" --proxy 127.0.0.1:$P --ca-pin "$PIN" \
  --password-stdin --totp-secret-file "$D/totp" > /dev/null
CODE=$(oathtool --totp -b --now "@$(( $(date +%s) + 30 ))" "$(cat "$D/totp")")
printf 'correct horse battery staple\n' | "$H" login --proxy 127.0.0.1:$P --ca-pin "$PIN" --user bench \
  --password-stdin --otp "$CODE" > /dev/null

# sshd trusting Hop's user CA, with a host certificate from Hop's host CA.
A auth sign --format openssh --host web1,127.0.0.1 --out "$D/web1" > /dev/null
# `direct` logs in with the user's own certificate, which only the user CA signs (the agentless
# route signs with the OpenSSH CA): this sshd trusts both.
A auth export --type user >> "$D/web1-user-ca.pub"
mkdir -p /run/sshd
cat > "$D/sshd_config" <<CFG
Port $SP
ListenAddress 127.0.0.1
HostKey $D/web1
HostCertificate $D/web1-cert.pub
TrustedUserCAKeys $D/web1-user-ca.pub
PidFile $D/sshd.pid
UsePAM no
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -D -f "$D/sshd_config" -E "$D/sshd.log" &
PIDS+=("$!")
A nodes add --openssh --name web1 --addr 127.0.0.1:$SP > /dev/null

# A node agent.
NT=$(A tokens add --type node --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
"$H" start --roles node --proxy 127.0.0.1:$P --ca-pin "$PIN" --token "$NT" --nodename node1 \
  --data-dir "$D/node" > "$D/node.out" 2> "$D/node.err" &
NODE_PID=$!; PIDS+=("$NODE_PID")
for _ in $(seq 100); do "$H" ls 2>/dev/null | grep -q node1 && break; sleep 0.2; done
sleep 1

"$H" config > "$D/ssh_config"
KEYS=$(dirname "$(grep -m1 IdentityFile "$D/ssh_config" | awk '{print $2}' | tr -d '"')")
KEY=$(grep -m1 IdentityFile "$D/ssh_config" | awk '{print $2}' | tr -d '"')
DIRECT=(-o BatchMode=yes -o IdentitiesOnly=yes -i "$KEY" -o "CertificateFile=$KEY-cert.pub"
        -o "UserKnownHostsFile=$D/direct_known_hosts" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=accept-new)

head -c $((SIZE * 1024 * 1024)) /dev/urandom > "$D/src"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The whole machine's busy and total ticks (every core): a copy that leaves cores idle is
# waiting on something other than CPU.
busy() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6 ":" t}' /proc/stat; }
HZ=$(getconf CLK_TCK)

copy() { # contender -> seconds
  local c=$1 dst=$D/dst-$1 t0 t1
  rm -f "$dst"
  t0=$(date +%s.%N)
  case $c in
    direct) scp -q -P "$SP" "${DIRECT[@]}" "$D/src" "root@127.0.0.1:$dst" ;;
    hop-openssh) scp -q -F "$D/ssh_config" "$D/src" "root@web1.b.test:$dst" ;;
    hop-node) scp -q -F "$D/ssh_config" "$D/src" "root@node1.b.test:$dst" ;;
  esac
  t1=$(date +%s.%N)
  cmp -s "$D/src" "$dst" || { echo "copy through $c is not byte-exact" >&2; exit 1; }
  python3 -c "print($t1 - $t0)"
}
sessions() { # contender -> sessions per second
  local c=$1 t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq "$SESS"); do
    case $c in
      direct) ssh -p "$SP" "${DIRECT[@]}" root@127.0.0.1 true ;;
      hop-openssh) ssh -F "$D/ssh_config" root@web1.b.test true ;;
      hop-node) ssh -F "$D/ssh_config" root@node1.b.test true ;;
    esac
  done
  t1=$(date +%s.%N)
  python3 -c "print($SESS / ($t1 - $t0))"
}

CONTENDERS=(direct hop-openssh hop-node)
declare -A SECS CPU SPS BUSY
for r in $(seq "$REP"); do
  # Interleaved, in a rotating order, so that load drift hits every contender alike.
  for i in 0 1 2; do
    c=${CONTENDERS[$(( (i + r) % 3 ))]}
    h0=$(ticks "$HOP_PID"); n0=$(ticks "$NODE_PID"); m0=$(busy)
    s=$(copy "$c")
    h1=$(ticks "$HOP_PID"); n1=$(ticks "$NODE_PID"); m1=$(busy)
    SECS[$c]+="$s "
    CPU[$c]+="$(( h1 - h0 )):$(( n1 - n0 )) "
    BUSY[$c]+="$(python3 -c "b0,t0=map(int,'$m0'.split(':'));b1,t1=map(int,'$m1'.split(':'));print(round(100*(b1-b0)/max(1,t1-t0)))") "
    echo "round $r $c: ${s}s" >&2
  done
done
for c in "${CONTENDERS[@]}"; do SPS[$c]=$(sessions "$c"); done

python3 - "$SIZE" "$HZ" "$SESS" <<PY
import statistics, sys
size, hz, sess = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
secs = {c: [float(x) for x in v.split()] for c, v in {
    "direct": "${SECS[direct]}", "hop-openssh": "${SECS[hop-openssh]}", "hop-node": "${SECS[hop-node]}"}.items()}
cpu = {c: [tuple(int(t) for t in x.split(":")) for x in v.split()] for c, v in {
    "direct": "${CPU[direct]}", "hop-openssh": "${CPU[hop-openssh]}", "hop-node": "${CPU[hop-node]}"}.items()}
busy = {c: [int(x) for x in v.split()] for c, v in {
    "direct": "${BUSY[direct]}", "hop-openssh": "${BUSY[hop-openssh]}", "hop-node": "${BUSY[hop-node]}"}.items()}
sps = {"direct": float("${SPS[direct]}"), "hop-openssh": float("${SPS[hop-openssh]}"), "hop-node": float("${SPS[hop-node]}")}
gib = size / 1024
base = size / statistics.median(secs["direct"])
print(f"scp of {size} MiB, {len(secs['direct'])} runs each, interleaved; {sess} sessions in a row")
print(f"| contender | MiB/s median | MiB/s range | x direct | appliance CPU-s/GiB | node agent CPU-s/GiB | machine busy % | sessions/s | x direct |")
print(f"|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in ["direct", "hop-openssh", "hop-node"]:
    rates = [size / s for s in secs[c]]
    med = statistics.median(rates)
    hop_cpu = statistics.median(h / hz for h, _ in cpu[c]) / gib
    node_cpu = statistics.median(n / hz for _, n in cpu[c]) / gib
    print(f"| {c} | {med:.1f} | {min(rates):.1f}-{max(rates):.1f} | {med / base:.2f} | {hop_cpu:.2f} | {node_cpu:.2f} | {statistics.median(busy[c])} | {sps[c]:.1f} | {sps[c] / sps['direct']:.2f} |")
PY
