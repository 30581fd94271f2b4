//! The environment of a session's process: what the node sets, and which variables a client
//! may send (`env` requests, OpenSSH's `SendEnv`/`SetEnv`).
//!
//! Like sshd's `AcceptEnv`, only a short list of harmless variables is accepted; anything that
//! changes how programs load or run (`LD_*`, `PATH`, `IFS`, `BASH_ENV`, …) is refused.

/// Why a client may not set an environment variable (the client's request; the session goes on
/// without it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvRefused {
    /// `LD_*`/`DYLD_*`: an attempt worth an audit event.
    #[error("environment variable {name} is refused: it changes how programs are loaded")]
    ChangesLoading { name: String },
    #[error(
        "environment variable {name} is not accepted (accepted: LANG, LANGUAGE, LC_*, TZ, COLORTERM, TERM_PROGRAM)"
    )]
    NotAccepted { name: String },
}

/// Is a client allowed to set `name`?
pub fn client_may_set(name: &str) -> Result<(), EnvRefused> {
    if name.starts_with("LD_") || name.starts_with("DYLD_") {
        return Err(EnvRefused::ChangesLoading {
            name: name.to_string(),
        });
    }
    let ok = matches!(
        name,
        "LANG" | "LANGUAGE" | "TZ" | "COLORTERM" | "TERM_PROGRAM" | "TERM_PROGRAM_VERSION"
    ) || (name.starts_with("LC_")
        && name.len() > 3
        && name[3..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_'));
    if ok {
        Ok(())
    } else {
        Err(EnvRefused::NotAccepted {
            name: name.to_string(),
        })
    }
}

/// `PATH` for a login, as sshd sets it.
pub fn default_path(uid: u32) -> &'static str {
    if uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        for ok in ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "COLORTERM"] {
            assert!(client_may_set(ok).is_ok(), "{ok}");
        }
        for bad in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PATH",
            "BASH_ENV",
            "IFS",
            "LC_",
            "LC_all",
            "HOME",
            "DYLD_INSERT_LIBRARIES",
        ] {
            assert!(client_may_set(bad).is_err(), "{bad}");
        }
        assert!(
            client_may_set("LD_PRELOAD")
                .unwrap_err()
                .to_string()
                .contains("LD_PRELOAD")
        );
    }
}
