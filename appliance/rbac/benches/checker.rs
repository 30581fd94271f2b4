//! Access evaluation throughput: a user with 10 roles checked against 10,000 labelled nodes.

// reason: a benchmark that cannot set up or run should stop at once, and its helpers are not
// #[test] functions that clippy's allow-unwrap-in-tests would cover.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hop_rbac::labels::labels;
use hop_rbac::{AccessChecker, Role, Traits};

fn roles() -> Vec<Role> {
    (0..10)
        .map(|i| {
            let mut r = Role::new(format!("team-{i}"));
            r.spec.allow.logins = vec!["{{internal.logins}}".into(), format!("svc-{i}")];
            r.spec.allow.node_labels = match i % 4 {
                0 => labels([("team", "t0"), ("env", "staging")]),
                1 => labels([("env", "dev-*")]),
                2 => labels([("region", "^(eu|us)-[a-z]+-[0-9]$"), ("tier", "web")]),
                _ => labels([("team", "t3"), ("team", "t7")]),
            };
            if i == 9 {
                r.spec.deny.node_labels = labels([("env", "production")]);
                r.spec.deny.logins = vec!["root".into()];
            }
            r
        })
        .collect()
}

fn nodes() -> Vec<BTreeMap<String, String>> {
    let envs = ["staging", "dev-1", "dev-2", "production", "qa"];
    let regions = ["eu-west-1", "us-east-2", "ap-south-1"];
    (0..10_000)
        .map(|i: usize| {
            BTreeMap::from([
                ("env".to_owned(), envs[i % envs.len()].to_owned()),
                ("team".to_owned(), format!("t{}", i % 10)),
                ("region".to_owned(), regions[i % regions.len()].to_owned()),
                (
                    "tier".to_owned(),
                    if i.is_multiple_of(2) { "web" } else { "db" }.to_owned(),
                ),
                ("hostname".to_owned(), format!("node-{i}.example.com")),
            ])
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let traits: Traits = BTreeMap::from([("logins".to_owned(), vec!["alice".to_owned()])]);
    let checker = AccessChecker::new(&roles(), &traits).unwrap();
    let nodes = nodes();
    let mut g = c.benchmark_group("check_node_login");
    g.throughput(Throughput::Elements(nodes.len() as u64));
    g.bench_function("10_roles_x_10k_nodes", |b| {
        b.iter(|| {
            let mut allowed = 0usize;
            for n in &nodes {
                allowed += usize::from(checker.check_node_login(black_box(n), "alice").is_ok());
            }
            black_box(allowed)
        });
    });
    g.finish();
    c.bench_function("access_checker_new_10_roles", |b| {
        let roles = roles();
        b.iter(|| AccessChecker::new(black_box(&roles), &traits).unwrap());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
