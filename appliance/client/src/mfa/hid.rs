//! A FIDO2 security key over USB HID: CTAPHID reports through `hop-platform`'s hidraw device,
//! framed and parsed by `hop-webauthn`'s sans-IO `ctap` codec. Linux only (hidraw); no system
//! library is needed. Not tested against a real key in CI (none is plugged in there): the codec
//! is tested with constructed and recorded frames, and the e2e tests use the software key.
//! getInfo and clientPIN (the PIN/UV auth protocol, driven by [`super::pin`]) go through the
//! same CTAPHID_CBOR exchange as the two ceremonies.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hop_platform::clock;
use hop_platform::hidraw::{self, HidDevice};
use hop_webauthn::ctap::{
    self, BROADCAST_CID, CtapError, GetAssertion, GotAssertion, InitResponse, MadeCredential,
    MakeCredential, Progress, Reassembler, cmd,
};

use super::Authenticator;

/// How long a key may take to answer, touch included.
const TOUCH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct HidAuthenticator {
    device: HidDevice,
    cid: u32,
}

impl HidAuthenticator {
    /// The first FIDO device under /dev/hidraw*, with a CTAPHID channel allocated.
    pub fn open_first() -> anyhow::Result<Self> {
        let paths = hidraw::fido_devices();
        let path = paths.first().ok_or_else(|| {
            anyhow!("no security key found: plug in a FIDO2 key (looked for FIDO devices under /dev/hidraw*)")
        })?;
        let device = HidDevice::open(path).with_context(|| {
            format!(
                "cannot open {} (a udev rule may be needed for this user)",
                path.display()
            )
        })?;
        let mut me = Self {
            device,
            cid: BROADCAST_CID,
        };
        let mut nonce = [0u8; 8];
        rand::fill(&mut nonce[..]);
        let payload = me.transact(cmd::INIT, &nonce, Duration::from_secs(3))?;
        let init = InitResponse::parse(&nonce, &payload)?;
        if !init.speaks_cbor() {
            bail!(
                "{} is a U2F-only key: WebAuthn needs a FIDO2 (CTAP2) key",
                path.display()
            );
        }
        me.cid = init.cid;
        Ok(me)
    }

    fn transact(
        &mut self,
        command: u8,
        payload: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        for report in ctap::frames(self.cid, command, payload)? {
            self.device.write_report(&report)?;
        }
        let mut r = Reassembler::new(self.cid);
        let deadline = clock::now() + timeout;
        let mut said = false;
        loop {
            let left = deadline.saturating_duration_since(clock::now());
            if left.is_zero() {
                bail!("the security key did not answer in time");
            }
            let Some(report) = self.device.read_report(left)? else {
                continue;
            };
            match r.push(&report)? {
                Progress::More => {}
                Progress::KeepAlive(2) if !said => {
                    eprintln!("Touch your security key.");
                    said = true;
                }
                Progress::KeepAlive(_) => {}
                Progress::Done {
                    command: c,
                    payload,
                } if c == command => return Ok(payload),
                Progress::Done { command: c, .. } => {
                    return Err(CtapError::Framing("an answer to another command"))
                        .with_context(|| format!("CTAPHID command 0x{c:02x}"));
                }
            }
        }
    }
}

impl Authenticator for HidAuthenticator {
    fn describe(&self) -> String {
        format!("security key {}", self.device.path().display())
    }

    fn make_credential(&mut self, req: &MakeCredential<'_>) -> anyhow::Result<MadeCredential> {
        let answer = self.transact(cmd::CBOR, &ctap::encode_make_credential(req), TOUCH_TIMEOUT)?;
        Ok(ctap::parse_make_credential(&answer)?)
    }

    fn get_assertion(&mut self, req: &GetAssertion<'_>) -> anyhow::Result<GotAssertion> {
        let answer = self.transact(cmd::CBOR, &ctap::encode_get_assertion(req), TOUCH_TIMEOUT)?;
        Ok(ctap::parse_get_assertion(&answer)?)
    }

    fn command(&mut self, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.transact(cmd::CBOR, request, TOUCH_TIMEOUT)
    }
}
