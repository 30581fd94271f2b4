//! The `token` resource: a join token that lets an agent obtain its first host certificate.
//!
//! This module owns [`ProvisionToken`], its `validate()`, and the floor on the strength of a
//! token's secret ([`check_secret_strength`]). A token's `metadata.name` is a public id; the
//! secret an agent presents is never stored, only its SHA-256 (`spec.secret_hash`). Documents of
//! older versions used the secret as the name, so `Debug` still redacts the name (and the hash),
//! and validation messages never echo either.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::resource::{Kind, Metadata};
use crate::validation::{FieldPath, Problem, ValidationError, check_kind, check_version, invalid};

/// Versions accepted for tokens.
pub const TOKEN_VERSIONS: &[&str] = &["v2"];

/// Shortest accepted token secret, in characters.
pub const MIN_SECRET_LEN: usize = 16;

/// Least estimated strength of a token secret, in bits (see [`estimated_bits`]). 80 bits is the
/// usual floor for an online-guessable secret that lives minutes to days; the secrets Hop makes
/// itself have 128.
pub const MIN_SECRET_BITS: u32 = 80;

/// `kind: token`. `metadata.name` is the token's public id; `metadata.expires` is required.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionToken {
    /// Always `token`.
    pub kind: String,
    /// `v2`.
    pub version: String,
    /// `name` is the public id; `expires` is required.
    pub metadata: Metadata,
    /// What the token lets an agent become.
    pub spec: ProvisionTokenSpec,
}

/// `spec` of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionTokenSpec {
    /// Roles an agent joining with this token gets.
    pub roles: Vec<SystemRole>,
    /// How the token is presented; only `token` is supported.
    #[serde(default)]
    pub join_method: JoinMethod,
    /// Remaining uses; absent = until expiry; 0 = used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// hex(sha256(secret)): how the Auth service recognizes the secret without keeping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
}

/// An agent's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemRole {
    /// SSH agent.
    Node,
    /// Proxy.
    Proxy,
    /// Database agent.
    Db,
    /// Application agent.
    App,
    /// Kubernetes agent.
    Kube,
    /// Windows desktop agent.
    WindowsDesktop,
    /// Machine identity.
    Bot,
    /// Discovery service.
    Discovery,
}

impl SystemRole {
    /// The YAML spelling.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Proxy => "proxy",
            Self::Db => "db",
            Self::App => "app",
            Self::Kube => "kube",
            Self::WindowsDesktop => "windows_desktop",
            Self::Bot => "bot",
            Self::Discovery => "discovery",
        }
    }
}

impl std::str::FromStr for SystemRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Node,
            Self::Proxy,
            Self::Db,
            Self::App,
            Self::Kube,
            Self::WindowsDesktop,
            Self::Bot,
            Self::Discovery,
        ]
        .into_iter()
        .find(|r| r.as_str() == s.trim())
        .ok_or_else(|| {
            format!(
                "unknown role {s:?}; expected node, proxy, db, app, kube, windows_desktop, bot or discovery"
            )
        })
    }
}

/// How a join token is presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinMethod {
    /// The agent presents the token's secret.
    #[default]
    Token,
}

impl fmt::Debug for ProvisionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = Metadata {
            name: "<redacted>".into(),
            ..self.metadata.clone()
        };
        let spec = ProvisionTokenSpec {
            secret_hash: self.spec.secret_hash.as_ref().map(|_| "<redacted>".into()),
            ..self.spec.clone()
        };
        f.debug_struct("ProvisionToken")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("metadata", &redacted)
            .field("spec", &spec)
            .finish()
    }
}

impl Kind for ProvisionToken {
    const KIND: &'static str = "token";

