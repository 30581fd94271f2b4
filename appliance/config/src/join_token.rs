//! The join token an agent presents the first time: given inline, or as the absolute path of a
//! file that holds it (so that the secret need not appear in `ps`).

/// Why a join token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenError {
    #[error("join token file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("join token file {path} is empty")]
    Empty { path: String },
}

/// The join token `value` names: the value itself, or, when it is an absolute path, the first
/// line of that file (as Teleport's `--token` accepts), so the secret need not appear in `ps`.
pub fn read_join_token(value: &str) -> Result<String, JoinTokenError> {
    if !value.starts_with('/') {
        return Ok(value.to_string());
    }
    let text = std::fs::read_to_string(value).map_err(|source| JoinTokenError::Unreadable {
        path: value.to_string(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(JoinTokenError::Empty {
            path: value.to_string(),
        });
    }
    Ok(token.to_string())
}
