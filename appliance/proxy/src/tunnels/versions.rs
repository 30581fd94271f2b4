//! Which agents' tunnel protocol versions this proxy serves, and the refusal of the others.
//!
//! This module owns the version meeting at an agent's hello: an agent whose
//! `Hello.protocol_version` this release serves (`hop_protocols::tunnel::serves_protocol_version`)
//! is served whatever its release; any other is answered with a goaway whose reason names both
//! sides, the agent's release and protocol version and the proxy's, so that whoever reads the
//! agent's log or the proxy's knows which side to upgrade. It never reads more of the hello.

use hop_protocols::tunnel::{
    GoAway, Hello, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, serves_protocol_version,
};

/// This proxy's release.
pub const PROXY_RELEASE: &str = env!("CARGO_PKG_VERSION");
/// How long a refused agent waits before it says hello again (an upgrade takes a while).
const RETRY_AFTER_MS: u32 = 60_000;

/// `None` when this proxy serves `hello`'s protocol version; else the goaway to answer with.
pub fn refusal(hello: &Hello) -> Option<GoAway> {
    if serves_protocol_version(hello.protocol_version) {
        return None;
    }
    let agent_release = if hello.agent_version.is_empty() {
        "of an unknown release"
    } else {
        hello.agent_version.as_str()
    };
    let served = if OLDEST_PROTOCOL_VERSION == PROTOCOL_VERSION {
        format!("{PROTOCOL_VERSION}")
    } else {
        format!("{OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}")
    };
    Some(GoAway {
        reason: format!(
            "agent {agent_release} speaks tunnel protocol {}, proxy {PROXY_RELEASE} serves tunnel \
             protocol {served}: run an agent of the proxy's release",
            hello.protocol_version
        ),
        reconnect_after_ms: RETRY_AFTER_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_protocols::tunnel::Frame;

    /// A hello as an agent of the previous release (today's framing, protocol 1) writes it,
    /// byte by byte: agent id "h1", release "0.0.9", services ["app"], no resources.
    fn hello_bytes(protocol_version: u16, release: &str) -> Vec<u8> {
        let mut payload = vec![0x01];
        payload.extend_from_slice(&protocol_version.to_be_bytes());
        for s in ["h1", release] {
            payload.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
            payload.extend_from_slice(s.as_bytes());
        }
        payload.extend_from_slice(&[0, 1, 0, 3]);
        payload.extend_from_slice(b"app");
        payload.extend_from_slice(&[0, 0]);
        let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        frame
    }

    fn decode_hello(bytes: &[u8]) -> Hello {
        match Frame::decode(bytes).unwrap() {
            Some((Frame::Hello(h), n)) if n == bytes.len() => h,
            other => panic!("not one hello: {other:?}"),
        }
    }

    #[test]
    fn an_agent_of_the_previous_release_is_served() {
        let hello = decode_hello(&hello_bytes(1, "0.0.9"));
        assert_eq!(hello.agent_version, "0.0.9");
        assert_eq!(hello.services, ["app"]);
        assert_eq!(refusal(&hello), None);
    }

    #[test]
    fn another_protocol_is_refused_naming_both_sides() {
        let hello = decode_hello(&hello_bytes(PROTOCOL_VERSION + 1, "9.0.0"));
        let goaway = refusal(&hello).expect("refused");
        assert_eq!(
            goaway.reason,
            format!(
                "agent 9.0.0 speaks tunnel protocol {}, proxy {PROXY_RELEASE} serves tunnel \
                 protocol {PROTOCOL_VERSION}: run an agent of the proxy's release",
                PROTOCOL_VERSION + 1
            )
        );
        assert_eq!(goaway.reconnect_after_ms, RETRY_AFTER_MS);
        let ancient = decode_hello(&hello_bytes(0, ""));
        let reason = refusal(&ancient).expect("refused").reason;
        assert!(
            reason.starts_with("agent of an unknown release speaks tunnel protocol 0, proxy "),
            "{reason}"
        );
    }
}
