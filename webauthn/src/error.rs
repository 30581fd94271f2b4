//! Why a ceremony or a parse failed; each names what was wrong.

/// A WebAuthn check that did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebauthnError {
    #[error("client data: {0}")]
    ClientData(String),
    #[error("authenticator data: {0}")]
    AuthenticatorData(String),
    #[error("attestation: {0}")]
    Attestation(String),
    #[error("public key: {0}")]
    PublicKey(String),
    #[error("the ceremony is a {got:?}, expected {want:?}")]
    WrongType { got: String, want: &'static str },
    #[error("the challenge is not the one this server issued")]
    WrongChallenge,
    #[error("origin {0:?} is not this cluster's web address")]
    WrongOrigin(String),
    #[error("the ceremony ran in a cross-origin frame")]
    CrossOrigin,
    #[error("the authenticator signed for another relying party (RP ID hash differs)")]
    WrongRelyingParty,
    #[error("the authenticator did not report user presence")]
    NoUserPresence,
    #[error("the authenticator did not verify the user (PIN or biometric), which is required")]
    NoUserVerification,
    #[error("the signature does not verify with the registered key")]
    BadSignature,
    #[error(
        "the signature counter went from {stored} to {presented}: the authenticator may have been cloned"
    )]
    CounterRegressed { stored: u32, presented: u32 },
    #[error("the assertion is for another credential")]
    WrongCredential,
}
