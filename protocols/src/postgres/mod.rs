//! PostgreSQL wire protocol (version 3.0/3.2), both directions, sans IO.
//!
//! This module owns the byte grammar of a PostgreSQL session as Hop's
//! database proxy and agent see it: the untyped startup-phase packets
//! ([`startup`]: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage),
//! the typed frontend messages that follow ([`frontend`]: Query, Parse, Bind,
//! Execute, COPY, …, plus a bounded-memory [`FrontendScanner`] that audits
//! them in place from relay buffers) and the backend messages the proxy must
//! read or write ([`backend`]: authentication, ErrorResponse, ReadyForQuery,
//! …, with encoders for refusals). It never does IO, never keeps session
//! state beyond a scanner's partial frame, and never decides anything: access
//! checks, authentication and routing belong to the proxy and agent.
//!
//! Every message after startup is framed as `type:u8 length:u32 body`, the
//! length counting itself but not the type byte. Parsers borrow the caller's
//! buffer, answer `Ok(None)` until a message is complete, check the header as
//! soon as it arrives, require the body to be consumed exactly (so
//! `encode(parse(bytes)) == bytes`) and report the peer's faults as
//! [`PgMessageError`].

pub mod backend;
pub mod frontend;
mod message;
pub mod startup;

pub use backend::{
    Authentication, BackendMessage, EncryptionResponse, ErrorFields, Severity, TransactionStatus,
    encode_authentication_ok, encode_backend_key_data, encode_error_response,
    encode_parameter_status, encode_ready_for_query, parse_backend, parse_backend_with_limit,
    parse_encryption_response,
};
pub use frontend::{
    Bind, DEFAULT_SCAN_CAP, FrontendFeed, FrontendMessage, FrontendScanner, FunctionCall, Parse,
    SaslInitialResponse, Scanned, Target, TruncatedHead, parse_frontend, parse_frontend_with_limit,
    parse_password, parse_sasl_initial_response, parse_truncated_head,
};
pub use message::{
    DEFAULT_MAX_MESSAGE_LEN, Formats, HEADER_LEN, Oids, PgEncodeError, PgMessageError, RawMessage,
    Values, split_message,
};
pub use startup::{
    CANCEL_REQUEST_CODE, CANCEL_REQUEST_LEN, CancelRequest, GSSENC_REQUEST_CODE, MAX_STARTUP_LEN,
    Parameters, ProtocolVersion, REQUEST_CODE_MAJOR, SSL_REQUEST_CODE, StartupError,
    StartupMessage, StartupPacket, encode_cancel_request, encode_ssl_request,
    encode_startup_message, parse_startup,
};
