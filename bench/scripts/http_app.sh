#!/usr/bin/env bash
# Keep-alive HTTP requests through Hop's web application route beside HAProxy in `mode http`,
# with the same TLS, in one run (issue 20's benchmark):
#   - one origin for both: a HAProxy instance answering `GET /hello` itself (`http-request
#     return`), so the origin costs the same for both and is never the bottleneck of either;
#   - `haproxy`: wrk → HAProxy (TLS 1.3, ECDSA P-256 certificate, ALPN http/1.1, mode http,
#     keep-alive to the origin) → origin;
#   - `hop`: wrk → Hop's proxy at https://web.apps.test:PORT (TLS 1.3, its ECDSA P-256
#     certificate, the browser's app session cookie) → the app agent's data connection → origin.
#     The cookie comes from the real browser flow (headless Chromium through
#     web/tests/app_flow.mjs: the web UI's login, the launch, the callback).
# Contenders alternate, ROUNDS rounds of DURATION seconds each. Reports requests per second and
# requests per proxy CPU-second (user+system time of the proxy process from /proc, for Hop also
# with the app agent's), their medians, and Hop's ratio to HAProxy. Names resolve to loopback
# inside a private mount namespace (`unshare -m`, a bind-mounted /etc/hosts): nothing on the
# host is changed.
#
# Usage: cargo build --release -p hop; bench/scripts/http_app.sh [DURATION_S] [ROUNDS] [CONNECTIONS]
# Needs: wrk, haproxy, openssl, oathtool, python3, util-linux (unshare), Chromium and
# web/tests/node_modules (npm ci in web/tests). Run as root (unshare -m).
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-64}
THREADS=${THREADS:-2}
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
H=${HOP:-$ROOT/target/release/hop}
[ -x "$H" ] || { echo "build hop first: cargo build --release -p hop (or set HOP=)" >&2; exit 2; }
for t in wrk haproxy openssl oathtool python3 unshare node; do
  command -v "$t" > /dev/null || { echo "missing: $t" >&2; exit 2; }
done
[ -d "$ROOT/web/tests/node_modules/playwright-core" ] || {
  echo "missing: web/tests/node_modules (npm ci in web/tests)" >&2; exit 2; }
D=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(port); HP=$(port); OP=$(port); DIAG=$(port)
DOMAIN=apps.test
PASSWORD='correct horse battery staple'

# The origin: HAProxy answering by itself.
cat > "$D/origin.cfg" <<CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend origin
  bind 127.0.0.1:$OP
  http-request return status 200 content-type text/plain string "hello"
CFG
haproxy -db -f "$D/origin.cfg" > "$D/origin.log" 2>&1 &
PIDS+=("$!")

# Hop, its public address apps.test:P, an app role and a user who holds only it.
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
  public_addr: ["$DOMAIN:$P"]
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
  name: app-bench
spec:
  allow:
    app_labels:
      env: bench
