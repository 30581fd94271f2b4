#!/usr/bin/env bash
# `kubectl get pods`-style requests through Hop's kube route beside the same requests straight
# to the same API server stand-in, in one run (issue 21's benchmark):
#   - the API server: no kube-apiserver can be installed here, and the Python stand-in of the
#     tests (appliance/tests/fixtures/kube_apiserver.py) would be the bottleneck, so the GETs go
#     to a tiny fast stand-in: HAProxy terminating TLS with client-certificate verification
#     (`verify required`) and answering GET /api/v1/namespaces/default/pods itself with a canned
#     PodList (`http-request return ... file`);
#   - the client: wrk cannot present a client certificate, so wrk talks plain HTTP to a
#     client-side HAProxy that opens keep-alive TLS connections with the certificate, the same
#     for both contenders:
#       direct: wrk → HAProxy (the agent's client certificate) → stand-in
#       hop:    wrk → HAProxy (the user's kube certificate from `hop kube credentials`, TLS name
#               kube.localhost) → Hop's proxy → the kube agent's data connection → stand-in;
#   - exec setup: `kubectl exec -i web-1 -- sh` typing `exit 0`, through Hop and straight to
#     the Python stand-in (which serves exec), timed end to end; the difference is Hop's.
# Contenders alternate, ROUNDS rounds of DURATION seconds each. Reports requests per second, Hop's
# ratio to direct, and the proxy's and the agent's CPU microseconds per request (user+system from
# /proc), medians over the rounds.
#
# Usage: cargo build --release -p hop; bench/scripts/kube.sh [DURATION_S] [ROUNDS] [CONNECTIONS]
# Needs: wrk, haproxy, openssl, oathtool, python3, kubectl, and scripts/kube-test-tools (aiohttp).
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-32}
THREADS=${THREADS:-2}
EXECS=${EXECS:-10}
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
H=${HOP:-$ROOT/target/release/hop}
[ -x "$H" ] || { echo "build hop first: cargo build --release -p hop (or set HOP=)" >&2; exit 2; }
for t in wrk haproxy openssl oathtool python3 kubectl; do
  command -v "$t" > /dev/null || { echo "missing: $t" >&2; exit 2; }
done
TOOLS=$("$ROOT/scripts/kube-test-tools")
PY="$TOOLS/kube-venv/bin/python"
D=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(port); DIAG=$(port); API=$(port); FAST=$(port); CL_HOP=$(port); CL_DIRECT=$(port)
PASSWORD='correct horse battery staple'
PODS=/api/v1/namespaces/default/pods

# PKI of the stand-ins: a CA, a server certificate for 127.0.0.1, the agent's client certificate.
mkdir -p "$D/pki"
(
  cd "$D/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-kube-ca -keyout ca.key -out ca.crt
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kube-apiserver -keyout server.key -out server.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out server.crt -extfile san.ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /O=system:masters/CN=hop-kube-agent -keyout client.key -out client.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out client.crt -extfile client.ext
  cat server.crt server.key > server.pem
  cat client.crt client.key > client.pem
) 2> /dev/null
kubeconfig() { # SERVER_PORT FILE: the agent's kubeconfig for a stand-in
  cat > "$2" <<CFG
apiVersion: v1
kind: Config
clusters:
- name: s
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority: $D/pki/ca.crt
users:
- name: agent
  user:
    client-certificate: $D/pki/client.crt
    client-key: $D/pki/client.key
contexts:
- name: s
  context: {cluster: s, user: agent}
current-context: s
CFG
}
kubeconfig "$FAST" "$D/fast.kubeconfig"
kubeconfig "$API" "$D/standin.kubeconfig"

# The Python stand-in (exec), and the fast one (GETs): a canned PodList of two pods.
"$PY" "$ROOT/appliance/tests/fixtures/kube_apiserver.py" "$D/pki" "$API" > "$D/standin.log" 2>&1 &
PIDS+=("$!")
python3 - > "$D/pods.json" <<'PY'
import json
pod = lambda n: {"metadata": {"name": n, "namespace": "default", "uid": "uid-" + n, "resourceVersion": "1",
                 "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "spec": {"containers": [{"name": "main", "image": "busybox"}]},
                 "status": {"phase": "Running"}}
print(json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                  "items": [pod("web-1"), pod("web-2")]}, separators=(",", ":")))
PY
cat > "$D/fast.cfg" <<CFG
global
  maxconn 4096
  nbthread 1
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend apiserver
  bind 127.0.0.1:$FAST ssl crt $D/pki/server.pem ca-file $D/pki/ca.crt verify required alpn http/1.1
  http-request return status 200 content-type application/json file $D/pods.json if { path $PODS }
  http-request return status 404 content-type application/json string '{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}'
