//! A TLS connection's keys out of rustls, against rustls on the other end: a rustls server in the
//! proxy's place, a client read record by record, and a plain application that echoes.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::bounded::RecordReads;
use super::{ClientStream, PlainRelayError, relay, relay_with_plain, stays_on_rustls};

/// A server config and a client config (secret extraction on) that trusts it.
fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["proxy.test".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.enable_secret_extraction = true;
    (Arc::new(server), Arc::new(client))
}

/// A TCP listener that echoes every connection's bytes and half-closes after its peer did.
async fn echo_app() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A rustls server on loopback and a client connected to it, its record boundaries counted (as
/// an agent's and a client's connections to the proxy are).
async fn connected(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (tokio_rustls::server::TlsStream<TcpStream>, ClientStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accept = async {
        let (s, _) = l.accept().await.unwrap();
        tokio_rustls::TlsAcceptor::from(server)
            .accept(s)
            .await
            .unwrap()
    };
    let connect = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("proxy.test").unwrap();
        tokio_rustls::TlsConnector::from(client)
            .connect(name, RecordReads::counting(tcp))
            .await
            .unwrap()
    };
    tokio::join!(accept, connect)
}

/// A connection past its first message: the server sends `first`, whose first 5 bytes
/// ("HELLO") the client reads through rustls; the rest stays with rustls.
async fn past_hello(first: &[u8]) -> (tokio_rustls::server::TlsStream<TcpStream>, ClientStream) {
    let (server_cfg, client_cfg) = configs();
    let (mut server, mut client) = connected(server_cfg, client_cfg).await;
    server.write_all(first).await.unwrap();
    server.flush().await.unwrap();
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"HELLO");
    (server, client)
}

/// `client`'s session relayed (`pending` first) to an application that echoes, on its own task.
async fn relayed_to_echo(
    client: ClientStream,
    pending: Vec<u8>,
) -> tokio::task::JoinHandle<Result<(u64, u64), PlainRelayError>> {
    let app = TcpStream::connect(echo_app().await).await.unwrap();
    tokio::spawn(relay_with_plain(client, pending, app))
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 977) as u8).collect()
}

#[tokio::test]
async fn bytes_and_half_closes_pass_both_ways_with_rustls_at_the_other_end() {
    // The first message, read through rustls; then the keys leave it.
    let (server, client) = past_hello(b"HELLO").await;
    assert_eq!(
        stays_on_rustls(client.get_ref().0, client.get_ref().1),
        None
    );
    let relayed = relayed_to_echo(client, Vec::new()).await;

    // 3 MiB through the relay to the echoing application and back, written while reading.
    let sent = payload(3 << 20);
    let (mut r, mut w) = tokio::io::split(server);
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for chunk in sent.chunks(70_001) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap(); // close_notify: the application sees its end of file
            w
        })
    };
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap(); // ends at the relay's close_notify
    let _w = writer.await.unwrap();
    assert!(
        back == sent,
        "echo differs ({} of {} bytes)",
        back.len(),
        sent.len()
    );
    let (down, up) = relayed.await.unwrap().unwrap();
    assert_eq!((down, up), (sent.len() as u64, sent.len() as u64));
}

#[tokio::test]
async fn plaintext_rustls_already_holds_reaches_the_application_first() {
    // One record carrying the first message and the session's first bytes.
    let (mut server, client) = past_hello(b"HELLOfirst bytes").await;
    let relayed = relayed_to_echo(client, b"pending:".to_vec()).await;
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    server.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"pending:first bytes");
    relayed.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_cut_without_close_notify_is_an_error() {
    let (mut server, client) = past_hello(b"HELLO").await;
    let relayed = relayed_to_echo(client, Vec::new()).await;
    server.write_all(b"some data").await.unwrap();
    server.flush().await.unwrap();
    // The TCP connection closes under TLS: a truncation, not an end.
    let (tcp, _) = server.into_inner();
    drop(tcp);
    let ended = relayed.await.unwrap();
    assert!(
        matches!(
            ended,
            Err(PlainRelayError::Records(
                relay::RecordRelayError::Truncated | relay::RecordRelayError::Io(_)
            ))
        ),
        "{ended:?}"
    );
}

#[tokio::test]
async fn a_connection_read_freely_stays_on_rustls_and_still_relays() {
    let (mut server, mut client) = past_hello(b"HELLO").await;
    client.get_mut().0.unbound();
    assert!(stays_on_rustls(client.get_ref().0, client.get_ref().1).is_some());
    let relayed = relayed_to_echo(client, Vec::new()).await;
    server.write_all(b"through rustls").await.unwrap();
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    server.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"through rustls");
    relayed.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_close_notify_read_with_the_first_message_still_ends_the_session_properly() {
    // The first message, a last message and close_notify, all read at once: the session ends
    // as rustls would end it (the application gets the bytes, then its end of file), and the
    // other way still works (the application's answer reaches the peer).
    let (server_cfg, client_cfg) = configs();
    let (mut server, mut client) = connected(server_cfg, client_cfg).await;
    server.write_all(b"HELLObanner").await.unwrap();
    server.shutdown().await.unwrap();
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).await.unwrap();
    let relayed = relayed_to_echo(client, Vec::new()).await;
    let mut back = Vec::new();
    server.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"banner");
    relayed.await.unwrap().unwrap();
}

#[tokio::test]
async fn reads_that_ended_inside_a_record_keep_the_session_on_rustls() {
    // The first message in its own record, a large one right behind it: rustls reads past the
    // first into the second, which it cannot hand over half-read.
    let (server_cfg, client_cfg) = configs();
    let (mut server, mut client) = connected(server_cfg, client_cfg).await;
    let after = payload(40_000);
    server.write_all(b"HELLO").await.unwrap();
    server.flush().await.unwrap();
    server.write_all(&after).await.unwrap();
    server.flush().await.unwrap();
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(
        stays_on_rustls(client.get_ref().0, client.get_ref().1),
        Some("a record is partly read")
    );
    let relayed = relayed_to_echo(client, Vec::new()).await;
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    server.read_to_end(&mut back).await.unwrap();
    assert!(
        back == after,
        "{} of {} bytes back",
        back.len(),
        after.len()
    );
    relayed.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_application_s_last_bytes_before_a_reset_still_reach_the_peer() {
    let (mut server, client) = past_hello(b"HELLO").await;
    // The application answers and resets the connection.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"last words").await.unwrap();
        s.set_zero_linger().unwrap();
    });
    let plain = TcpStream::connect(addr).await.unwrap();
    app.await.unwrap();
    let relayed = tokio::spawn(relay_with_plain(client, Vec::new(), plain));
    let mut got = [0u8; 10];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"last words");
    let ended = relayed.await.unwrap();
    assert!(ended.is_err(), "a reset is not an orderly end: {ended:?}");
}
