//! What a page becomes as a document: its URI, title, namespace and version.

use sha2::{Digest, Sha256};

/// Where a reader opens the page: `{url}/doku.php?id=<id>`.
pub fn page_uri(base_url: &str, id: &str) -> String {
    let mut s = format!("{}/doku.php?id=", base_url.trim_end_matches('/'));
    for b in id.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b':' | b'-' | b'_' | b'.' | b'~' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// The page's namespace (`a:b` for `a:b:c`; empty at the root).
pub fn namespace(id: &str) -> &str {
    id.rsplit_once(':').map_or("", |(ns, _)| ns)
}

/// The page's own name (`c` for `a:b:c`).
pub fn name(id: &str) -> &str {
    id.rsplit_once(':').map_or(id, |(_, n)| n)
}

/// The version of a page: its revision (whole seconds, shared by two edits within one second)
/// and a hash of the rendered content, which tells such edits apart.
pub fn version(rev: i64, html: &str) -> String {
    let digest = Sha256::digest(html.as_bytes());
    format!("rev:{rev}:{}", hex::encode(&digest[..8]))
}

/// The revision a [`version`] string was made from.
pub fn version_rev(version: &str) -> Option<i64> {
    version
        .strip_prefix("rev:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// The text of the first `<h1>`..`<h6>` of DokuWiki's XHTML (what DokuWiki itself uses as the
/// page title with `useheading`).
pub fn first_heading(html: &str) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = html[from..].find("<h") {
        let start = from + pos;
        from = start + 2;
        let b = html.as_bytes();
        let level_ok = b.get(start + 2).is_some_and(|c| (b'1'..=b'6').contains(c));
        let then_ok = b
            .get(start + 3)
            .is_some_and(|c| matches!(c, b'>' | b' ' | b'\t' | b'\n' | b'\r'));
        if !(level_ok && then_ok) {
            continue;
        }
        let open_end = start + html[start..].find('>')? + 1;
        let close = open_end + html[open_end..].find("</h")?;
        let text = docent_connector_api::html::text_of(&html[open_end..close]);
        if !text.is_empty() {
            return Some(text);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_what_is_not_an_id_character() {
        assert_eq!(
            page_uri("http://w/dw/", "a:b_c"),
            "http://w/dw/doku.php?id=a:b_c"
        );
        assert_eq!(
            page_uri("http://w", "ü x"),
            "http://w/doku.php?id=%C3%BC%20x"
        );
    }

    #[test]
    fn namespaces_and_names() {
        assert_eq!(namespace("a:b:c"), "a:b");
        assert_eq!(namespace("start"), "");
        assert_eq!(name("a:b:c"), "c");
        assert_eq!(name("start"), "start");
    }

    #[test]
    fn versions_carry_the_revision_and_differ_with_content() {
        let v = version(1_796_153_449, "<p>a</p>");
        assert!(v.starts_with("rev:1796153449:"));
        assert_eq!(version_rev(&v), Some(1_796_153_449));
        assert_ne!(v, version(1_796_153_449, "<p>b</p>"));
        assert_eq!(version_rev("1.2:3"), None);
    }

    #[test]
    fn title_is_the_first_heading() {
        let html = "\n<h1 class=\"sectionedit1\" id=\"start\">Start &amp; <em>go</em></h1>\n<div>\n<h2>x</h2>";
        assert_eq!(first_heading(html).as_deref(), Some("Start & go"));
        assert_eq!(
            first_heading("<hr/><header>no</header><h3 id=a>R&#233;sum&eacute;</h3>").as_deref(),
            Some("Résum&eacute;")
        );
        assert_eq!(first_heading("<p>no heading</p>"), None);
    }
}
