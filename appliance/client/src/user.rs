//! The user's commands: `hop signup`, `hop login` (with `--request-id`, see `requests`),
//! `hop status`, `hop logout`.
//!
//! This module owns the conversation with the person (prompts, QR code, messages) and the
//! sequence of API calls; keys are generated here, on the user's machine, and only public keys
//! leave it. Secrets are read from a TTY prompt or standard input, never from arguments.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use hop_ca::{CaKind, CaPublic};
use hop_platform::clock;

use super::profile::{self, Paths, Profile};
use crate::cli::{LoginArgs, OutputFormat, ProxyTrust, SignupArgs, StatusArgs};
use hop_api::proto::auth_public_client::AuthPublicClient;
use hop_api::proto::{
    BeginWebauthnLoginRequest, CompleteSignupRequest, LoginRequest, LoginResponse, PingRequest,
};
use hop_api::timestamps::rfc3339;
use hop_api::totp;
use hop_net::connect::{status_error, tls_channel};
use hop_net::trust::{Trust, normalize_pin};

pub(crate) fn trust_for(t: &ProxyTrust, saved_cas: Option<String>) -> anyhow::Result<Trust> {
    if t.insecure {
        eprintln!(
            "WARNING: --insecure: the proxy's certificate is not verified; anyone on the network path can impersonate it."
        );
        return Ok(Trust::Insecure);
    }
    if let Some(pin) = &t.ca_pin {
        return Ok(Trust::Pin(normalize_pin(pin)?));
    }
    Ok(saved_cas.map(Trust::CaPem).unwrap_or(Trust::System))
}

/// Reads one line from standard input (for --password-stdin), without its line ending.
pub(crate) fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        bail!("standard input had no {what}");
    }
    Ok(line)
}

pub(crate) fn prompt_secret(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("{prompt}: standard input is not a terminal; use --password-stdin");
    }
    rpassword::prompt_password(format!("{prompt}: ")).context("cannot read from the terminal")
}

