//! The shared invariants hold on every prefix of every capture, under every
//! parser (not only the one the capture belongs to).

use hop_protocols::invariants;

use crate::support::ALL;

#[test]
fn every_parser_on_every_prefix_of_every_capture() {
    for (name, bytes) in ALL {
        for n in 0..=bytes.len() {
            let prefix = &bytes[..n];
            invariants::sniff(prefix);
            invariants::tls_client_hello(prefix);
            invariants::ssh_banner(prefix);
            invariants::postgres_startup(prefix);
            invariants::http1_request(prefix);
            invariants::proxy_protocol(prefix);
            invariants::tunnel_frame(prefix);
            invariants::postgres_frontend(prefix);
            invariants::postgres_backend(prefix);
            invariants::mysql_packet(prefix);
            invariants::tls_record(prefix);
            let _ = name;
        }
    }
}
