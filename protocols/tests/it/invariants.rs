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
            invariants::web_terminal(prefix);
            let _ = name;
        }
    }
}

#[test]
fn the_web_terminal_invariants_hold_on_every_prefix_of_terminal_like_input() {
    let samples: [&[u8]; 4] = [
        "resize 80 24".as_bytes(),
        "\u{1b}[1;32mgrüße 世界 🎉\u{1b}[0m\r\n".as_bytes(),
        &[0xf0, 0x9f, 0x8e, 0x89, 0xff, 0xc3, 0x28, 0xe2, 0x82],
        b"resize 1000 1000 ",
    ];
    for bytes in samples {
        for n in 0..=bytes.len() {
            invariants::web_terminal(&bytes[..n]);
        }
    }
}