pub(crate) fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("{prompt}: standard input is not a terminal; pass it as a flag");
    }
    eprint!("{prompt}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Accepts a bare token or an invite URL ending in it.
fn token_from(arg: &str) -> String {
    arg.trim()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn render_qr(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}

pub async fn signup(args: SignupArgs) -> anyhow::Result<()> {
    let trust = trust_for(&args.trust, None)?;
    let channel = tls_channel(&args.trust.proxy, &trust, None).await?;
    let mut client = AuthPublicClient::new(channel);
    let ping = client
        .ping(PingRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let token = token_from(&args.token);

    let password = if args.password_stdin {
        read_stdin_line("password")?
    } else {
        let p1 = prompt_secret("New password")?;
        let p2 = prompt_secret("Repeat password")?;
        if p1 != p2 {
            bail!("the passwords do not match");
        }
        p1
    };
    hop_api::password::check_policy(&password).map_err(|e| anyhow!("{e}"))?;

    let (mut secret_b32, mut code) = (String::new(), String::new());
    if ping.second_factor != "off" {
        let mut secret = [0u8; 20];
        rand::fill(&mut secret[..]);
        secret_b32 = totp::encode_secret(&secret);
        match &args.totp_secret_file {
            Some(path) => {
                hop_net::files::write_private(path, format!("{secret_b32}\n").as_bytes())?;
                code = totp::code_at(&secret, clock::wall());
            }
            None => {
                let uri = totp::otpauth_uri(
                    &secret_b32,
                    &format!("{}@{}", "user", ping.cluster_name),
                    "Hop",
                );
                eprintln!(
                    "Scan this QR code with your authenticator app (or enter the secret by hand):\n"
                );
                if let Some(qr) = render_qr(&uri) {
                    eprintln!("{qr}");
                }
                eprintln!("Secret: {secret_b32}\nURI:    {uri}\n");
                code = prompt_line("Enter the 6-digit code from the app")?;
            }
        }
    }
    let resp = client
        .complete_signup(CompleteSignupRequest {
            token,
            password,
            totp_secret: secret_b32,
            totp_code: code,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "Sign-up complete for {} on cluster {}. Log in with:\n  hop login --proxy {} --user {}{}",
        resp.username,
        ping.cluster_name,
        args.trust.proxy,
        resp.username,
        args.trust
            .ca_pin
            .as_ref()
            .map(|p| format!(" --ca-pin {p}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.request_id {
        return crate::requests::login_with_request(&args, id).await;
    }
    // `--auth local` is the password login, as in Teleport; `passwordless` a passkey's.
    if args.auth.as_deref() == Some("passwordless") {
        return passwordless_login(&args).await;
    }
    if let Some(connector) = args.auth.as_deref().filter(|a| *a != "local") {
        return crate::sso::sso_login(&args, connector).await;
    }
    password_login(&args).await
}

/// `hop login` with password and second factor: new keys, new certificates, the profile saved.
pub(crate) async fn password_login(args: &LoginArgs) -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    let user = match &args.user {
        Some(u) => u.clone(),
        None => {
            std::env::var("USER").map_err(|_| anyhow!("--user is required (USER is not set)"))?
        }
    };
    let paths = Paths::new(home.clone(), &args.trust.proxy, &user);
    let saved = std::fs::read_to_string(paths.cas()).ok();
    let trust = trust_for(&args.trust, saved)?;
    let channel = tls_channel(&args.trust.proxy, &trust, None).await?;
    let mut client = AuthPublicClient::new(channel);
    let ping = client
        .ping(PingRequest {})
        .await
        .map_err(status_error)?
        .into_inner();

    let password = if args.password_stdin {
        read_stdin_line("password")?
    } else {
        prompt_secret(&format!("Password for {user}"))?
    };
    // A security key when the cluster takes them and the user has one (or the cluster wants
    // nothing else), unless a one-time code was given.
    let mut key_answer = String::new();
    let keys_allowed = matches!(ping.second_factor.as_str(), "on" | "optional" | "webauthn");
    if args.otp.is_none() && keys_allowed {
        let challenge = client
            .begin_webauthn_login(BeginWebauthnLoginRequest {
                username: user.clone(),
                passwordless: false,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let keys = crate::mfa::ceremony::allowed_credentials(&challenge.options_json)?;
        if keys > 0 || ping.second_factor == "webauthn" {
            if keys == 0 {
                bail!("this cluster needs a security key and {user} has none registered");
            }
            let origin = crate::mfa::ceremony::pick_origin(&challenge.origins, &args.trust.proxy)?;
            let mut key = crate::mfa::open()?;
            let answer = crate::mfa::ceremony::assert(
                key.as_mut(),
                &challenge.options_json,
                &origin,
                false,
            )?;
            key_answer = answer.to_string();
        }
    }
    let otp = match (&args.otp, ping.second_factor.as_str()) {
        (Some(c), _) => c.clone(),
        _ if !key_answer.is_empty() => String::new(),
        (None, "off") => String::new(),
        (None, _) => prompt_line("One-time code")?,
    };
    let ttl = match &args.ttl {
        Some(t) => hop_config::parse_duration(t)
            .map_err(|e| anyhow!("--ttl: {e}"))?
            .as_secs(),
        None => 0,
    };

    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let resp = client
        .login(LoginRequest {
            username: user.clone(),
            password,
            totp_code: otp,
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key: tls.public_spki_der.clone(),
            ttl_seconds: ttl,
            webauthn_json: key_answer,
            passwordless: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();

    save_login(&home, &args.trust, &user, (&ssh, &tls), &resp)?;
    let expires = print_login(&resp, &args.trust.proxy);
    // The server clamps a longer request rather than refusing it: say so.
    let asked = clock::wall() + Duration::from_secs(ttl);
    if ttl > 0 && expires + Duration::from_secs(60) < asked {
        println!("  (shorter than the --ttl asked for: your roles' max_session_ttl caps it)");
    }
    Ok(())
}

fn ttl_secs(args: &LoginArgs) -> anyhow::Result<u64> {
    Ok(match &args.ttl {
        Some(t) => hop_config::parse_duration(t)
            .map_err(|e| anyhow!("--ttl: {e}"))?
            .as_secs(),
        None => 0,
    })
}

/// `hop login --auth passwordless`: a passkey (a discoverable credential with user
/// verification) names and proves the user; no password, no one-time code.
async fn passwordless_login(args: &LoginArgs) -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    let hint = args.user.clone().unwrap_or_default();
    let saved = (!hint.is_empty())
        .then(|| {
            std::fs::read_to_string(Paths::new(home.clone(), &args.trust.proxy, &hint).cas()).ok()
        })
        .flatten();
    let trust = trust_for(&args.trust, saved)?;
    let channel = tls_channel(&args.trust.proxy, &trust, None).await?;
    let mut client = AuthPublicClient::new(channel);
    let challenge = client
        .begin_webauthn_login(BeginWebauthnLoginRequest {
            username: String::new(),
            passwordless: true,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let origin = crate::mfa::ceremony::pick_origin(&challenge.origins, &args.trust.proxy)?;
    let mut key = crate::mfa::open()?;
    let answer =
        crate::mfa::ceremony::assert(key.as_mut(), &challenge.options_json, &origin, true)?;
    let ttl = ttl_secs(args)?;
    let mut rng = rand::rng();
    let ssh = hop_ca::generate_ssh_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let tls = hop_ca::generate_x509_keypair(&mut rng).map_err(|e| anyhow!("{e}"))?;
    let resp = client
        .login(LoginRequest {
            username: String::new(),
            password: String::new(),
            totp_code: String::new(),
            ssh_public_key: ssh.public_openssh.clone(),
            tls_public_key: tls.public_spki_der.clone(),
            ttl_seconds: ttl,
            webauthn_json: answer.to_string(),
            passwordless: true,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !hint.is_empty() && hint != resp.username {
        bail!(
            "the passkey is {}'s, not {hint}'s: not logged in",
            resp.username
        );
    }
    let user = resp.username.clone();
    save_login(&home, &args.trust, &user, (&ssh, &tls), &resp)?;
    print_login(&resp, &args.trust.proxy);
    Ok(())
}

/// Writes a login's keys, certificates, trust and profile (the profile becomes current).
pub(crate) fn save_login(
    home: &std::path::Path,
    trust: &ProxyTrust,
    user: &str,
    keys: (&hop_ca::SshKeyPair, &hop_ca::X509KeyPair),
    resp: &LoginResponse,
) -> anyhow::Result<()> {
    let (ssh, tls) = keys;
    let paths = Paths::new(home.to_path_buf(), &trust.proxy, user);
    hop_net::files::ensure_dir(&paths.keys_dir())?;
    hop_net::files::write_private(&paths.ssh_key(), ssh.private_openssh.as_bytes())?;
    hop_net::files::write_private(
        &paths.ssh_pub(),
        format!("{}\n", ssh.public_openssh.trim()).as_bytes(),
    )?;
    hop_net::files::write_private(
        &paths.ssh_cert(),
        format!("{}\n", resp.ssh_certificate.trim()).as_bytes(),
    )?;
    hop_net::files::write_private(&paths.tls_key(), tls.private_pkcs8_pem.as_bytes())?;
    hop_net::files::write_private(&paths.tls_cert(), resp.tls_certificate_pem.as_bytes())?;
    crate::trust::save_trust(
        &paths,
        &resp.trusted_cas_pem,
        &resp.known_hosts,
        &resp.trust_digest,
    )?;
    profile::save_profile(
        home,
        &Profile {
            proxy: trust.proxy.clone(),
            user: user.to_string(),
            cluster: resp.cluster_name.clone(),
            ca_pin: trust.ca_pin.clone(),
            insecure: trust.insecure,
        },
    )
}

/// Prints who is logged in, with which roles, until when; returns the expiry.
pub(crate) fn print_login(resp: &LoginResponse, proxy: &str) -> SystemTime {
    let expires = UNIX_EPOCH + Duration::from_secs(u64::try_from(resp.expires_unix).unwrap_or(0));
    println!(
        "Logged in as {} to cluster {} ({})",
        resp.username, resp.cluster_name, proxy
    );
    println!("  Roles:   {}", resp.roles.join(", "));
    println!("  Logins:  {}", logins_text(&resp.logins));
    println!(
        "  Valid until: {} ({})",
        rfc3339(expires),
        human_remaining(expires)
    );
    expires
}

/// Logins as a list for people.
fn logins_text(logins: &[String]) -> String {
    if logins.is_empty() {
        "(none)".into()
    } else {
        logins.join(", ")
    }
}

fn human_remaining(until: SystemTime) -> String {
    match until.duration_since(clock::wall()) {
        Ok(d) => {
            let m = d.as_secs().div_ceil(60);
            format!("valid for {}h{:02}m", m / 60, m % 60)
        }
        Err(_) => "EXPIRED".into(),
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    let (p, paths) = profile::current_profile(&home)?;
    let cas = std::fs::read_to_string(paths.cas())
        .with_context(|| format!("cannot read {}", paths.cas().display()))?;
    let cert_pem = std::fs::read_to_string(paths.tls_cert())
        .with_context(|| format!("cannot read {}", paths.tls_cert().display()))?;
    let der = hop_ca::parse_pem_certs(&cert_pem)
        .map_err(|e| anyhow!("{}: {e}", paths.tls_cert().display()))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{}: no certificate", paths.tls_cert().display()))?;
    let trusted: Vec<CaPublic> = hop_ca::parse_pem_certs(&cas)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .map(|d| CaPublic {
            kind: CaKind::User,
            cluster: p.cluster.clone(),
            ssh_public: None,
            x509_cert_pem: Some(pem_of(&d)),
            jwt_public_pem: None,
            ssh_fingerprint: None,
            x509_spki_sha256: None,
        })
        .collect();
    let now = clock::wall();
    // An expired certificate still shows who it was for; validity is judged separately below.
    let (identity, expires) = hop_ca::verify_user_x509(&der, &trusted, now)
        .or_else(|_| read_expired(&der, &trusted))
        .map_err(|e| anyhow!("your certificate could not be read ({e}); log in again"))?;
    let valid = expires > now;
    match args.format {
        OutputFormat::Json | OutputFormat::Yaml => {
            let v = serde_json::json!({
                "proxy": p.proxy, "user": identity.username, "cluster": identity.cluster,
                "roles": identity.roles, "logins": identity.logins, "traits": identity.traits,
                "expires": rfc3339(expires), "valid": valid,
                "active_requests": identity.active_requests,
                "ssh_certificate": paths.ssh_cert(), "tls_certificate": paths.tls_cert(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Text => {
            println!("> Profile URL:  https://{}", p.proxy);
            println!("  Logged in as: {}", identity.username);
            println!("  Cluster:      {}", identity.cluster);
            println!("  Roles:        {}", identity.roles.join(", "));
            println!("  Logins:       {}", logins_text(&identity.logins));
            if !identity.active_requests.is_empty() {
                println!("  Requests:     {}", identity.active_requests.join(", "));
            }
            println!(
                "  Valid until:  {} [{}]",
                rfc3339(expires),
                human_remaining(expires)
            );
            println!("  SSH cert:     {}", paths.ssh_cert().display());
        }
    }
    if !valid {
        bail!(
            "the certificates expired at {}; run `hop login` again",
            rfc3339(expires)
        );
    }
    Ok(())
}

/// Reads an expired certificate's identity by verifying it at a moment inside its validity.
fn read_expired(
    der: &[u8],
    trusted: &[CaPublic],
) -> Result<(hop_ca::Identity, SystemTime), hop_ca::CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| hop_ca::CaError::MissingIdentity)?;
    let not_after = cert.validity().not_after.timestamp();
    let inside = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after - 60).unwrap_or(0));
    hop_ca::verify_user_x509(der, trusted, inside)
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub fn logout() -> anyhow::Result<()> {
    let home = profile::hop_home()?;
    match profile::remove_current(&home)? {
        Some(p) => println!("Logged out {} from {}.", p.user, p.proxy),
        None => println!("Not logged in."),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_urls() {
        assert_eq!(token_from("abc123"), "abc123");
        assert_eq!(token_from("https://h:3080/web/invite/abc123/"), "abc123");
    }
}
