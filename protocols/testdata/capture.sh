#!/usr/bin/env bash
# Capture real client first-bytes on loopback into protocols/testdata/*.bin.
#
# Each capture starts a one-shot python3 listener on an ephemeral 127.0.0.1 port,
# points a real client (openssl, curl, ssh, psql) at it, and saves whatever the
# client sent before going quiet (idle timeout) or closing. Nothing is answered
# except where the protocol needs it to make progress:
#   - ssh:  the listener sends its own "SSH-2.0-test\r\n" banner first;
#   - haproxy (send-proxy-v2) relays a curl request to the listener, which
#     captures the real PROXY v2 header in front of the HTTP request;
#   - psql (sslmode=prefer): the listener answers the SSLRequest with 'N'
#     so psql falls back to a plaintext StartupMessage, saved separately.
#
# Usage: protocols/testdata/capture.sh   (re-run to refresh the fixtures)
# Needs: python3, openssl, curl, ssh, psql, haproxy.
set -euo pipefail
cd "$(dirname "$0")"

LISTENER=$(mktemp)
trap 'rm -f "$LISTENER"' EXIT
cat >"$LISTENER" <<'PY'
import socket, sys, time
mode, out = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(20)
c, _ = s.accept()

def read_idle(c, idle=1.0, limit=1 << 16, until=None):
    data = b""
    c.settimeout(idle)
    while len(data) < limit:
        if until is not None and until(data):
            break
        try:
            b = c.recv(limit - len(data))
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data

def read_exact(c, n):
    data = b""
    c.settimeout(5)
    while len(data) < n:
        b = c.recv(n - len(data))
        if not b:
            break
        data += b
    return data

if mode == "ssh":
    c.sendall(b"SSH-2.0-test\r\n")
    data = read_idle(c)
elif mode == "http":
    data = read_idle(c, until=lambda d: b"\r\n\r\n" in d)
elif mode == "pg-prefer":
    ssl = read_exact(c, 8)
    open(out, "wb").write(ssl)
    c.sendall(b"N")
    out = sys.argv[3]
    data = read_idle(c)
else:
    data = read_idle(c)
open(out, "wb").write(data)
c.close()
PY

# capture MODE OUT [OUT2] -- CLIENT ARGS... ; "{port}" in client args is replaced.
capture() {
  local mode=$1; shift
  local outs=()
  while [ "$1" != "--" ]; do outs+=("$1"); shift; done
  shift
  coproc L { python3 "$LISTENER" "$mode" "${outs[@]}"; }
  local lpid=$L_PID
  local port
  read -r port <&"${L[0]}"
  local args=()
  for a in "$@"; do args+=("${a//\{port\}/$port}"); done
  timeout 10 "${args[@]}" </dev/null >/dev/null 2>&1 || true
  wait "$lpid" || true
  for o in "${outs[@]}"; do printf '%-32s %6d bytes\n' "$o" "$(stat -c %s "$o")"; done
}

# haproxy_curl BACKEND_PORT: run haproxy in TCP mode in front of the listener,
# sending PROXY v2 (with CRC32C and unique-id TLVs), and send one curl request through it.
haproxy_curl() {
  local backend=$1 dir front hpid
  dir=$(mktemp -d)
  front=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$dir/haproxy.cfg" <<CFG
global
  log stderr local0 emerg
defaults
  mode tcp
  timeout connect 2s
  timeout client 3s
  timeout server 3s
frontend fe
  bind 127.0.0.1:$front
  unique-id-format hop-capture-%ci-%cp
  default_backend be
backend be
  server s1 127.0.0.1:$backend send-proxy-v2 proxy-v2-options crc32c,unique-id
CFG
  haproxy -f "$dir/haproxy.cfg" -db >/dev/null 2>&1 &
  hpid=$!
  sleep 0.5
  curl -s --max-time 2 "http://127.0.0.1:$front/via-haproxy" >/dev/null 2>&1 || true
  kill "$hpid" 2>/dev/null || true
  wait "$hpid" 2>/dev/null || true
  rm -rf "$dir"
}

capture raw tls_openssl_client_hello.bin -- \
  openssl s_client -connect '127.0.0.1:{port}' -servername example.test -alpn h2,http/1.1
capture raw tls_curl_client_hello.bin -- \
  curl -sk --http2 --max-time 3 --resolve 'example.test:{port}:127.0.0.1' 'https://example.test:{port}/'
capture ssh ssh_banner_kexinit.bin -- \
  ssh -p '{port}' -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=5 127.0.0.1
capture pg-prefer postgres_ssl_request.bin postgres_startup_after_ssl.bin -- \
  env PGCONNECT_TIMEOUT=5 PGPASSWORD=x psql 'host=127.0.0.1 port={port} sslmode=prefer user=alice dbname=app' -c 'select 1'
capture raw postgres_startup.bin -- \
  env PGCONNECT_TIMEOUT=5 PGPASSWORD=x psql 'host=127.0.0.1 port={port} sslmode=disable user=alice dbname=app' -c 'select 1'
capture http http_curl_get.bin -- \
  curl -s --max-time 3 -H 'X-Test: 1' 'http://127.0.0.1:{port}/hello?x=1'
capture http http_curl_websocket_upgrade.bin -- \
  curl -s --max-time 3 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
       -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
       'http://127.0.0.1:{port}/ws'
capture http proxy_v1_curl.bin -- \
  curl -s --max-time 3 --haproxy-protocol 'http://127.0.0.1:{port}/'
if command -v haproxy >/dev/null; then
  capture raw proxy_v2_haproxy.bin -- bash -c "$(declare -f haproxy_curl); haproxy_curl {port}"
else
  echo "haproxy not found: proxy_v2_haproxy.bin not refreshed" >&2
fi

# Database sessions (both directions) need real servers: see capture_db.sh.
if [ "$(id -u)" = 0 ] && command -v pgbench >/dev/null && command -v mariadbd >/dev/null; then
  ./capture_db.sh
else
  echo "capture_db.sh skipped (needs root, postgresql, pgbench, mariadb-server)" >&2
fi
