//! One-time-code enrollment material for the account page and the invitation page: a fresh
//! TOTP secret, its `otpauth://` URI, and that URI as a QR code drawn as an SVG document (dark
//! modules as one path, a quiet zone of four modules), which the page shows as an image.
//!
//! It draws only the modules of a QR code: no text or attribute of the SVG comes from a caller,
//! so the document carries nothing a browser could run. It stores nothing and decides nothing.

use hop_api::totp;
use serde::Serialize;

/// A secret to enroll, shown once.
#[derive(Serialize)]
pub struct Enrollment {
    /// Base32, for typing into an authenticator by hand.
    pub secret: String,
    /// `otpauth://totp/…`, what the QR code encodes.
    pub uri: String,
    /// The QR code of `uri`, an SVG document (empty if the URI does not fit a QR code).
    pub qr_svg: String,
}

/// A fresh 160-bit TOTP secret for `account` on `cluster`.
pub fn enrollment(account: &str, cluster: &str) -> Enrollment {
    let mut secret = [0u8; 20];
    rand::fill(&mut secret[..]);
    let secret = totp::encode_secret(&secret);
    let uri = totp::otpauth_uri(&secret, &format!("{account}@{cluster}"), "Hop");
    let qr_svg = svg(&uri).unwrap_or_default();
    Enrollment {
        secret,
        uri,
        qr_svg,
    }
}

/// The QR code of `text` as an SVG document, one unit per module.
pub fn svg(text: &str) -> Option<String> {
    const QUIET: usize = 4;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let size = width + 2 * QUIET;
    let mut path = String::with_capacity(width * width * 4);
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color == qrcode::Color::Dark {
            let (x, y) = (i % width + QUIET, i / width + QUIET);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrollment_is_a_fresh_secret_and_its_qr_code() {
        let a = enrollment("alice", "example");
        let b = enrollment("alice", "example");
        assert_ne!(a.secret, b.secret);
        assert!(totp::decode_secret(&a.secret).is_ok_and(|k| k.len() == 20));
        assert!(
            a.uri
                .starts_with("otpauth://totp/Hop:alice@example?secret=")
        );
        assert!(
            a.qr_svg
                .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
        );
        assert!(a.qr_svg.contains("h1v1h-1z"));
        // Nothing of the caller's in the drawing.
        let drawn = svg("<script>x</script>").unwrap();
        assert!(!drawn.contains("script"));
    }
}
