//! Moderated sessions at the node: an interactive session of a user whose roles carry
//! `require_session_join` (`hop_rbac::moderation`) waits until the required participants have
//! joined (`hop join SESSION --mode moderator`) before its shell starts; once it runs, a session
//! that no longer meets them ends or pauses (its owner's and peers' keystrokes are held back)
//! as `on_leave` says, and resumes when they are met again. A non-interactive session (a
//! command, sftp) of such a user is refused: nobody could moderate it.
//!
//! The node decides on its own, from the roles in its access snapshot and the participants it
//! serves (`super::party`); a joiner's roles come with the proxy's Dial, like who may join.

use hop_rbac::moderation::{OnLeave, Participant, SessionJoinRequirement};

use super::party::LiveSession;

/// The first requirement the people now in `live` do not meet, in words.
pub fn unmet(reqs: &[SessionJoinRequirement], live: &LiveSession) -> Option<String> {
    let joined = live.participants();
    let people: Vec<Participant<'_>> = joined
        .iter()
        .map(|j| Participant {
            user: &j.user,
            roles: &j.roles,
            mode: &j.mode,
        })
        .collect();
    hop_rbac::moderation::unmet(reqs, &people)
}

/// What a running session does now that `reqs` are not met.
pub fn on_leave(reqs: &[SessionJoinRequirement], live: &LiveSession) -> OnLeave {
    let joined = live.participants();
    let people: Vec<Participant<'_>> = joined
        .iter()
        .map(|j| Participant {
            user: &j.user,
            roles: &j.roles,
            mode: &j.mode,
        })
        .collect();
    hop_rbac::moderation::on_leave(reqs, &people)
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
    use crate::node::party::Parties;
    use std::sync::Arc;

    #[test]
    fn a_session_waits_for_its_moderator_and_knows_when_they_leave() {
        let reqs = vec![SessionJoinRequirement {
            name: "auditors".into(),
            filter: r#"contains(user.spec.roles, "auditor")"#.into(),
            kinds: vec!["ssh".into()],
            count: 1,
            modes: vec!["moderator".into()],
            on_leave: Some("pause".into()),
        }];
        let parties = Arc::new(Parties::default());
        let hosted = parties.host("s1");
        assert!(unmet(&reqs, &hosted.live).is_some());
        assert!(waiting_line("x").contains("--mode moderator"));
        assert_eq!(on_leave(&reqs, &hosted.live), OnLeave::Pause);
    }
}
