//! The Kubernetes stream decoders on real kubectl 1.32 sessions (`testdata/capture_kube.sh`):
//! exec over WebSocket (`v5.channel.k8s.io`) and SPDY/3.1, port-forward over SPDY tunnelled in
//! WebSocket; each direction read whole, cut at every byte, and byte by byte.

use hop_protocols::kube::stream::{
    SpdyDecoder, StreamChunk, StreamError, StreamKind, WsChannelDecoder,
};

const EXEC_WS_CLIENT: &[u8] = include_bytes!("../../testdata/kube/exec_ws_client.bin");
const EXEC_WS_SERVER: &[u8] = include_bytes!("../../testdata/kube/exec_ws_server.bin");
const EXEC_SPDY_CLIENT: &[u8] = include_bytes!("../../testdata/kube/exec_spdy_client.bin");
const EXEC_SPDY_SERVER: &[u8] = include_bytes!("../../testdata/kube/exec_spdy_server.bin");
const PF_CLIENT: &[u8] = include_bytes!("../../testdata/kube/portforward_wsspdy_client.bin");
const PF_SERVER: &[u8] = include_bytes!("../../testdata/kube/portforward_wsspdy_server.bin");

/// One direction's decoder (the server's told of the streams the client's opened).
trait Feed {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, StreamError>;
}

impl Feed for WsChannelDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, StreamError> {
        WsChannelDecoder::feed(self, bytes)
    }
}

impl Feed for SpdyDecoder {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, StreamError> {
        SpdyDecoder::feed(self, bytes)
    }
}

/// The chunks of `bytes`, the same however they are cut.
fn decode<D: Feed>(make: impl Fn() -> D, bytes: &[u8]) -> Vec<StreamChunk> {
    let whole = make().feed(bytes).unwrap();
    for cut in 0..=bytes.len() {
        let mut d = make();
        let mut got = d.feed(&bytes[..cut]).unwrap();
        got.extend(d.feed(&bytes[cut..]).unwrap());
        assert_eq!(got, whole, "cut at {cut}");
    }
    let mut d = make();
    let mut got = Vec::new();
    for b in bytes {
        got.extend(d.feed(std::slice::from_ref(b)).unwrap());
    }
    assert_eq!(got, whole, "byte by byte");
    whole
}

/// Joins the chunks of each kind, in order.
fn by_kind(chunks: &[StreamChunk], kind: StreamKind) -> Vec<u8> {
    chunks
        .iter()
        .filter(|c| c.kind == kind)
        .flat_map(|c| c.data.clone())
        .collect()
}

#[test]
fn kubectl_exec_over_websocket() {
    let up = decode(|| WsChannelDecoder::new(true), EXEC_WS_CLIENT);
    assert_eq!(by_kind(&up, StreamKind::Stdin), b"echo hi\n");
    let down = decode(|| WsChannelDecoder::new(false), EXEC_WS_SERVER);
    assert_eq!(by_kind(&down, StreamKind::Stdout), b"echo hi\r\n");
    assert_eq!(
        by_kind(&down, StreamKind::Error),
        br#"{"metadata": {}, "status": "Success"}"#
    );
    // Either direction's bytes read as the other's are refused (masking is per direction).
    assert_eq!(
        WsChannelDecoder::new(false).feed(EXEC_WS_CLIENT),
        Err(StreamError::WsMasked)
    );
}

#[test]
fn kubectl_exec_over_spdy() {
    let up = decode(|| SpdyDecoder::new(true), EXEC_SPDY_CLIENT);
    assert_eq!(by_kind(&up, StreamKind::Stdin), b"echo hi\n");
    let mut client = SpdyDecoder::new(true);
    client.feed(EXEC_SPDY_CLIENT).unwrap();
    let opened = client.take_opened();
    let kinds: Vec<_> = opened.iter().map(|(_, k)| *k).collect();
    for k in [
        StreamKind::Error,
        StreamKind::Stdin,
        StreamKind::Stdout,
        StreamKind::Stderr,
    ] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    let server = || {
        let mut d = SpdyDecoder::new(false);
        for (id, kind) in &opened {
            d.note_opened(*id, *kind);
        }
        d
    };
    let down = decode(server, EXEC_SPDY_SERVER);
    assert_eq!(by_kind(&down, StreamKind::Stdout), b"echo hi\r\n");
    assert!(!by_kind(&down, StreamKind::Error).is_empty());
}

#[test]
fn kubectl_port_forward_over_spdy_in_websocket() {
    let up = decode(|| WsChannelDecoder::spdy(true), PF_CLIENT);
    let request = by_kind(&up, StreamKind::PortData(80));
    assert!(request.starts_with(b"GET / HTTP/1.1\r\n"), "{request:?}");
    let mut client = WsChannelDecoder::spdy(true);
    client.feed(PF_CLIENT).unwrap();
    let opened = client.spdy_mut().unwrap().take_opened();
    let kinds: Vec<_> = opened.iter().map(|(_, k)| *k).collect();
    assert_eq!(kinds, [StreamKind::PortError(80), StreamKind::PortData(80)]);
    let server = || {
        let mut d = WsChannelDecoder::spdy(false);
        for (id, kind) in &opened {
            d.spdy_mut().unwrap().note_opened(*id, *kind);
        }
        d
    };
    let down = decode(server, PF_SERVER);
    assert_eq!(
        by_kind(&down, StreamKind::PortData(80)),
        b"HTTP/1.0 200 OK\r\n\r\nhello"
    );
}

#[test]
fn the_fuzz_invariants_hold_on_the_captures() {
    for bytes in [EXEC_WS_CLIENT, EXEC_WS_SERVER, PF_CLIENT, PF_SERVER] {
        for pick in 0..=255u8 {
            hop_protocols::invariants::kube_ws(&[&[pick], bytes].concat());
        }
    }
    for bytes in [EXEC_SPDY_CLIENT, EXEC_SPDY_SERVER] {
        for pick in 0..=255u8 {
            hop_protocols::invariants::kube_spdy(&[&[pick], bytes].concat());
        }
    }
}
