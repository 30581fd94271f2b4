#!/usr/bin/env bash
# (Re)build the seed corpora in fuzz/corpus/<target>/ from protocols/testdata/.
# Seeds are the real captures (see protocols/testdata/README.md), plus a few
# derived forms: the ClientHello re-split into 1-byte records, each tunnel
# frame on its own, hand-made Postgres GSSENC/Cancel requests.
set -euo pipefail
cd "$(dirname "$0")"
T=../protocols/testdata
C=corpus
mkdir -p "$C"/{sniff,tls_client_hello,ssh_banner,postgres_startup,http1_request,proxy_protocol,tunnel_frame}

for f in "$T"/*.bin; do cp "$f" "$C/sniff/$(basename "$f")"; done
cp "$T"/tls_*.bin "$C/tls_client_hello/"
cp "$T"/ssh_*.bin "$C/ssh_banner/"
cp "$T"/postgres_*.bin "$C/postgres_startup/"
cp "$T"/http_*.bin "$C/http1_request/"
cp "$T"/proxy_*.bin "$C/proxy_protocol/"

python3 - "$T" "$C" <<'PY'
import struct, sys
t, c = sys.argv[1], sys.argv[2]

def records(hs, size):
    out = b""
    for i in range(0, len(hs), size):
        chunk = hs[i:i + size]
        out += bytes([0x16, 3, 1]) + struct.pack(">H", len(chunk)) + chunk
    return out

def unwrap(wire):
    hs = b""
    while wire:
        n = struct.unpack(">H", wire[3:5])[0]
        hs += wire[5:5 + n]
        wire = wire[5 + n:]
    return hs

hello = open(f"{t}/tls_openssl_client_hello.bin", "rb").read()
open(f"{c}/tls_client_hello/openssl_1_byte_records.bin", "wb").write(records(unwrap(hello), 1))
open(f"{c}/tls_client_hello/openssl_7_byte_records.bin", "wb").write(records(unwrap(hello), 7))

frames = open(f"{t}/tunnel_frames.bin", "rb").read()
i = 0
while frames:
    n = 4 + struct.unpack(">I", frames[:4])[0]
    open(f"{c}/tunnel_frame/frame_{i:02}_type_{frames[4]}.bin", "wb").write(frames[:n])
    frames = frames[n:]
    i += 1

pg = f"{c}/postgres_startup"
open(f"{pg}/gssenc_request.bin", "wb").write(struct.pack(">II", 8, 80877104))
open(f"{pg}/cancel_request.bin", "wb").write(struct.pack(">IIII", 16, 80877102, 4242, 0xDEADBEEF))
open(f"{pg}/cancel_request_v3_2.bin", "wb").write(struct.pack(">III", 44, 80877102, 4242) + bytes(range(32)))
PY
mkdir -p "$C/backup_file"
cp ../storage/tests/fixtures/backup-v1-*.bin "$C/backup_file/"
mkdir -p "$C/saml_response"
cp ../saml/tests/fixtures/simplesamlphp-*.xml "$C/saml_response/"

find "$C" -type f | sort | sed 's/^/  /'
