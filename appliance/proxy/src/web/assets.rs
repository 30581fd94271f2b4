//! The page and its assets, embedded in the binary by `build.rs` from `web/src/`: `index.html`
//! for every page address (never cached, so a new release is picked up at once), and each
//! other asset under its content-hashed name (`Cache-Control: immutable`, a year), gzipped when
//! the browser accepts it. Every web response carries the security headers of
//! [`security_headers`]: a Content-Security-Policy that allows only this origin's scripts and
//! styles (no inline script or style, no `eval`), no framing, no sniffing, no referrer.
//!
//! It owns no session and decides nothing about who may see a page: the page is public, the
//! data behind it is the API's.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// One embedded asset.
pub struct Asset {
    /// Its name in `web/src/`.
    pub name: &'static str,
    /// The name it is served under (content-hashed, except the page).
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The gzip of `body`, where smaller.
    pub gzip: Option<&'static [u8]>,
    /// Committed as published by a third party (`web/vendor/`), not written here.
    pub vendored: bool,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The addresses that show the page (its script picks the view); every other address under
/// `/web/` but the API and the assets shows it too (`/web/{*page}`), and the script names an
/// unknown one.
pub const PAGES: &[&str] = &["/web", "/web/", "/web/{*page}"];

/// The Content-Security-Policy of every web response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The embedded asset served as `/web/assets/PATH`, if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The hashed path of asset `name` of `web/src/`.
pub fn hashed_path(name: &str) -> Option<&'static str> {
    ASSETS.iter().find(|a| a.name == name).map(|a| a.path)
}

/// `/`: the web UI is at `/web`.
pub async fn to_web() -> Redirect {
    Redirect::to("/web")
}

/// The page, for every address in [`PAGES`].
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers, "no-cache")
}

/// `/web/api/{*rest}`: an API address that names no call (not the page: a script asking the
/// API must get JSON).
pub async fn no_such_call() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "error": "no such API call", "code": "not_found" })),
    )
        .into_response()
}

/// `/web/assets/{name}`: a hashed asset, cached for a year.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match find(&name) {
        Some(a) => serve(a, &headers, "public, max-age=31536000, immutable"),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn serve(asset: &Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let gzip = asset.gzip.filter(|_| accepts_gzip(headers));
    let mut response = match gzip {
        Some(gz) => ([(header::CONTENT_ENCODING, "gzip")], gz).into_response(),
        None => asset.body.into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// Whether the request's `Accept-Encoding` takes gzip.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(hop_protocols::web_headers::accepts_gzip)
}

/// Adds the web UI's security headers to a response.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_hashed_name_and_the_page_names_only_hashed_assets() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        for a in ASSETS {
            assert_ne!(a.name, a.path, "{} is served under its own name", a.name);
            assert!(a.path.split('.').count() >= 3, "{}", a.path);
        }
        let app = hashed_path("app.js").unwrap();
        assert!(page.contains(&format!("/web/assets/{app}\"")), "{page}");
        assert!(!page.contains("/web/assets/app.js\""), "{page}");
        // Imports between modules name hashed files too.
        let app_js = std::str::from_utf8(find(app).unwrap().body).unwrap();
        let api = hashed_path("api.js").unwrap();
        assert!(app_js.contains(&format!("/web/assets/{api}'")), "{app_js}");
    }

    #[test]
    fn gzip_when_accepted_and_never_when_refused() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        let a = find(hashed_path("app.js").unwrap()).unwrap();
        assert!(a.gzip.is_some_and(|gz| gz.len() < a.body.len()));
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!page.contains("<style"), "{page}");
        for script in page.split("<script").skip(1) {
            assert!(
                script.trim_start().starts_with("type=\"module\" src="),
                "{script}"
            );
        }
        assert!(!page.contains(" style="), "{page}");
        assert!(!page.contains(" on"), "an inline event handler: {page}");
    }

    #[test]
    fn no_asset_writes_markup_from_data() {
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") && !a.vendored)
        {
            let js = std::str::from_utf8(a.body).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                let uses = js.lines().filter(|l| !l.trim_start().starts_with("//"));
                assert!(
                    !uses.clone().any(|l| l.contains(sink)),
                    "{} uses {sink}",
                    a.name
                );
            }
        }
    }

    #[test]
    fn vendored_modules_are_embedded_hashed_and_marked() {
        for name in ["xterm.js", "xterm.css", "xterm-addon-fit.js"] {
            let path = hashed_path(name).unwrap_or_else(|| panic!("{name} is not embedded"));
            let a = find(path).unwrap();
            assert!(a.vendored, "{name}");
            assert_ne!(path, name, "{name} is not content-hashed");
        }
        assert!(
            ASSETS
                .iter()
                .filter(|a| !a.vendored)
                .any(|a| a.name == "app.js")
        );
    }
}
