#!/usr/bin/env bash
# Capture real PostgreSQL and MariaDB sessions (both directions) on loopback
# into protocols/testdata/{postgres,mysql}_*.bin.
#
# Starts throwaway servers in a temp directory (PostgreSQL 15 with SCRAM for
# `alice`; MariaDB 10.11 with mysql_native_password for `alice`), then runs
# real clients through a python3 relay on an ephemeral 127.0.0.1 port. The
# relay forwards bytes unchanged and saves what each side sent:
#   <name>_frontend.bin / <name>_backend.bin  (PostgreSQL)
#   <name>_client.bin   / <name>_server.bin   (MySQL)
# Passwords are throwaway (`secret`); SCRAM nonces and MySQL scrambles are
# random, so re-running changes those bytes (the tests only assert what stays
# stable).
#
# Usage: protocols/testdata/capture_db.sh   (run as root; needs postgresql-15,
#        mariadb-server, mariadb-client, pgbench, python3)
set -euo pipefail
cd "$(dirname "$0")"
OUT=$PWD
WORK=$(mktemp -d /tmp/hop-capture-db.XXXXXX)
chmod 755 "$WORK"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=55432
MYPORT=53306

cleanup() {
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  [ -f "$WORK/myrun/my.pid" ] && kill "$(cat "$WORK/myrun/my.pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/relay.py" <<'PY'
import select, socket, sys
# Relays connections one after another; saves the KEEP-th (1-based) one.
upstream, c2s_path, s2c_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
keep = int(sys.argv[4]) if len(sys.argv) > 4 else 1
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(4)
print(s.getsockname()[1], flush=True)
s.settimeout(20)
for n in range(1, keep + 1):
    c, _ = s.accept()
    u = socket.create_connection(("127.0.0.1", upstream))
    logs = {c: bytearray(), u: bytearray()}
    peer = {c: u, u: c}
    open_ = {c, u}
    while open_:
        r, _, _ = select.select(list(open_), [], [], 10)
        if not r:
            break
        for sock in r:
            b = sock.recv(65536)
            if not b:
                open_.discard(sock)
                try:
                    peer[sock].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            logs[sock] += b
            peer[sock].sendall(b)
    c.close()
    u.close()
open(c2s_path, "wb").write(logs[c])
open(s2c_path, "wb").write(logs[u])
PY

# relay UPSTREAM C2S S2C KEEP -- CLIENT ARGS... ; "{port}" in client args is replaced.
relay() {
  local upstream=$1 c2s=$2 s2c=$3 keep=$4; shift 5
  coproc R { python3 "$WORK/relay.py" "$upstream" "$OUT/$c2s" "$OUT/$s2c" "$keep"; }
  local rpid=$R_PID port
  read -r port <&"${R[0]}"
  local args=()
  for a in "$@"; do args+=("${a//\{port\}/$port}"); done
  timeout 20 "${args[@]}" >/dev/null 2>&1 || true
  wait "$rpid" || true
  printf '%-36s %6d bytes\n' "$c2s" "$(stat -c %s "$OUT/$c2s")" "$s2c" "$(stat -c %s "$OUT/$s2c")"
}

# --- PostgreSQL -------------------------------------------------------------
if [ -x "$PGBIN/postgres" ]; then
  mkdir -p "$WORK/pg" && chown postgres "$WORK" "$WORK/pg"
  su postgres -c "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
  { echo "host all alice 127.0.0.1/32 scram-sha-256"; cat "$WORK/pg/pg_hba.conf"; } >"$WORK/hba"
  install -o postgres -m 600 "$WORK/hba" "$WORK/pg/pg_hba.conf"
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -l $WORK/pg.log -w -o '-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1' start" >/dev/null
  psql -h "$WORK" -p $PGPORT -U postgres -qc "create user alice password 'secret'"
  psql -h "$WORK" -p $PGPORT -U postgres -qc "create database app owner alice"
  PGPASSWORD=secret psql -h 127.0.0.1 -p $PGPORT -U alice app -qc "create table t(a int, b text)"

  # Simple query protocol: SCRAM-SHA-256, a query, an error, a notice, COPY FROM STDIN.
  printf '1\tone\n2\t\\N\n' >"$WORK/copy.tsv"
  relay $PGPORT postgres_simple_frontend.bin postgres_simple_backend.bin 1 -- \
    env PGPASSWORD=secret psql "host=127.0.0.1 port={port} sslmode=disable user=alice dbname=app application_name=psql" \
      -c 'select 1 as one' -c 'select nope' -c "do \$\$ begin raise notice 'hi'; end \$\$" \
      -c "\\copy t from '$WORK/copy.tsv'"
  # Extended query protocol with named prepared statements (Parse/Bind/Describe/Execute/Sync).
  printf '\\set x 7\nselect :x::int + 1 as y, $$hello$$ as s;\ninsert into t values (:x, $$seven$$);\n' >"$WORK/bench.sql"
  chmod 644 "$WORK/bench.sql" "$WORK/copy.tsv"
  # pgbench checks the server with a first connection; keep the second.
  relay $PGPORT postgres_extended_frontend.bin postgres_extended_backend.bin 2 -- \
    env PGPASSWORD=secret pgbench -n -t 2 -M prepared -f "$WORK/bench.sql" \
      "host=127.0.0.1 port={port} sslmode=disable user=alice dbname=app"
fi

# --- MariaDB (MySQL protocol) -----------------------------------------------
if command -v mariadbd >/dev/null; then
  mkdir -p "$WORK/my" "$WORK/myrun" && chown mysql "$WORK/my" "$WORK/myrun"
  mariadb-install-db --datadir="$WORK/my" --user=mysql --auth-root-authentication-method=normal >/dev/null 2>&1
  su mysql -s /bin/bash -c "mariadbd --datadir=$WORK/my --port=$MYPORT --bind-address=127.0.0.1 \
    --socket=$WORK/myrun/my.sock --pid-file=$WORK/myrun/my.pid --skip-log-bin --innodb-buffer-pool-size=16M" \
    >"$WORK/my.log" 2>&1 &
  for _ in $(seq 50); do [ -S "$WORK/myrun/my.sock" ] && break; sleep 0.2; done
  mariadb -S "$WORK/myrun/my.sock" -u root -e "create user alice@'localhost' identified by 'secret'; \
    create database app; grant all on app.* to alice@'localhost'; create table app.t(a int, b text);"

  # Handshake with a database, COM_QUERY (result set, OK, ERR), COM_INIT_DB, COM_QUIT.
  printf "select 1 as one, 'x' as s;\ninsert into t values (1, 'one');\nselect nope;\nuse app;\nselect count(*) from t;\n" >"$WORK/session.sql"
  relay $MYPORT mysql_session_client.bin mysql_session_server.bin 1 -- \
    bash -c "mariadb -h 127.0.0.1 -P '{port}' -u alice -psecret --skip-ssl --force app <'$WORK/session.sql'"
  # Handshake without a database, COM_PING, COM_QUIT.
  relay $MYPORT mysql_ping_client.bin mysql_ping_server.bin 1 -- \
    mariadb-admin -h 127.0.0.1 -P '{port}' -u alice -psecret --skip-ssl ping
  # A wrong password: the server answers the HandshakeResponse with ERR 1045.
  relay $MYPORT mysql_denied_client.bin mysql_denied_server.bin 1 -- \
    mariadb -h 127.0.0.1 -P '{port}' -u alice -pwrong --skip-ssl app -e "select 1"
fi
