//! Moderated sessions at the node: an interactive session of a user whose roles carry
//! `require_session_join` (`hop_rbac::moderation`) waits until the required participants have
//! joined (`hop join SESSION --mode moderator`) before its shell starts; once it runs, a session
//! that no longer meets them ends or pauses (its owner's and peers' keystrokes are ignored)
//! as `on_leave` says, and resumes when they are met again. A non-interactive session (a
//! command, sftp) of such a user is refused: nobody could moderate it.
//!
//! The node decides on its own, from the roles in its access snapshot and the participants it
//! serves (`super::party`); a joiner's roles come with the proxy's Dial, like who may join.

use hop_api::dial::join::JoinDial;
use hop_rbac::moderation::{OnLeave, Participant};

use super::access::Grant;
use super::party::LiveSession;

/// The people in `live` who may count: not the owner, who cannot moderate their own session
/// (`hop_rbac::moderation` counts each other user once).
fn counted(owner: &str, live: &LiveSession) -> Vec<JoinDial> {
    live.participants()
        .into_iter()
        .filter(|j| j.user != owner)
        .collect()
}

fn people(joined: &[JoinDial]) -> Vec<Participant<'_>> {
    joined
        .iter()
        .map(|j| Participant {
            user: &j.user,
            roles: &j.roles,
            mode: &j.mode,
        })
        .collect()
}

/// The first requirement of `grant` the people now in `live` do not meet, in words.
pub fn unmet(grant: &Grant, live: &LiveSession) -> Option<String> {
    let joined = counted(&grant.identity.username, live);
    hop_rbac::moderation::unmet(&grant.moderation, &people(&joined))
}

/// What a running session of `grant` does now that its requirements are not met.
pub fn on_leave(grant: &Grant, live: &LiveSession) -> OnLeave {
    let joined = counted(&grant.identity.username, live);
    hop_rbac::moderation::on_leave(&grant.moderation, &people(&joined))
}

/// The line the owner reads while the session waits.
pub fn waiting_line(why: &str) -> String {
    format!(
        "\r\n[hop: this session is moderated; it starts once {why} joined (hop join SESSION --mode moderator)]\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_line_says_how_to_moderate() {
        assert!(waiting_line("1 participant(s)").contains("--mode moderator"));
    }
}
