//! The agents other proxies of the cluster hold tunnels to, as their presence summaries say
//! (`crate::presence`), and where each of those proxies takes peer connections.
//!
//! This module owns turning the summaries into a view the registry consults: which proxy to
//! ask for an agent that has no tunnel here (`crate::peering`), which resources those agents
//! announced (so that a user on this proxy can name them), and which proxy ids are live peers
//! (a peer connection from any other proxy certificate is refused). A name keeps the rule agents
//! meet on one proxy across proxies: the first holder keeps it (`crate::tunnels` refuses a hello
//! that announces a name another proxy's agent holds, and lists a name contested in a race for
//! the agent connected first, the same on every proxy).

use std::collections::{HashMap, HashSet};

use hop_auth::inventory::PresenceSummary;
use hop_protocols::tunnel::ResourceAnnouncement;

/// Where a peer proxy takes peer connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub proxy_id: String,
    /// `host:port` of its one port.
    pub addr: String,
}

/// An agent tunnelled to other proxies.
#[derive(Debug, Clone)]
pub struct RemoteAgent {
    pub host_id: String,
    /// When it connected to the first proxy that lists it (Unix seconds).
    pub connected_unix: i64,
    /// The proxies that hold its tunnel, the one it was heard from last first.
    pub peers: Vec<Peer>,
    pub resources: Vec<ResourceAnnouncement>,
    /// Its last heartbeat at each of `peers` (Unix seconds), in the same order.
    heard: Vec<i64>,
}

impl RemoteAgent {
    fn order_by_freshness(&mut self) {
        let mut both: Vec<(i64, Peer)> = self.heard.drain(..).zip(self.peers.drain(..)).collect();
        both.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.proxy_id.cmp(&y.1.proxy_id)));
        (self.heard, self.peers) = both.into_iter().unzip();
    }
}

/// Other proxies' agents, built from their live summaries.
#[derive(Debug, Default)]
pub struct RemoteView {
    peers: HashSet<String>,
    /// The live peers that take peer connections.
    reachable: Vec<Peer>,
    agents: HashMap<String, RemoteAgent>,
}

impl RemoteView {
    /// The view of `summaries` (other proxies' only), leaving out agents `local` says are
    /// tunnelled here and names already held.
    pub fn build(summaries: &[PresenceSummary], local: impl Fn(&str) -> bool) -> Self {
        let mut view = RemoteView::default();
        let mut sorted: Vec<&PresenceSummary> = summaries.iter().collect();
        sorted.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id));
        for s in sorted {
            view.peers.insert(s.proxy_id.clone());
            if s.peer_addr.is_empty() {
                continue;
            }
            let peer = Peer {
                proxy_id: s.proxy_id.clone(),
                addr: s.peer_addr.clone(),
            };
            view.reachable.push(peer.clone());
            for a in &s.agents {
                if local(&a.host_id) {
                    continue;
                }
                let entry = view
                    .agents
                    .entry(a.host_id.clone())
                    .or_insert_with(|| RemoteAgent {
                        host_id: a.host_id.clone(),
                        connected_unix: a.connected_unix,
                        peers: Vec::new(),
                        resources: a.announced.iter().map(Into::into).collect(),
                        heard: Vec::new(),
                    });
                entry.peers.push(peer.clone());
                entry.heard.push(a.last_heartbeat_unix);
            }
        }
        for a in view.agents.values_mut() {
            a.order_by_freshness();
        }
        view
    }

    /// Every live peer that takes peer connections, by proxy id.
    pub fn reachable(&self) -> &[Peer] {
        &self.reachable
    }

    /// Whether `proxy_id` is a proxy of the cluster with a live summary.
    pub fn is_peer(&self, proxy_id: &str) -> bool {
        self.peers.contains(proxy_id)
    }

    /// The proxies that hold `host_id`'s tunnel (none if no other one does), the one it was
    /// heard from last first.
    pub fn peers_of(&self, host_id: &str) -> &[Peer] {
        self.agents.get(host_id).map_or(&[], |a| &a.peers)
    }

    /// Whether an agent other than `host_id` announced `kind` `name` to another proxy.
    pub fn holds_name(&self, kind: &str, name: &str, host_id: &str) -> bool {
        self.agents.values().any(|a| {
            a.host_id != host_id
                && a.resources
                    .iter()
                    .any(|r| r.kind == kind && r.name.eq_ignore_ascii_case(name))
        })
    }

    /// Other proxies' agents, sorted by host id.
    pub fn agents(&self) -> Vec<&RemoteAgent> {
        let mut v: Vec<&RemoteAgent> = self.agents.values().collect();
        v.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hop_auth::inventory::{AgentSummary, AnnouncedResource};

    fn summary(proxy: &str, addr: &str, agents: &[&str]) -> PresenceSummary {
        let heard = if proxy == "p2" { 20 } else { 10 };
        PresenceSummary {
            proxy_id: proxy.into(),
            written_unix: 0,
            peer_addr: addr.into(),
            agents: agents
                .iter()
                .map(|h| AgentSummary {
                    host_id: (*h).into(),
                    version: String::new(),
                    services: vec!["node".into()],
                    resources: vec![],
                    remote_addr: String::new(),
                    connected_unix: 0,
                    last_heartbeat_unix: heard,
                    announced: vec![AnnouncedResource {
                        kind: "node".into(),
                        name: format!("n-{h}"),
                        labels: vec![("env".into(), "dev".into())],
                        target: None,
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn agents_tunnelled_here_stay_local_and_every_holder_is_kept_freshest_first() {
        let view = RemoteView::build(
            &[
                summary("p2", "10.0.0.2:443", &["a", "b"]),
                summary("p1", "10.0.0.1:443", &["b", "c"]),
            ],
            |h| h == "c",
        );
        assert!(view.peers_of("c").is_empty(), "c is tunnelled here");
        let b: Vec<&str> = view
            .peers_of("b")
            .iter()
            .map(|p| p.proxy_id.as_str())
            .collect();
        assert_eq!(b, ["p2", "p1"], "heard from p2 last");
        assert_eq!(view.peers_of("a")[0].addr, "10.0.0.2:443");
        let names: Vec<_> = view.agents().iter().map(|a| a.host_id.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(view.agents()[0].resources[0].labels[0].1, "dev");
        assert!(view.is_peer("p1") && view.is_peer("p2") && !view.is_peer("p3"));
        assert!(view.holds_name("node", "N-A", "x"));
        assert!(
            !view.holds_name("node", "n-a", "a"),
            "an agent never shadows itself"
        );
        assert!(!view.holds_name("db", "n-a", "x"));
    }

    #[test]
    fn a_proxy_that_takes_no_peer_connections_routes_nothing() {
        let view = RemoteView::build(&[summary("old", "", &["a"])], |_| false);
        assert!(view.peers_of("a").is_empty());
        assert!(view.is_peer("old"));
        assert!(view.reachable().is_empty());
    }
}
