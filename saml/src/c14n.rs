//! Exclusive XML Canonicalization 1.0, without comments
//! (`http://www.w3.org/2001/10/xml-exc-c14n#`), over a `roxmltree` subtree, with one element
//! left out (the enveloped-signature transform) and an optional `InclusiveNamespaces`
//! prefix list.
//!
//! The subset SAML signatures exercise: namespace declarations rendered where visibly utilized
//! (the element's prefix, its attributes' prefixes, the inclusive list) and not already in
//! force on the nearest rendered ancestor, sorted by prefix; attributes sorted by (namespace
//! URI, local name); empty elements as start and end tags; text and attribute values escaped
//! as the recommendation says; comments dropped. Prefixes are read from the source text, since
//! the parser keeps only namespace URIs. The parser has already normalized line ends and
//! attribute values and replaced character and predefined entity references; processing
//! instructions never get here (refused by [`crate::xml::parse`]).

use std::collections::BTreeMap;

use roxmltree::{Node, NodeId};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The prefix of `qname` (`None` when unprefixed).
fn prefix_of(qname: &str) -> Option<&str> {
    qname.split_once(':').map(|(p, _)| p)
}

/// The element's qualified name as written in the source.
fn element_qname<'i>(n: Node<'_, 'i>) -> &'i str {
    let src = n.document().input_text();
    let start = n.range().start + 1;
    let rest = src.get(start..).unwrap_or("");
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// The canonical form of the subtree at `apex`, leaving out the subtree at `exclude` (the
/// enveloped signature), with `inclusive` the InclusiveNamespaces PrefixList (`#default` for
/// the default namespace).
#[must_use]
pub fn canonicalize(apex: Node<'_, '_>, exclude: Option<NodeId>, inclusive: &[String]) -> String {
    let mut out = String::new();
    let rendered: BTreeMap<String, String> = BTreeMap::new();
    // An explicit stack rather than recursion: a deep document must not exhaust the stack.
    enum Step<'a, 'i> {
        Open(Node<'a, 'i>, BTreeMap<String, String>),
        Close(&'i str),
    }
    let mut stack = vec![Step::Open(apex, rendered)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Close(q) => {
                out.push_str("</");
                out.push_str(q);
                out.push('>');
            }
            Step::Open(n, rendered) => {
                if n.is_text() {
                    escape_text(n.text().unwrap_or(""), &mut out);
                    continue;
                }
                if !n.is_element() || Some(n.id()) == exclude {
                    continue;
                }
                let qname = element_qname(n);
                let mut utilized: BTreeMap<String, String> = BTreeMap::new();
                let elem_prefix = prefix_of(qname).unwrap_or("");
                utilized.insert(
                    elem_prefix.to_string(),
                    n.tag_name().namespace().unwrap_or("").to_string(),
                );
                let src = n.document().input_text();
                let mut attrs: Vec<(&str, &str, &str, &str)> = Vec::new();
                for a in n.attributes() {
                    let q = src.get(a.range_qname()).unwrap_or(a.name());
                    let ns = a.namespace().unwrap_or("");
                    if let Some(p) = prefix_of(q)
                        && ns != XML_NS
                    {
                        utilized.insert(p.to_string(), ns.to_string());
                    }
                    attrs.push((ns, a.name(), q, a.value()));
                }
                for p in inclusive {
                    let (key, uri) = if p == "#default" {
                        ("", n.default_namespace())
                    } else {
                        (p.as_str(), n.lookup_namespace_uri(Some(p)))
                    };
                    if let Some(uri) = uri {
                        utilized.insert(key.to_string(), uri.to_string());
                    }
                }
                let mut next = rendered.clone();
                out.push('<');
                out.push_str(qname);
                for (p, uri) in &utilized {
                    let in_force = rendered.get(p).map_or("", String::as_str);
                    if uri == in_force {
                        continue;
                    }
                    if p.is_empty() {
                        out.push_str(" xmlns=\"");
                    } else {
                        out.push_str(" xmlns:");
                        out.push_str(p);
                        out.push_str("=\"");
                    }
                    escape_attr(uri, &mut out);
                    out.push('"');
                    next.insert(p.clone(), uri.clone());
                }
                attrs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                for (_, _, q, v) in attrs {
                    out.push(' ');
                    out.push_str(q);
                    out.push_str("=\"");
                    escape_attr(v, &mut out);
                    out.push('"');
                }
                out.push('>');
                stack.push(Step::Close(qname));
                let kids: Vec<_> = n.children().collect();
                for c in kids.into_iter().rev() {
                    stack.push(Step::Open(c, next.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str, pick: &str) -> String {
        let doc = crate::xml::parse(xml).unwrap();
        let n = doc
            .descendants()
            .find(|n| n.is_element() && n.tag_name().name() == pick)
            .unwrap();
        canonicalize(n, None, &[])
    }

    #[test]
    fn renders_utilized_namespaces_sorted_attributes_and_escapes() {
        let xml = r#"<?xml version="1.0"?>
<a:Root xmlns:a="urn:a" xmlns:b="urn:b" xmlns:unused="urn:u"><b:Child z="1" a:y="2" x="&lt;&quot;&#9;"   >t &amp; &gt; <![CDATA[<c>]]><!-- gone --><a:Empty/></b:Child></a:Root>"#;
        assert_eq!(
            c14n(xml, "Child"),
            r#"<b:Child xmlns:a="urn:a" xmlns:b="urn:b" x="&lt;&quot;&#x9;" z="1" a:y="2">t &amp; &gt; &lt;c&gt;<a:Empty></a:Empty></b:Child>"#
        );
        // The default namespace: declared once, undeclared where an unqualified child leaves it.
        let xml = r#"<r xmlns="urn:d"><s><t xmlns=""/></s></r>"#;
        assert_eq!(
            c14n(xml, "r"),
            r#"<r xmlns="urn:d"><s><t xmlns=""></t></s></r>"#
        );
    }
}