    fn name(&self) -> &str {
        &self.metadata.name
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

impl ProvisionToken {
    /// A token with the given id, roles and expiry (and no secret yet).
    #[must_use]
    pub fn new(id: impl Into<String>, roles: &[SystemRole], expires: OffsetDateTime) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            version: TOKEN_VERSIONS[0].to_owned(),
            metadata: Metadata {
                expires: Some(expires),
                ..Metadata::named(id)
            },
            spec: ProvisionTokenSpec {
                roles: roles.to_vec(),
                join_method: JoinMethod::Token,
                uses: None,
                secret_hash: None,
            },
        }
    }

    /// Kind, version, expiry, roles (a proxy token grants nothing else) and uses.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_kind(&self.kind, Self::KIND)?;
        check_version(&self.version, TOKEN_VERSIONS)?;
        self.metadata.validate()?;
        if self.metadata.expires.is_none() {
            return Err(invalid(
                &FieldPath::new("metadata.expires"),
                Problem::Required,
            ));
        }
        if self.spec.roles.is_empty() {
            return Err(invalid(&FieldPath::new("spec.roles"), Problem::Empty));
        }
        if self.spec.roles.contains(&SystemRole::Proxy) && self.spec.roles.len() > 1 {
            return Err(invalid(
                &FieldPath::new("spec.roles"),
                Problem::Invalid(
                    "a token that grants proxy must grant nothing else (--type proxy alone)".into(),
                ),
            ));
        }
        if self.spec.uses == Some(0) {
            return Err(invalid(
                &FieldPath::new("spec.uses"),
                Problem::Invalid("must be at least 1 (omit it for unlimited uses)".into()),
            ));
        }
        Ok(())
    }
}

/// Why a token secret an administrator chose is refused. Messages never echo the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    /// Fewer than [`MIN_SECRET_LEN`] characters.
    #[error(
        "the token value has {len} characters; at least {MIN_SECRET_LEN} are required (omit --value to let Hop make a random 128-bit one, or use `openssl rand -hex 16`)"
    )]
    TooShort {
        /// Its length in characters.
        len: usize,
    },
    /// Whitespace or control characters, which agents strip or cannot pass.
    #[error(
        "the token value contains whitespace or control characters; use printable characters only"
    )]
    BadCharacter,
    /// Below [`MIN_SECRET_BITS`] by [`estimated_bits`].
    #[error(
        "the token value is too guessable: about {bits} bits estimated, at least {MIN_SECRET_BITS} are required (repeated characters and runs such as abcd or 1234 count for little; omit --value to let Hop make a random 128-bit one, or use `openssl rand -hex 16`)"
    )]
    TooGuessable {
        /// The estimate.
        bits: u32,
    },
}

/// A conservative estimate of a secret's strength in bits: the characters that do not continue
/// the step of the two before them (a repeat as in `aaa`, or a run as in `abc` or `cba`), each
/// worth log2 of the smaller of the size of the character classes used (lower case 26, upper
/// case 26, digits 10, other printable ASCII 33) and the number of distinct characters. A random
/// 32-digit hex string scores about 110 (and none of 100,000 scored under the floor; counting
/// every adjacent pair like `ab` or `33` as predictable, as this once did, refused 1.4 % of
/// `openssl rand -hex 16` values); `aaaa…`, `abcdefgh…` and `01234567…` score near nothing.
#[must_use]
pub fn estimated_bits(secret: &str) -> u32 {
    let chars: Vec<char> = secret.chars().collect();
    let classes = [
        (chars.iter().any(char::is_ascii_lowercase), 26u32),
        (chars.iter().any(char::is_ascii_uppercase), 26),
        (chars.iter().any(char::is_ascii_digit), 10),
        (chars.iter().any(|c| !c.is_ascii_alphanumeric()), 33),
    ];
    let pool: u32 = classes
        .iter()
        .filter(|(used, _)| *used)
        .map(|(_, n)| n)
        .sum();
    let distinct = u32::try_from(
        chars
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    )
    .unwrap_or(u32::MAX);
    let alphabet = pool.min(distinct);
    if alphabet < 2 {
        return 0;
    }
    let novel = (0..chars.len())
        .filter(|&i| !continues_a_step(&chars, i))
        .count();
    let bits = f64::from(u32::try_from(novel).unwrap_or(u32::MAX)) * f64::from(alphabet).log2();
    // Truncation (and saturation) is the conservative direction.
    bits as u32
}

