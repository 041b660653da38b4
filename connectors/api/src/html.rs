//! Plain text from the small pieces of HTML wikis return beside a page (a heading, a section
//! title): tags dropped, the usual entities decoded, whitespace collapsed. Not an HTML parser:
//! whole pages go through Docent's own.

/// `html`'s text: tags dropped, entities decoded, whitespace runs as one space, trimmed.
pub fn text_of(html: &str) -> String {
    decode_entities(&strip_tags(html))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Drops `<...>` tags.
pub fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match (c, in_tag) {
            ('<', _) => in_tag = true,
            ('>', true) => in_tag = false,
            (c, false) => out.push(c),
            _ => {}
        }
    }
    out
}

/// The entities wiki renderers write (`htmlspecialchars`, `&nbsp;`, numeric references);
/// others are left as written.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Looked for in bytes: a cut of the string at byte 12 could fall inside a character
        // (`R&amp;D Отдел` panicked, stopping the wiki connector; found by a review).
        let Some(semi) = rest.as_bytes()[..rest.len().min(12)]
            .iter()
            .position(|&b| b == b';')
        else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_and_entities_become_plain_text() {
        assert_eq!(
            super::text_of("<i>Project</i>  Falcon &amp; co"),
            "Project Falcon & co"
        );
        assert_eq!(super::text_of("4111&#160;1111&#x20;1111"), "4111 1111 1111");
        assert_eq!(super::text_of("a &unknown; b"), "a &unknown; b");
        // A character straddling the 12th byte after the `&`.
        assert_eq!(super::text_of("R&amp;D Отдел"), "R&D Отдел");
        assert_eq!(super::text_of("R&D Отдел; x"), "R&D Отдел; x");
    }

    /// A multi-byte character at every distance from an `&`: decoding never panics and keeps
    /// the text.
    #[test]
    fn decoding_never_cuts_a_character() {
        for n in 0..16 {
            for tail in ["Отдел", "日本語;", "é;x", "😀😀"] {
                let s = format!("&{}{tail}", "a".repeat(n));
                assert_eq!(super::decode_entities(&s), s);
            }
        }
    }
}
