//! The hardened front of every XML Hop reads from an identity provider: a size limit, a refusal
//! of `<!DOCTYPE`, `<!ENTITY` (anything `<!` but a comment or CDATA) and processing
//! instructions *before* parsing, then `roxmltree` with DTDs disallowed and a node limit.
//! Helpers find elements by namespace and local name (never by prefix).

use roxmltree::{Document, Node, ParsingOptions};

use crate::SamlError;

/// The largest SAML document accepted (decoded).
pub const MAX_XML: usize = 256 * 1024;
/// The most XML nodes parsed.
pub const MAX_NODES: u32 = 20_000;

/// Refuses what must never reach the parser: a document type or entity declaration (XXE, entity
/// expansion), and processing instructions (other than the XML declaration).
pub fn prescan(text: &str) -> Result<(), SamlError> {
    if text.len() > MAX_XML {
        return Err(SamlError::TooLarge(MAX_XML));
    }
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = b.get(i..).and_then(|r| r.iter().position(|&c| c == b'<')) {
        let at = i + off;
        let rest = b.get(at + 1..).unwrap_or(&[]);
        if rest.starts_with(b"!") && !rest.starts_with(b"!--") && !rest.starts_with(b"![CDATA[") {
            return Err(SamlError::Doctype);
        }
        if rest.starts_with(b"?") {
            // The XML declaration is allowed only as the document's very first bytes.
            let decl =
                rest.starts_with(b"?xml") && rest.get(4).is_some_and(u8::is_ascii_whitespace);
            if !(decl && text[..at].trim_start_matches('\u{feff}').is_empty()) {
                return Err(SamlError::ProcessingInstruction);
            }
        }
        i = at + 1;
    }
    Ok(())
}

/// Parses `text` after [`prescan`].
pub fn parse(text: &str) -> Result<Document<'_>, SamlError> {
    prescan(text)?;
    let opt = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opt).map_err(|e| match e {
        roxmltree::Error::DtdDetected => SamlError::Doctype,
        other => SamlError::Xml(other.to_string().chars().take(120).collect()),
    })?;
    if doc.descendants().any(|n| n.is_pi()) {
        return Err(SamlError::ProcessingInstruction);
    }
    Ok(doc)
}

/// Whether `n` is the element `{ns}local`.
#[must_use]
pub fn is(n: Node<'_, '_>, ns: &str, local: &str) -> bool {
    n.is_element() && n.tag_name().name() == local && n.tag_name().namespace() == Some(ns)
}

/// The element children of `n` named `{ns}local`.
pub fn children<'a, 'i>(
    n: Node<'a, 'i>,
    ns: &'static str,
    local: &'static str,
) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(move |c| is(*c, ns, local))
}

/// The only element child of `n` named `{ns}local`: `None` when absent, an error when repeated.
pub fn only_child<'a, 'i>(
    n: Node<'a, 'i>,
    ns: &'static str,
    local: &'static str,
    what: &'static str,
) -> Result<Option<Node<'a, 'i>>, SamlError> {
    let mut it = children(n, ns, local);
    let first = it.next();
    if it.next().is_some() {
        return Err(SamlError::Malformed(what));
    }
    Ok(first)
}

/// The text content of `n` (its text children, joined).
#[must_use]
pub fn text(n: Node<'_, '_>) -> String {
    n.children()
        .filter(Node::is_text)
        .filter_map(|t| t.text())
        .collect()
}

/// Decodes base64 that may be wrapped over lines.
pub fn b64(s: &str) -> Result<Vec<u8>, SamlError> {
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    data_encoding::BASE64
        .decode(&clean)
        .map_err(|_| SamlError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctypes_entities_and_pis_are_refused_before_parsing() {
        for bad in [
            "<!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>",
            "<?xml version=\"1.0\"?><!DOCTYPE r SYSTEM \"file:///etc/passwd\"><r/>",
            "<r><!ENTITY x 'y'></r>",
            "<r><?php echo 1; ?></r>",
            " <?xml version=\"1.0\"?><r/>",
            "<r/><?xml-stylesheet href='x'?>",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("<!DOCTYPE r><r/>").err(), Some(SamlError::Doctype));
        assert!(
            parse("<?xml version=\"1.0\" encoding=\"UTF-8\"?><r><!-- c --><![CDATA[x]]></r>")
                .is_ok()
        );
        assert!(matches!(parse("<r>&x;</r>"), Err(SamlError::Xml(_))));
        let big = format!("<r>{}</r>", "a".repeat(MAX_XML));
        assert_eq!(parse(&big).err(), Some(SamlError::TooLarge(MAX_XML)));
    }
}
