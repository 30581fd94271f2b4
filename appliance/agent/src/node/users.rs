//! OS accounts a session runs as: the `passwd` and `group` databases read from `/etc`.
//!
//! This module owns looking a login up (uid, gid, home, shell) and its supplementary groups.
//! It reads the files directly (no NSS), which covers local accounts; directory-backed accounts
//! (LDAP, SSSD) are not found yet.

use std::path::Path;

/// One `passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Finds `login` in `passwd` text (`name:x:uid:gid:gecos:home:shell` lines).
pub fn parse_passwd(text: &str, login: &str) -> Option<OsUser> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0] != login {
                return None;
            }
            Some(OsUser {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: if f[6].is_empty() {
                    "/bin/sh".to_string()
                } else {
                    f[6].to_string()
                },
            })
        })
}

/// Groups listing `login` as a member in `group` text (`name:x:gid:member,member` lines), plus
/// `primary`.
pub fn parse_groups(text: &str, login: &str, primary: u32) -> Vec<u32> {
    let mut out = vec![primary];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m.trim() == login) && !out.contains(&gid) {
            out.push(gid);
        }
    }
    out
}

/// Why a login has no account here: the node's (an unreadable passwd file) or the user's (a
/// login this node does not have).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("login {login:?} does not exist on this node")]
    NoSuchLogin { login: String },
}

/// Looks `login` up in `/etc/passwd`, with its groups from `/etc/group`.
pub fn lookup(login: &str) -> Result<(OsUser, Vec<u32>), LookupError> {
    lookup_in(Path::new("/etc"), login)
}

fn lookup_in(etc: &Path, login: &str) -> Result<(OsUser, Vec<u32>), LookupError> {
    let path = etc.join("passwd");
    let passwd = std::fs::read_to_string(&path)
        .map_err(|source| LookupError::Unreadable { path, source })?;
    let user = parse_passwd(&passwd, login).ok_or_else(|| LookupError::NoSuchLogin {
        login: login.to_string(),
    })?;
    let groups = std::fs::read_to_string(etc.join("group"))
        .map(|g| parse_groups(&g, login, user.gid))
        .unwrap_or_else(|_| vec![user.gid]);
    Ok((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh\nbob:x:1001:1001::/home/bob:\nbroken:x:nope:1:::/bin/sh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:alice,carol\ndocker:x:998:bob,alice\nalice:x:1000:\n";

    #[test]
    fn finds_users_and_defaults_the_shell() {
        let a = parse_passwd(PASSWD, "alice").unwrap();
        assert_eq!(
            (a.uid, a.gid, a.home.as_str(), a.shell.as_str()),
            (1000, 1000, "/home/alice", "/bin/zsh")
        );
        assert_eq!(parse_passwd(PASSWD, "bob").unwrap().shell, "/bin/sh");
        assert_eq!(parse_passwd(PASSWD, "broken"), None);
        assert_eq!(parse_passwd(PASSWD, "ali"), None);
        assert_eq!(parse_passwd(PASSWD, "nobody"), None);
    }

    #[test]
    fn supplementary_groups() {
        assert_eq!(parse_groups(GROUP, "alice", 1000), vec![1000, 27, 998]);
        assert_eq!(parse_groups(GROUP, "bob", 1001), vec![1001, 998]);
        assert_eq!(parse_groups(GROUP, "root", 0), vec![0]);
    }
}