CFG
A create -f "$D/role.yaml" > /dev/null
TOKEN=$(A users add bench --roles app-bench --logins nobody --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
printf '%s\n' "$PASSWORD" | HOP_HOME=$D/home "$H" signup "$TOKEN" --proxy 127.0.0.1:$P --ca-pin "$PIN" \
  --password-stdin --totp-secret-file "$D/totp" > /dev/null

# The app agent publishing the origin as web app `web`.
AT=$(A tokens add --type app --format json | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
"$H" start --roles app --proxy 127.0.0.1:$P --ca-pin "$PIN" --token "$AT" --data-dir "$D/agent" \
  --app "name=web,uri=http://127.0.0.1:$OP,labels=env=bench" > /dev/null 2> "$D/agent.err" &
AGENT_PID=$!; PIDS+=("$AGENT_PID")
for _ in $(seq 100); do A inventory ls 2>/dev/null | grep -q app && break; sleep 0.2; done
sleep 1

# The app session cookie, from the browser flow.
CODE=$(oathtool --totp -b --now "@$(( $(date +%s) + 30 ))" "$(cat "$D/totp")")
COOKIE=$(cd "$ROOT/web/tests" && {
  printf '{"do":"open","who":"b","url":"https://web.%s:%s/hello"}\n' "$DOMAIN" "$P"
  printf '{"do":"login","who":"b","user":"bench","password":"%s","otp":"%s","until":"https://web.%s:%s"}\n' \
    "$PASSWORD" "$CODE" "$DOMAIN" "$P"
  printf '{"do":"cookies","who":"b"}\n'
  printf '{"do":"quit"}\n'
} | node app_flow.mjs "https://$DOMAIN:$P" "$D" | python3 -c '
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    if v.get("ok") is False:
        sys.exit("browser flow failed: " + v["error"])
    for c in v.get("cookies", []):
        if c["name"] == "__Host-hop_app_session":
            print(c["value"])
')
[ -n "$COOKIE" ] || { echo "no app session cookie from the browser flow" >&2; exit 1; }

# HAProxy with the same TLS: an ECDSA P-256 certificate, TLS 1.3, ALPN http/1.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=haproxy.$DOMAIN" \
  -addext "subjectAltName=DNS:haproxy.$DOMAIN" -keyout "$D/hx.key" -out "$D/hx.crt" 2> /dev/null
cat "$D/hx.crt" "$D/hx.key" > "$D/hx.pem"
cat > "$D/haproxy.cfg" <<CFG
global
  maxconn 4096
  nbthread $(nproc)
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tls
  bind 127.0.0.1:$HP ssl crt $D/hx.pem alpn http/1.1
  default_backend origin
backend origin
  server o 127.0.0.1:$OP
CFG
haproxy -db -f "$D/haproxy.cfg" > "$D/haproxy.log" 2>&1 &
HX_PID=$!; PIDS+=("$HX_PID")
sleep 0.5

# wrk reports non-2xx answers only as a count: this names the first few (status and body).
cat > "$D/report.lua" <<'LUA'
local shown = 0
response = function(status, headers, body)
  if status >= 300 and shown < 3 then
    shown = shown + 1
    io.stderr:write(string.format("non-2xx answer %d: %s\n", status, string.sub(body or "", 1, 200)))
  end
end
LUA
printf '127.0.0.1 %s web.%s haproxy.%s\n' "$DOMAIN" "$DOMAIN" "$DOMAIN" > "$D/hosts"
# user+system CPU seconds of the given pids, from /proc/PID/stat (fields 14, 15).
cpu() { python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    total += int(f[11]) + int(f[12])
print(total / tick)
PY
}
run() { # NAME URL PROXY_PID [OTHER_PIDS...]; prints "NAME rps proxy_cpu_s all_cpu_s requests p99"
  local name=$1 url=$2; shift 2
  local p0 c0; p0=$(cpu "$1"); c0=$(cpu "$@")
  local out
  out=$(unshare -m sh -c "mount --bind '$D/hosts' /etc/hosts && exec wrk -t$THREADS -c$CONNS -d${DUR}s \
    -H 'Cookie: __Host-hop_app_session=$COOKIE' -s '$D/report.lua' --latency '$url'")
  local p1 c1; p1=$(cpu "$1"); c1=$(cpu "$@")
  local reqs rps
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local bad; bad=$(echo "$out" | awk '/Non-2xx/ {print $5}'); bad=${bad:-0}
  [ "$bad" = 0 ] || echo "WARNING: $name: $bad answers were not 2xx/3xx (counted out of the requests)" >&2
  reqs=$((reqs - bad))
  echo "$name $rps $(python3 -c "print($p1-$p0, $c1-$c0)") $reqs $(echo "$out" | awk '/ 99%/ {print $2}')"
}
echo "wrk -t$THREADS -c$CONNS, ${DUR}s per round, $ROUNDS rounds; $(nproc) cores; hop $("$H" --version 2>/dev/null | head -1); $(haproxy -v | head -1)"
: > "$D/results"
for r in $(seq "$ROUNDS"); do
  run haproxy "https://haproxy.$DOMAIN:$HP/hello" "$HX_PID" | tee -a "$D/results"
  # Hop's app agent is a second process on the path: its CPU is counted beside the proxy's.
  run hop "https://web.$DOMAIN:$P/hello" "$HOP_PID" "$AGENT_PID" | tee -a "$D/results"
done
python3 - "$D/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, proxy_cpu, all_cpu, reqs, p99 = line.split()
    n = int(reqs)
    rows.setdefault(name, []).append(
        (float(rps), n / max(float(proxy_cpu), 1e-9), n / max(float(all_cpu), 1e-9), p99))
med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in rows.items()}
print(f"{'contender':<10} {'req/s':>9} {'req/proxy-CPU-s':>16} {'req/CPU-s (+agent)':>19}  p99 per round")
for k, v in rows.items():
    m = med[k]
    print(f"{k:<10} {m[0]:>9.0f} {m[1]:>16.0f} {m[2]:>19.0f}  {' '.join(r[3] for r in v)}")
h, o = med["haproxy"], med["hop"]
print(f"hop / haproxy: {o[0] / h[0]:.2f}x req/s, {o[1] / h[1]:.2f}x req per proxy CPU-second, "
      f"{o[2] / h[1]:.2f}x counting the app agent's CPU too")
PY
