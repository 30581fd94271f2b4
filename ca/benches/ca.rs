//! Issuance and verification costs of the CA: what one login (an SSH + X.509 user certificate
//! pair), one SSH/X.509 verification on the proxy, and one agent join (host certs) cost.

// reason: a benchmark that cannot set up or run should stop at once, and its helpers are not
// #[test] functions that clippy's allow-unwrap-in-tests would cover.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hop_ca::{
    CaKind, CertAuthority, HostRole, Identity, generate_ssh_keypair, generate_x509_keypair,
    parse_pem_certs, verify_user_ssh, verify_user_x509,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const TTL: Duration = Duration::from_secs(8 * 3600);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

fn identity() -> Identity {
    Identity {
        username: "alice@example.com".into(),
        roles: vec!["access".into(), "editor".into()],
        logins: vec!["alice".into(), "root".into()],
        cluster: "hop.example.com".into(),
        route_to_cluster: "hop.example.com".into(),
        permit_pty: true,
        permit_port_forwarding: true,
        mfa_verified: true,
        ..Identity::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let user_ca =
        CertAuthority::generate(CaKind::User, "hop.example.com", now(), &mut rng).unwrap();
    let host_ca =
        CertAuthority::generate(CaKind::Host, "hop.example.com", now(), &mut rng).unwrap();
    let trusted = [user_ca.public(), host_ca.public()];
    let ssh_key = generate_ssh_keypair(&mut rng).unwrap();
    let x509_key = generate_x509_keypair(&mut rng).unwrap();
    let id = identity();

    c.bench_function("issue_user_pair_ssh_x509", |b| {
        b.iter(|| {
            let ssh = user_ca
                .issue_user_ssh(&ssh_key.public_openssh, &id, now(), TTL, &mut rng)
                .unwrap();
            let x509 = user_ca
                .issue_user_x509(&x509_key.public_spki_der, &id, now(), TTL, &mut rng)
                .unwrap();
            black_box((ssh, x509))
        });
    });

    let ssh_cert = user_ca
        .issue_user_ssh(&ssh_key.public_openssh, &id, now(), TTL, &mut rng)
        .unwrap();
    c.bench_function("verify_user_ssh", |b| {
        b.iter(|| black_box(verify_user_ssh(black_box(&ssh_cert), &trusted, now()).unwrap()));
    });

    let x509_pem = user_ca
        .issue_user_x509(&x509_key.public_spki_der, &id, now(), TTL, &mut rng)
        .unwrap();
    let x509_der = parse_pem_certs(&x509_pem).unwrap().remove(0);
    c.bench_function("verify_user_x509", |b| {
        b.iter(|| black_box(verify_user_x509(black_box(&x509_der), &trusted, now()).unwrap()));
    });

    let names = vec!["node-1.example.com".to_owned(), "10.0.0.5".to_owned()];
    c.bench_function("issue_host_pair_ssh_x509", |b| {
        b.iter(|| {
            let ssh = host_ca
                .issue_host_ssh(
                    &ssh_key.public_openssh,
                    "node-1",
                    &names,
                    now(),
                    TTL,
                    &mut rng,
                )
                .unwrap();
            let x509 = host_ca
                .issue_host_x509(
                    &x509_key.public_spki_der,
                    "node-1",
                    HostRole::Node,
                    &names,
                    None,
                    now(),
                    TTL,
                    &mut rng,
                )
                .unwrap();
            black_box((ssh, x509))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
