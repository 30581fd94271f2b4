//! The bot's `services` in tbot's v2 shape; only `spiffe-workload-api` is understood:
//! `{type: spiffe-workload-api, listen: unix:///run/hop/workload.sock, svids: [{path, hint,
//! rules: [{unix: {uid, gid, pid}}]}]}`. An SVID needs at least one rule (nothing is served to
//! every process by default), and a rule at least one of uid, gid, pid; all a rule names must
//! match. Anything else is refused by name.

use std::path::PathBuf;

use serde::Deserialize;

use super::config::BotConfigError;

/// One Workload API socket and what it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadApi {
    pub socket: PathBuf,
    pub svids: Vec<ServedSvid>,
}

/// An SVID the socket serves to the processes its rules match.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedSvid {
    pub path: String,
    #[serde(default)]
    pub hint: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One rule: the process's peer credentials must match everything it names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub unix: UnixRule,
}

/// Peer credentials a rule asks for (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixRule {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
}

/// The peer credentials of a connected process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl UnixRule {
    /// Whether `peer` matches everything this rule names (a rule naming nothing never matches).
    #[must_use]
    pub fn matches(&self, peer: &Peer) -> bool {
        let named = self.uid.is_some() || self.gid.is_some() || self.pid.is_some();
        named
            && self.uid.is_none_or(|u| u == peer.uid)
            && self.gid.is_none_or(|g| g == peer.gid)
            && self.pid.is_none_or(|p| Some(p) == peer.pid)
    }
}

impl ServedSvid {
    /// Whether any rule matches `peer`.
    #[must_use]
    pub fn serves(&self, peer: &Peer) -> bool {
        self.rules.iter().any(|r| r.unix.matches(peer))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    #[serde(rename = "type")]
    _kind: String,
    listen: String,
    svids: Vec<ServedSvid>,
}

fn invalid(index: usize, message: impl std::fmt::Display) -> BotConfigError {
    BotConfigError::Invalid {
        field: "services",
        message: format!("[{index}]: {message}"),
    }
}

/// The services of a file.
pub fn parse(services: Vec<serde_json::Value>) -> Result<Vec<WorkloadApi>, BotConfigError> {
    services
        .into_iter()
        .enumerate()
        .map(|(i, v)| service(i, v))
        .collect()
}

fn service(index: usize, v: serde_json::Value) -> Result<WorkloadApi, BotConfigError> {
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or_default();
    if kind != "spiffe-workload-api" {
        return Err(invalid(
            index,
            format!("service type {kind:?} is not supported; Hop serves: spiffe-workload-api"),
        ));
    }
    let s: ServiceFile = serde_json::from_value(v).map_err(|e| invalid(index, e))?;
    let socket = s
        .listen
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| invalid(index, "listen: use unix:///ABSOLUTE/PATH"))?;
    if s.svids.is_empty() {
        return Err(invalid(index, "svids: name at least one"));
    }
    for svid in &s.svids {
        hop_ca::check_spiffe_path(&svid.path).map_err(|e| invalid(index, e))?;
        if svid.rules.is_empty() || svid.rules.iter().any(|r| r.unix == UnixRule::default()) {
            return Err(invalid(
                index,
                format!(
                    "svids {}: give rules, each naming a unix uid, gid or pid (nothing is served to every process)",
                    svid.path
                ),
            ));
        }
    }
    Ok(WorkloadApi {
        socket: PathBuf::from(socket),
        svids: s.svids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(text: &str) -> Result<Vec<WorkloadApi>, BotConfigError> {
        let v: Vec<serde_json::Value> = serde_saphyr::from_str(text).unwrap();
        parse(v)
    }

    #[test]
    fn a_workload_api_service_parses() {
        let s = parse_yaml(
            "- type: spiffe-workload-api\n  listen: unix:///run/w.sock\n  svids:\n    - path: /svc/foo\n      rules: [{unix: {uid: 1000}}, {unix: {gid: 5, pid: 7}}]\n",
        )
        .unwrap();
        assert_eq!(s[0].socket, PathBuf::from("/run/w.sock"));
        let svid = &s[0].svids[0];
        let peer = |uid, gid, pid| Peer { uid, gid, pid };
        assert!(svid.serves(&peer(1000, 1, Some(1))));
        assert!(svid.serves(&peer(0, 5, Some(7))));
        assert!(!svid.serves(&peer(0, 5, Some(8))));
        assert!(!svid.serves(&peer(0, 5, None)));
        assert!(!svid.serves(&peer(1001, 1000, Some(1000))));
    }

    #[test]
    fn services_that_would_serve_everyone_or_are_unknown_are_refused() {
        for (text, want) in [
            ("- type: ssh-multiplexer\n", "ssh-multiplexer"),
            (
                "- type: spiffe-workload-api\n  listen: tcp://0.0.0.0:1\n  svids: [{path: /a, rules: [{unix: {uid: 1}}]}]\n",
                "listen",
            ),
            (
                "- type: spiffe-workload-api\n  listen: unix:///w\n  svids: [{path: /a}]\n",
                "rules",
            ),
            (
                "- type: spiffe-workload-api\n  listen: unix:///w\n  svids: [{path: /a, rules: [{unix: {}}]}]\n",
                "rules",
            ),
            (
                "- type: spiffe-workload-api\n  listen: unix:///w\n  svids: [{path: a, rules: [{unix: {uid: 1}}]}]\n",
                "SPIFFE path",
            ),
            (
                "- type: spiffe-workload-api\n  listen: unix:///w\n  svids: []\n",
                "svids",
            ),
        ] {
            let e = parse_yaml(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
