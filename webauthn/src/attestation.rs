//! Attestation objects (WebAuthn §6.5): `{fmt, attStmt, authData}` in CBOR. Hop accepts `none`
//! and `packed` (self attestation, or an `x5c` leaf whose signature it checks without a vendor
//! trust list) and refuses every other format by name.

use ciborium::value::Value;

use crate::auth_data::AuthenticatorData;
use crate::cbor::{as_bytes, as_int, as_text, by_text, map, whole_item};
use crate::cose::{CoseAlgorithm, CoseKey};
use crate::error::WebauthnError;

/// How the authenticator vouched for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationKind {
    /// `none`: no statement (what browsers send when attestation is not asked for).
    None,
    /// `packed` signed with the credential key itself.
    SelfSigned,
    /// `packed` with a certificate chain, not checked against a vendor list.
    Basic,
}

/// A parsed attestation object.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub fmt: String,
    statement: Value,
    pub auth_data_bytes: Vec<u8>,
    pub auth_data: AuthenticatorData,
}

fn err(m: impl Into<String>) -> WebauthnError {
    WebauthnError::Attestation(m.into())
}

impl Attestation {
    /// Parses an attestation object (all of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<Self, WebauthnError> {
        let v = whole_item(bytes).map_err(err)?;
        let entries = map(&v).map_err(err)?;
        let need = |k: &str| {
            by_text(entries, k)
                .map_err(err)?
                .ok_or_else(|| err(format!("no {k}")))
        };
        let fmt = as_text(need("fmt")?, "fmt").map_err(err)?.to_string();
        let statement = need("attStmt")?.clone();
        let auth_data_bytes = as_bytes(need("authData")?, "authData")
            .map_err(err)?
            .to_vec();
        let auth_data = AuthenticatorData::parse(&auth_data_bytes)?;
        Ok(Self {
            fmt,
            statement,
            auth_data_bytes,
            auth_data,
        })
    }

    /// Checks the statement over `authData || client_data_hash`; returns its kind.
    pub fn verify(&self, client_data_hash: &[u8]) -> Result<AttestationKind, WebauthnError> {
        let stmt = map(&self.statement).map_err(err)?;
        match self.fmt.as_str() {
            "none" if stmt.is_empty() => Ok(AttestationKind::None),
            "none" => Err(err("format none with a statement")),
            "packed" => self.verify_packed(stmt, client_data_hash),
            other => Err(err(format!(
                "format {other:?} is not accepted (Hop asks for none and accepts none or packed)"
            ))),
        }
    }

    fn verify_packed(
        &self,
        stmt: &[(Value, Value)],
        client_data_hash: &[u8],
    ) -> Result<AttestationKind, WebauthnError> {
        let alg = by_text(stmt, "alg")
            .map_err(err)?
            .ok_or_else(|| err("packed: no alg"))?;
        let alg = as_int(alg, "alg").map_err(err)?;
        let sig = by_text(stmt, "sig")
            .map_err(err)?
            .ok_or_else(|| err("packed: no sig"))?;
        let sig = as_bytes(sig, "sig").map_err(err)?;
        let mut signed = self.auth_data_bytes.clone();
        signed.extend_from_slice(client_data_hash);
        let credential = self
            .auth_data
            .attested
            .as_ref()
            .ok_or_else(|| err("no attested credential"))?;
        match by_text(stmt, "x5c").map_err(err)? {
            None => {
                if CoseAlgorithm::from_cose(alg) != Some(credential.public_key.algorithm()) {
                    return Err(err(
                        "packed self attestation with another algorithm than the key's",
                    ));
                }
                credential.public_key.verify(&signed, sig)?;
                Ok(AttestationKind::SelfSigned)
            }
            Some(Value::Array(chain)) => {
                let leaf = chain.first().ok_or_else(|| err("packed: empty x5c"))?;
                let leaf = as_bytes(leaf, "x5c[0]").map_err(err)?;
                if alg != -7 {
                    return Err(err(format!("packed x5c with algorithm {alg} (only ES256)")));
                }
                let (_, cert) = x509_parser::parse_x509_certificate(leaf)
                    .map_err(|e| err(format!("x5c[0]: {e}")))?;
                let point = cert.public_key().subject_public_key.data.to_vec();
                CoseKey::Es256 { point }.verify(&signed, sig)?;
                Ok(AttestationKind::Basic)
            }
            Some(_) => Err(err("packed: x5c is not an array")),
        }
    }
}