/// Does the character at `i` repeat the step of the two before it (the same character again, or
/// one more or one less again)? Such a character adds nothing a guesser would not try.
fn continues_a_step(chars: &[char], i: usize) -> bool {
    let step = |a: usize, b: usize| -> Option<i64> {
        Some(i64::from(u32::from(*chars.get(b)?)) - i64::from(u32::from(*chars.get(a)?)))
    };
    let (Some(prev), Some(before)) = (i.checked_sub(1), i.checked_sub(2)) else {
        return false;
    };
    match (step(before, prev), step(prev, i)) {
        (Some(first), Some(second)) => first == second && second.abs() <= 1,
        _ => false,
    }
}

/// The floor on a secret an administrator chooses (`hop admin tokens add --value`): at least
/// [`MIN_SECRET_LEN`] printable characters and [`MIN_SECRET_BITS`] by [`estimated_bits`].
pub fn check_secret_strength(secret: &str) -> Result<(), WeakSecret> {
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(WeakSecret::BadCharacter);
    }
    let len = secret.chars().count();
    if len < MIN_SECRET_LEN {
        return Err(WeakSecret::TooShort { len });
    }
    let bits = estimated_bits(secret);
    if bits < MIN_SECRET_BITS {
        return Err(WeakSecret::TooGuessable { bits });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_strength_floor() {
        let cases: &[(&str, bool)] = &[
            // What Hop and openssl make.
            ("3f9c1a7be2d04c6581f2a9d7e0b4c36a", true),
            ("q7ZrT2xVw9LmN4pKs8BdYc", true),
            ("5b8e4f0a-2c1d-4e9b-8f3a-7d6c5b4a3e21", true),
            // Random hex that the pairwise rule refused (adjacent `12`, `ab`, `33`, …).
            ("3123ab45cdd0e67f89a0b1c2d33e4f50", true),
            // Short, repeated, runs, small alphabets.
            ("abc", false),
            ("3f9c1a7be2d04c6", false),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("abcdefghijklmnopqrstuvwxyz", false),
            ("0123456789abcdef0123", false),
            ("passwordpasswordpassword", false),
            ("1010101010101010101010101010", false),
            ("with a space in the middle xyz", false),
        ];
        for (secret, ok) in cases {
            assert_eq!(
                check_secret_strength(secret).is_ok(),
                *ok,
                "{secret:?}: {:?} ({} bits)",
                check_secret_strength(secret),
                estimated_bits(secret)
            );
        }
        // 128-bit hex values from a seeded generator (splitmix64) pass, every one.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for _ in 0..20_000 {
            let hex = format!("{:016x}{:016x}", next(), next());
            assert!(
                check_secret_strength(&hex).is_ok(),
                "{hex}: {} bits",
                estimated_bits(&hex)
            );
        }
        // Messages never echo the value.
        let e = check_secret_strength("hunter2hunter2hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter"), "{e}");
        assert!(e.to_string().contains("80 are required"), "{e}");
    }

    #[test]
    fn a_proxy_token_grants_nothing_else() {
        let t = |roles: &[SystemRole]| {
            ProvisionToken::new("id1", roles, time::macros::datetime!(2030-01-01 00:00 UTC))
                .validate()
        };
        assert!(t(&[SystemRole::Proxy]).is_ok());
        assert!(t(&[SystemRole::Node, SystemRole::App]).is_ok());
        let e = t(&[SystemRole::Node, SystemRole::Proxy]).unwrap_err();
        assert!(e.to_string().contains("proxy"), "{e}");
    }
}
