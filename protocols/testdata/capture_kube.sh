#!/usr/bin/env bash
# Captures real kubectl (1.32) exec and port-forward streams into kube/ (see README.md):
# a python3 stand-in answers discovery, the pod GET and the upgrade, echoes one typed line
# (exec) or answers one HTTP request (port-forward), and saves both directions' bytes.
set -euo pipefail
cd "$(dirname "$0")"
out=$(pwd)/kube
mkdir -p "$out"
srv=$(mktemp)
trap 'rm -f "$srv"; kill $(jobs -p) 2>/dev/null || true' EXIT
cat >"$srv" <<'PY'
# Capture real kubectl 1.32 WebSocket exec and SPDY-over-WebSocket port-forward byte streams.
import socket, threading, sys, json, hashlib, base64, struct, zlib, os
port=int(sys.argv[1]); out=sys.argv[2]; mode=sys.argv[3] if len(sys.argv)>3 else 'ws'
# SPDY/3's header dictionary, as kubectl itself carries it.
_k=open(__import__('shutil').which('kubectl'),'rb').read()
_a=_k.find(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"); DICT=_k[_a:_k.find(b"enq=0.",_a)+6]
assert len(DICT)==1423
pod=json.dumps({"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-1","namespace":"default"},"spec":{"containers":[{"name":"c"}]},"status":{"phase":"Running"}}).encode()
disc={'/version':{"major":"1","minor":"32","gitVersion":"v1.32.0"},'/api':{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]},'/apis':{"kind":"APIGroupList","apiVersion":"v1","groups":[]},
'/api/v1':{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":True,"kind":"Pod","verbs":["get","list"]},{"name":"pods/exec","singularName":"","namespaced":True,"kind":"PodExecOptions","verbs":["create","get"]},{"name":"pods/portforward","singularName":"","namespaced":True,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}}
def frame(op,payload):
    n=len(payload)
    h=bytes([0x80|op])
    if n<126: h+=bytes([n])
    elif n<65536: h+=bytes([126])+struct.pack('>H',n)
    else: h+=bytes([127])+struct.pack('>Q',n)
    return h+payload
class WsReader:
    def __init__(s,c,log): s.c=c; s.buf=b''; s.log=log
    def need(s,n):
        while len(s.buf)<n:
            d=s.c.recv(65536)
            if not d: raise EOFError
            s.log.append(d); s.buf+=d
    def msg(s):
        s.need(2); b0,b1=s.buf[0],s.buf[1]; n=b1&0x7f; at=2
        if n==126: s.need(4); n=struct.unpack('>H',s.buf[2:4])[0]; at=4
        elif n==127: s.need(10); n=struct.unpack('>Q',s.buf[2:10])[0]; at=10
        s.need(at+4+n); key=s.buf[at:at+4]; p=bytes(x^key[i%4] for i,x in enumerate(s.buf[at+4:at+4+n])); s.buf=s.buf[at+4+n:]
        return b0&0xf,p
def spdy_ctrl(t,body): return struct.pack('>HHI',0x8003,t,len(body))+body
def handle(c):
    data=b''
    while b'\r\n\r\n' not in data:
        d=c.recv(65536)
        if not d: return
        data+=d
    head,rest=data.split(b'\r\n\r\n',1)
    lines=head.decode().split('\r\n'); path=lines[0].split(' ')[1]
    h={l.split(':',1)[0].lower():l.split(':',1)[1].strip() for l in lines[1:]}
    sys.stderr.write(lines[0]+' proto='+h.get('sec-websocket-protocol','')+'\n')
    if h.get('upgrade','').lower()=='websocket' and mode=='spdy':
        c.sendall(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'); c.close(); return
    if h.get('upgrade','').lower().startswith('spdy'):
        serve_spdy(c, rest, path); return
    if h.get('upgrade','').lower()=='websocket':
        accept=base64.b64encode(hashlib.sha1((h['sec-websocket-key']+'258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
        offered=[p.strip() for p in h.get('sec-websocket-protocol','').split(',')]
        proto='v5.channel.k8s.io' if '/exec' in path else 'SPDY/3.1+portforward.k8s.io'
        assert proto in offered, offered
        c.sendall(('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n'%(accept,proto)).encode())
        up=[rest] if rest else []; down=[]
        r=WsReader(c,up); r.buf=rest
        def send(b): down.append(b); c.sendall(b)
        try:
            if '/exec' in path:
                while True:
                    op,p=r.msg()
                    if op==2 and p[:1]==b'\x00' and b'\n' in p:
                        send(frame(2,b'\x01'+p[1:].replace(b'\n',b'\r\n')))
                        send(frame(2,b'\x03'+json.dumps({"metadata":{},"status":"Success"}).encode()))
                        send(frame(8,b'\x03\xe8'))
                        break
                try:
                    while True: r.msg()
                except EOFError: pass
            else:
                z=zlib.compressobj(zdict=DICT); spdybuf=b''; done=False
                while not done:
                    op,p=r.msg()
                    if op!=2: continue
                    spdybuf+=p
                    while len(spdybuf)>=8:
                        n=struct.unpack('>I',b'\x00'+spdybuf[5:8])[0]
                        if len(spdybuf)<8+n: break
                        f,spdybuf=spdybuf[:8+n],spdybuf[8+n:]
                        if f[0]&0x80 and struct.unpack('>H',f[2:4])[0]==1:
                            sid=struct.unpack('>I',f[8:12])[0]&0x7fffffff
                            block=z.compress(b'\x00\x00\x00\x00')+z.flush(zlib.Z_SYNC_FLUSH)
                            send(frame(2,spdy_ctrl(2,struct.pack('>I',sid)+block)))
                        elif not f[0]&0x80:
                            sid=struct.unpack('>I',f[0:4])[0]
                            if n>0:
                                body=b'HTTP/1.0 200 OK\r\n\r\nhello'
                                send(frame(2,struct.pack('>IB',sid,1)+struct.pack('>I',len(body))[1:]+body))
                                done=True
                import time; time.sleep(0.5)
                send(frame(8,b'\x03\xe8'))
                try:
                    while True: r.msg()
                except EOFError: pass
        except EOFError: pass
        name='exec' if '/exec' in path else 'portforward'
        open(os.path.join(out,name+'_client.bin'),'wb').write(b''.join(up))
        open(os.path.join(out,name+'_server.bin'),'wb').write(b''.join(down))
        c.close(); return
    p=path.split('?')[0]
    body=json.dumps(disc[p]).encode() if p in disc else pod
    c.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n'%len(body)+body)
    c.close()
class Raw:
    def __init__(s,c,log,buf): s.c=c; s.buf=buf; s.log=log
    def need(s,n):
        while len(s.buf)<n:
            d=s.c.recv(65536)
            if not d: raise EOFError
            s.log.append(d); s.buf+=d
    def frame(s):
        s.need(8); n=struct.unpack('>I',b'\x00'+s.buf[5:8])[0]; s.need(8+n)
        f,s.buf=s.buf[:8+n],s.buf[8+n:]; return f
def headers(raw):
    n=struct.unpack('>I',raw[:4])[0]; at=4; out={}
    for _ in range(n):
        l=struct.unpack('>I',raw[at:at+4])[0]; k=raw[at+4:at+4+l]; at+=4+l
        l=struct.unpack('>I',raw[at:at+4])[0]; v=raw[at+4:at+4+l]; at+=4+l
        out[k.decode()]=v.decode()
    return out
def serve_spdy(c, rest, path):
    proto=b'v4.channel.k8s.io' if '/exec' in path else b'portforward.k8s.io'
    c.sendall(b'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: '+proto+b'\r\n\r\n')
    up=[rest] if rest else []; down=[]
    r=Raw(c,up,rest); z=zlib.compressobj(zdict=DICT); inf=zlib.decompressobj(zdict=DICT); streams={}
    def send(b): down.append(b); c.sendall(b)
    def data(sid,body,fin): send(struct.pack('>IB',sid,1 if fin else 0)+struct.pack('>I',len(body))[1:]+body)
    try:
        while True:
            f=r.frame()
            if f[0]&0x80:
                if struct.unpack('>H',f[2:4])[0]==1:
                    sid=struct.unpack('>I',f[8:12])[0]&0x7fffffff
                    hd=headers(inf.decompress(f[18:]))
                    streams[hd['streamtype']]=sid
                    send(spdy_ctrl(2,struct.pack('>I',sid)+z.compress(b'\x00\x00\x00\x00')+z.flush(zlib.Z_SYNC_FLUSH)))
                continue
            sid=struct.unpack('>I',f[0:4])[0]&0x7fffffff; body=f[8:]
            if sid==streams.get('stdin') and b'\n' in body:
                data(streams['stdout'],body.replace(b'\n',b'\r\n'),True)
                data(streams['error'],json.dumps({"metadata":{},"status":"Success"}).encode(),True)
                import time; time.sleep(0.3); break
            if sid==streams.get('data') and body:
                data(sid,b'HTTP/1.0 200 OK\r\n\r\nhello',True)
                import time; time.sleep(0.3); break
    except EOFError: pass
    name=('exec' if '/exec' in path else 'portforward')+'_spdy'
    open(os.path.join(out,name+'_client.bin'),'wb').write(b''.join(up))
    open(os.path.join(out,name+'_server.bin'),'wb').write(b''.join(down))
    c.close()
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('127.0.0.1',port)); s.listen(16)
while True:
    c,_=s.accept(); threading.Thread(target=handle,args=(c,),daemon=True).start()
PY
run() { # MODE PORT
  python3 "$srv" "$2" "$out" "$1" 2>/dev/null & local pid=$!
  sleep 1
  (sleep 1; echo "echo hi"; sleep 2) | timeout 8 kubectl --server="http://127.0.0.1:$2" exec -i web-1 -- sh >/dev/null
  if [ "$1" = ws ]; then
    timeout 6 kubectl --server="http://127.0.0.1:$2" port-forward pod/web-1 "$(( $2 + 1 ))":80 >/dev/null 2>&1 &
    sleep 2; curl -s -m 3 "http://127.0.0.1:$(( $2 + 1 ))/" >/dev/null; sleep 2
  fi
  kill "$pid"
}
run ws 18601
run spdy 18611
for f in exec portforward; do mv -f "$out/${f}_client.bin" "$out/${f}_$([ $f = exec ] && echo ws || echo wsspdy)_client.bin"; mv -f "$out/${f}_server.bin" "$out/${f}_$([ $f = exec ] && echo ws || echo wsspdy)_server.bin"; done
ls -l "$out"