CFG
haproxy -db -f "$D/fast.cfg" > "$D/fast.log" 2>&1 &
FAST_PID=$!; PIDS+=("$FAST_PID")

# Hop at localhost:P (its kube endpoint: TLS name kube.localhost), a kube role, a user holding
# only it, a kube agent joined by token publishing both stand-ins.
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
  public_addr: ["localhost:$P"]
CFG
"$H" start --config "$D/hop.yaml" > "$D/hop.out" 2> "$D/hop.err" &
HOP_PID=$!; PIDS+=("$HOP_PID")
for _ in $(seq 100); do grep -q "CA pin" "$D/hop.out" 2>/dev/null && break; sleep 0.1; done
PIN=$(grep "CA pin" "$D/hop.out" | awk '{print $3}')
A() { "$H" admin -d "$D/data" "$@"; }
cat > "$D/role.yaml" <<CFG
kind: role
version: v7
metadata:
  name: kube-bench
spec:
  allow:
    kubernetes_labels:
      env: bench
    kubernetes_users: [bench]
    kubernetes_groups: [bench]
CFG
A create -f "$D/role.yaml" > /dev/null
TOKEN=$(A users add bench --roles kube-bench --logins nobody --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
export HOP_HOME=$D/home KUBECONFIG=$D/kubeconfig
printf '%s\n' "$PASSWORD" | "$H" signup "$TOKEN" --proxy 127.0.0.1:$P --ca-pin "$PIN" \
  --password-stdin --totp-secret-file "$D/totp" > /dev/null
KT=$(A tokens add --type kube --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
printf '%s\n' "$KT" > "$D/kube.token"
"$H" start --roles kube --proxy 127.0.0.1:$P --ca-pin "$PIN" --token-file "$D/kube.token" --data-dir "$D/agent" \
  --kube-cluster "name=bench,kubeconfig=$D/fast.kubeconfig,labels=env=bench" \
  --kube-cluster "name=standin,kubeconfig=$D/standin.kubeconfig,labels=env=bench" > /dev/null 2> "$D/agent.err" &
AGENT_PID=$!; PIDS+=("$AGENT_PID")
CODE=$(oathtool --totp -b --now "@$(( $(date +%s) + 30 ))" "$(cat "$D/totp")")
printf '%s\n' "$PASSWORD" | "$H" login --proxy 127.0.0.1:$P --ca-pin "$PIN" --user bench --password-stdin --otp "$CODE" > /dev/null
for _ in $(seq 100); do
  "$H" kube ls 2>/dev/null | grep -q '^standin' && "$H" kube ls | grep -q '^bench' && break; sleep 0.2
done
"$H" kube login standin > /dev/null
"$H" kube login bench > /dev/null
"$H" kube credentials --cluster bench | python3 -c '
import json, sys
s = json.load(sys.stdin)["status"]
open(sys.argv[1], "w").write(s["clientCertificateData"] + s["clientKeyData"])
' "$D/kube.pem"
python3 -c '
import json, sys
print(json.load(open(sys.argv[1]))["trusted_cas_pem"], end="")
' "$(ls "$D"/home/kube/*/bench/bench.json)" > "$D/hop-ca.pem"

# The client side: plain HTTP in, keep-alive mutual TLS out, one frontend per contender.
cat > "$D/client.cfg" <<CFG
global
  maxconn 4096
  nbthread 1
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend to_hop
  bind 127.0.0.1:$CL_HOP
  default_backend hop
frontend to_direct
  bind 127.0.0.1:$CL_DIRECT
  default_backend direct
backend hop
  server hop 127.0.0.1:$P ssl crt $D/kube.pem ca-file $D/hop-ca.pem verify required sni str(kube.localhost) verifyhost kube.localhost alpn http/1.1
backend direct
  server api 127.0.0.1:$FAST ssl crt $D/pki/client.pem ca-file $D/pki/ca.crt verify required alpn http/1.1
CFG
haproxy -db -f "$D/client.cfg" > "$D/client.log" 2>&1 &
CL_PID=$!; PIDS+=("$CL_PID")
sleep 0.5
for url in "http://127.0.0.1:$CL_DIRECT$PODS" "http://127.0.0.1:$CL_HOP$PODS"; do
  out=$(curl -sS -w '\n%{http_code}' "$url")
  [ "$(echo "$out" | tail -1)" = 200 ] || { echo "warm-up GET $url: $out" >&2; tail -20 "$D/hop.err" >&2; exit 1; }
done

cat > "$D/report.lua" <<'LUA'
local shown = 0
response = function(status, headers, body)
  if status >= 300 and shown < 3 then
    shown = shown + 1
    io.stderr:write(string.format("non-2xx answer %d: %s\n", status, string.sub(body or "", 1, 200)))
  end
end
LUA
# user+system CPU seconds of one pid, from /proc/PID/stat (fields 14, 15).
cpu() { python3 - "$1" <<'PY'
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
PY
}
run() { # NAME URL; prints "NAME rps requests proxy_cpu_s agent_cpu_s p99"
  local name=$1 url=$2
  local p0 a0; p0=$(cpu "$HOP_PID"); a0=$(cpu "$AGENT_PID")
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" -s "$D/report.lua" --latency "$url")
  local p1 a1; p1=$(cpu "$HOP_PID"); a1=$(cpu "$AGENT_PID")
  local reqs rps bad
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $5}'); bad=${bad:-0}
  [ "$bad" = 0 ] || echo "WARNING: $name: $bad answers were not 2xx (counted out)" >&2
  echo "$name $rps $((reqs - bad)) $(python3 -c "print($p1-$p0, $a1-$a0)") $(echo "$out" | awk '/ 99%/ {print $2}')"
}
echo "wrk -t$THREADS -c$CONNS, ${DUR}s per round, $ROUNDS rounds; $(nproc) cores; hop $("$H" --version 2>/dev/null | head -1); $(haproxy -v | head -1)"
: > "$D/results"
for _ in $(seq "$ROUNDS"); do
  run direct "http://127.0.0.1:$CL_DIRECT$PODS" | tee -a "$D/results"
  run hop "http://127.0.0.1:$CL_HOP$PODS" | tee -a "$D/results"
done

# Exec setup: a whole `kubectl exec -i web-1 -- sh` that types `exit 0`, EXECS times each way.
exec_ms() { # KUBECONFIG CONTEXT
  python3 - "$1" "$2" "$EXECS" <<'PY'
import statistics, subprocess, sys, time
cfg, ctx, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ms = []
for _ in range(n):
    t = time.monotonic()
    r = subprocess.run(["kubectl", "--kubeconfig", cfg, "--context", ctx, "exec", "-i", "web-1", "--", "sh"],
                       input=b"exit 0\n", capture_output=True, timeout=60)
    if r.returncode != 0:
        sys.exit(f"kubectl exec ({ctx}): {r.stderr.decode()}")
    ms.append((time.monotonic() - t) * 1000)
print(f"{statistics.median(ms):.0f}")
PY
}
EXEC_DIRECT=$(exec_ms "$D/standin.kubeconfig" s)
EXEC_HOP=$(exec_ms "$KUBECONFIG" "b.test-standin")

python3 - "$D/results" "$EXEC_DIRECT" "$EXEC_HOP" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, reqs, proxy_cpu, agent_cpu, p99 = line.split()
    n = max(int(reqs), 1)
    rows.setdefault(name, []).append((float(rps), float(proxy_cpu) * 1e6 / n, float(agent_cpu) * 1e6 / n, p99))
med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in rows.items()}
print(f"{'contender':<9} {'req/s':>9} {'proxy µs/req':>13} {'agent µs/req':>13}  p99 per round")
for k, v in rows.items():
    m = med[k]
    cpu = f"{m[1]:>13.0f} {m[2]:>13.0f}" if k == "hop" else f"{'-':>13} {'-':>13}"
    print(f"{k:<9} {m[0]:>9.0f} {cpu}  {' '.join(r[3] for r in v)}")
d, h = med["direct"][0], med["hop"][0]
print(f"hop / direct: {h / d:.2f}x req/s (target >= 0.80); the stand-in's direct rate is {d / h:.1f}x Hop's")
ed, eh = float(sys.argv[2]), float(sys.argv[3])
print(f"exec setup (kubectl exec -i web-1 -- sh, exit 0; median): direct {ed:.0f} ms, hop {eh:.0f} ms, "
      f"Hop adds {eh - ed:.0f} ms")
PY
