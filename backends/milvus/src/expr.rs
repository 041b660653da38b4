//! The ACL scope and the narrowing filters as Milvus boolean expressions (`SearchRequest.dsl`).
//!
//! Invariants:
//! - every string that reaches an expression goes through [`quote`] (one escaper, valid for both
//!   Lite's lexer and a cluster's Plan.g4: only `\" \\ \n \r \t`); other control characters are
//!   refused, never dropped silently;
//! - the scope admits a row iff its `allow` holds one of the principals and its `deny` holds none
//!   (deny wins); an empty principal list admits nothing;
//! - a filter only narrows: the search expression is always `scope and filter`;
//! - attribute conditions agree with Docent's reference semantics (`AttrFilter::matches` in the
//!   main crate): every leaf is guarded by `exists`, because Milvus evaluates a condition on a
//!   missing JSON key to null and `not null` is null (verified in Lite: `not (a["k"] == "x")`
//!   matches nothing), whereas the reference treats a missing key as "does not match".
//!
//! Must never build an expression by pasting an unescaped value, nor use LIKE for prefixes (`_`
//! and `%` are wildcards, and Lite honours `\_` only in sealed segments): prefixes are half-open
//! code-point ranges.

use std::collections::BTreeMap;

/// JSON layout of the `attributes` field: `{"s": {key: value}, "n": {key: number}}`. `s` holds
/// every attribute as the string Docent has; `n` holds the value again as a number when it parses
/// as a finite one, so a numeric range compares numbers (the reference compares numerically when
/// the value and every bound parse as numbers, else by string order).
pub const ATTR_STRINGS: &str = "s";
pub const ATTR_NUMBERS: &str = "n";

/// Why a value cannot become part of an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    // The value is not shown: it is a caller's text, and the message reaches the log.
    #[error(
        "a {what} contains control character U+{code:04X}, which a filter expression cannot carry"
    )]
    ControlCharacter {
        what: &'static str,
        value: String,
        code: u32,
    },
}

/// The caller's scope: the principal tokens it holds (user id and aliases, groups, `everyone`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub principals: Vec<String>,
    /// What `deny` is matched against: the principals and their case-folded forms (the rows
    /// hold each deny entry's folded form too). Empty: the principals.
    pub deny_principals: Vec<String>,
    /// An audience (a channel's members, not one person): a row with any deny entry is out of
    /// scope, whoever it names.
    pub strict_deny: bool,
}

impl Scope {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(principals: I) -> Self {
        Self {
            principals: principals.into_iter().map(Into::into).collect(),
            deny_principals: Vec::new(),
            strict_deny: false,
        }
    }
}

/// Narrowing filters, ANDed with the scope. Mirrors the main crate's `SearchFilter`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only these sources; empty means any source.
    pub sources: Vec<String>,
    pub uri_prefix: Option<String>,
    pub attributes: Option<AttrFilter>,
}

/// A condition on document attributes; mirrors the main crate's `AttrFilter` (src/index/mod.rs),
/// whose `matches` is the reference semantics.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrFilter {
    Equals {
        key: String,
        value: String,
    },
    In {
        key: String,
        values: Vec<String>,
    },
    /// Inclusive bounds. Numeric when the value and every given bound parse as numbers, else by
    /// string order.
    Range {
        key: String,
        gte: Option<String>,
        lte: Option<String>,
    },
    Prefix {
        key: String,
        prefix: String,
    },
    And(Vec<AttrFilter>),
    Or(Vec<AttrFilter>),
    Not(Box<AttrFilter>),
}

/// A boolean expression with its constants folded: Milvus has no portable way to say "nothing"
/// (a bare `false` is not a valid filter on every server), so `False` never reaches the server:
/// the search returns no hits without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    True,
    False,
    Expr(String),
}

impl Cond {
    pub fn and(self, other: Cond) -> Cond {
        match (self, other) {
            (Cond::False, _) | (_, Cond::False) => Cond::False,
            (Cond::True, c) | (c, Cond::True) => c,
            (Cond::Expr(a), Cond::Expr(b)) => Cond::Expr(format!("({a}) and ({b})")),
        }
    }

    pub fn or(self, other: Cond) -> Cond {
        match (self, other) {
            (Cond::True, _) | (_, Cond::True) => Cond::True,
            (Cond::False, c) | (c, Cond::False) => c,
            (Cond::Expr(a), Cond::Expr(b)) => Cond::Expr(format!("({a}) or ({b})")),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Cond {
        match self {
            Cond::True => Cond::False,
            Cond::False => Cond::True,
            Cond::Expr(e) => Cond::Expr(format!("not ({e})")),
        }
    }
}

/// `s` as a double-quoted expression literal. Refuses the control characters U+0000–U+001F other
/// than `\n \r \t` (Lite knows no `\u` escape, and a raw newline ends the literal).
pub fn quote(what: &'static str, s: &str) -> Result<String, ExprError> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                return Err(ExprError::ControlCharacter {
                    what,
                    value: s.to_string(),
                    code: c as u32,
                });
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

fn quote_list(what: &'static str, items: &[String]) -> Result<String, ExprError> {
    let quoted: Result<Vec<String>, ExprError> = items.iter().map(|s| quote(what, s)).collect();
    Ok(format!("[{}]", quoted?.join(", ")))
}

/// The smallest string greater than every string starting with `prefix`, in code-point order
/// (= UTF-8 byte order, which Milvus and Lite compare by): the last code point incremented,
/// trailing U+10FFFF dropped, the surrogate range skipped. `None` when no such string exists
/// (empty, or only U+10FFFF).
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            0x10FFFF => None,
            n => char::from_u32(n + 1),
        };
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `field >= "p" and field < succ(p)`: exactly the values starting with `p`.
fn prefix_range(what: &'static str, field: &str, prefix: &str) -> Result<Cond, ExprError> {
    if prefix.is_empty() {
        return Ok(Cond::True);
    }
    let lo = format!("{field} >= {}", quote(what, prefix)?);
    Ok(Cond::Expr(match prefix_successor(prefix) {
        Some(hi) => format!("{lo} and {field} < {}", quote(what, &hi)?),
        None => lo,
    }))
}

/// The ACL scope as an expression over `allow`/`deny` (ARRAY<VARCHAR>).
pub fn scope_cond(scope: &Scope) -> Result<Cond, ExprError> {
    if scope.principals.is_empty() {
        return Ok(Cond::False);
    }
    let list = quote_list("principal", &scope.principals)?;
    let deny = match scope.deny_principals.is_empty() {
        true => list.clone(),
        false => quote_list("principal", &scope.deny_principals)?,
    };
    let mut e =
        format!("ARRAY_CONTAINS_ANY(allow, {list}) and not ARRAY_CONTAINS_ANY(deny, {deny})");
    if scope.strict_deny {
        e.push_str(" and ARRAY_LENGTH(deny) == 0");
    }
    Ok(Cond::Expr(e))
}

/// The filter as an expression (sources, uri prefix, attributes), `True` when it filters nothing.
pub fn filter_cond(filter: &Filter) -> Result<Cond, ExprError> {
    let mut cond = Cond::True;
    if !filter.sources.is_empty() {
        cond = cond.and(Cond::Expr(format!(
            "source in {}",
            quote_list("source", &filter.sources)?
        )));
    }
    if let Some(prefix) = &filter.uri_prefix {
        cond = cond.and(prefix_range("uri prefix", "uri", prefix)?);
    }
    if let Some(attrs) = &filter.attributes {
        cond = cond.and(attr_cond(attrs)?);
    }
    Ok(cond)
}

/// Scope and filter together: what a search sends as `dsl`.
pub fn search_cond(scope: &Scope, filter: Option<&Filter>) -> Result<Cond, ExprError> {
    let scope = scope_cond(scope)?;
    if scope == Cond::False {
        return Ok(Cond::False);
    }
    Ok(match filter {
        Some(f) => scope.and(filter_cond(f)?),
        None => scope,
    })
}

/// A finite number as an expression literal (Debug keeps an exponent for huge and tiny values,
/// so the literal is never a 300-digit integer).
fn number(x: f64) -> String {
    format!("{x:?}")
}

/// The reference's number parse: trimmed, finite.
pub fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

fn attr_path(layer: &str, key: &str) -> Result<String, ExprError> {
    Ok(format!(
        "attributes[\"{layer}\"][{}]",
        quote("attribute key", key)?
    ))
}

/// `exists path and (cond)`: two-valued, unlike a bare comparison on a missing key.
fn guarded(path: &str, cond: &str) -> Cond {
    Cond::Expr(format!("exists {path} and ({cond})"))
}

pub fn attr_cond(f: &AttrFilter) -> Result<Cond, ExprError> {
    Ok(match f {
        AttrFilter::Equals { key, value } => {
            let s = attr_path(ATTR_STRINGS, key)?;
            guarded(&s, &format!("{s} == {}", quote("attribute value", value)?))
        }
        AttrFilter::In { key, values } => {
            if values.is_empty() {
                return Ok(Cond::False);
            }
            // Lite refuses `in` on a JSON path; the OR form works on both.
            let s = attr_path(ATTR_STRINGS, key)?;
            let alts: Result<Vec<String>, ExprError> = values
                .iter()
                .map(|v| Ok(format!("{s} == {}", quote("attribute value", v)?)))
                .collect();
            guarded(&s, &alts?.join(" or "))
        }
        AttrFilter::Prefix { key, prefix } => {
            let s = attr_path(ATTR_STRINGS, key)?;
            match prefix_range("attribute prefix", &s, prefix)? {
                Cond::Expr(e) => guarded(&s, &e),
                _ => Cond::Expr(format!("exists {s}")),
            }
        }
        AttrFilter::Range { key, gte, lte } => range_cond(key, gte.as_deref(), lte.as_deref())?,
        AttrFilter::And(fs) => {
            let mut c = Cond::True;
            for f in fs {
                c = c.and(attr_cond(f)?);
            }
            c
        }
        AttrFilter::Or(fs) => {
            let mut c = Cond::False;
            for f in fs {
                c = c.or(attr_cond(f)?);
            }
            c
        }
        AttrFilter::Not(f) => attr_cond(f)?.not(),
    })
}

fn range_cond(key: &str, gte: Option<&str>, lte: Option<&str>) -> Result<Cond, ExprError> {
    let s = attr_path(ATTR_STRINGS, key)?;
    let string_cmp = |extra: &str| -> Result<Cond, ExprError> {
        let mut parts = Vec::new();
        if !extra.is_empty() {
            parts.push(extra.to_string());
        }
        if let Some(b) = gte {
            parts.push(format!("{s} >= {}", quote("attribute bound", b)?));
        }
        if let Some(b) = lte {
            parts.push(format!("{s} <= {}", quote("attribute bound", b)?));
        }
        Ok(if parts.is_empty() {
            Cond::Expr(format!("exists {s}"))
        } else {
            guarded(&s, &parts.join(" and "))
        })
    };
    let bounds_numeric = gte.is_none_or(|b| parse_number(b).is_some())
        && lte.is_none_or(|b| parse_number(b).is_some());
    if !bounds_numeric || (gte.is_none() && lte.is_none()) {
        return string_cmp("");
    }
    // Numeric bounds: a numeric value compares as a number, any other value by string order.
    let n = attr_path(ATTR_NUMBERS, key)?;
    let mut parts = Vec::new();
    if let Some(b) = gte.and_then(parse_number) {
        parts.push(format!("{n} >= {}", number(b)));
    }
    if let Some(b) = lte.and_then(parse_number) {
        parts.push(format!("{n} <= {}", number(b)));
    }
    let numeric = guarded(&n, &parts.join(" and "));
    Ok(numeric.or(string_cmp(&format!("not exists {n}"))?))
}

/// The JSON stored in `attributes` for a row's attributes (see [`ATTR_STRINGS`]).
pub fn attributes_json(attrs: &BTreeMap<String, String>) -> serde_json::Value {
    let strings: serde_json::Map<String, serde_json::Value> = attrs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let numbers: serde_json::Map<String, serde_json::Value> = attrs
        .iter()
        .filter_map(|(k, v)| {
            let x = serde_json::Number::from_f64(parse_number(v)?)?;
            Some((k.clone(), serde_json::Value::Number(x)))
        })
        .collect();
    serde_json::json!({ ATTR_STRINGS: strings, ATTR_NUMBERS: numbers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(c: Cond) -> String {
        match c {
            Cond::Expr(e) => e,
            other => panic!("expected an expression, got {other:?}"),
        }
    }

    #[test]
    fn quote_escapes_quotes_and_backslashes() {
        assert_eq!(quote("v", "plain").unwrap(), r#""plain""#);
        assert_eq!(quote("v", r#"u:o"brien"#).unwrap(), r#""u:o\"brien""#);
        assert_eq!(quote("v", r"u:back\slash").unwrap(), r#""u:back\\slash""#);
        assert_eq!(quote("v", r#"\""#).unwrap(), r#""\\\"""#);
        assert_eq!(quote("v", "u:'single'").unwrap(), r#""u:'single'""#);
        assert_eq!(quote("v", "a\nb\rc\td").unwrap(), r#""a\nb\rc\td""#);
        assert_eq!(quote("v", "").unwrap(), r#""""#);
        assert_eq!(quote("v", "ünï—😀").unwrap(), "\"ünï—😀\"");
    }

    #[test]
    fn quote_refuses_other_control_characters() {
        for c in ['\0', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{1f}'] {
            let err = quote("principal", &format!("u:a{c}b")).unwrap_err();
            assert_eq!(
                err,
                ExprError::ControlCharacter {
                    what: "principal",
                    value: format!("u:a{c}b"),
                    code: c as u32
                }
            );
        }
        assert!(
            quote("principal", "u:a\u{0}")
                .unwrap_err()
                .to_string()
                .contains("U+0000")
        );
    }

    /// Reads one quoted literal the way Milvus's lexer does: the injection attempt must come
    /// back as the whole literal, with the rest of the input empty.
    fn unquote(lit: &str) -> (String, &str) {
        let mut out = String::new();
        let mut it = lit.char_indices();
        assert_eq!(it.next(), Some((0, '"')));
        while let Some((i, c)) = it.next() {
            match c {
                '"' => return (out, &lit[i + 1..]),
                '\\' => match it.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | '\'' | '\\')) => out.push(c),
                    other => panic!("unknown escape {other:?}"),
                },
                c => out.push(c),
            }
        }
        panic!("unterminated literal {lit}")
    }

    #[test]
    fn injection_attempt_stays_one_literal() {
        let evil = r#"x"]) or true or ARRAY_CONTAINS_ANY(allow, ["y"#;
        let lit = quote("principal", evil).unwrap();
        let (back, rest) = unquote(&lit);
        assert_eq!(back, evil);
        assert_eq!(rest, "");
        let scope = expr(scope_cond(&Scope::new([evil])).unwrap());
        assert_eq!(
            scope,
            format!("ARRAY_CONTAINS_ANY(allow, [{lit}]) and not ARRAY_CONTAINS_ANY(deny, [{lit}])")
        );
        for s in ["\\", "\\\"", "a\\\"b\\\\\"c", "\"\"\"", "\n\"\t\\r"] {
            let lit = quote("v", s).unwrap();
            let (back, rest) = unquote(&lit);
            assert_eq!((back.as_str(), rest), (s, ""));
        }
    }

    #[test]
    fn scope_expressions() {
        assert_eq!(scope_cond(&Scope::default()).unwrap(), Cond::False);
        assert_eq!(
            expr(scope_cond(&Scope::new(["u:alice", "g:hr"])).unwrap()),
            r#"ARRAY_CONTAINS_ANY(allow, ["u:alice", "g:hr"]) and not ARRAY_CONTAINS_ANY(deny, ["u:alice", "g:hr"])"#
        );
        let folded = Scope {
            principals: vec!["u:Bob".into()],
            deny_principals: vec!["u:Bob".into(), "u:bob".into()],
            strict_deny: false,
        };
        assert_eq!(
            expr(scope_cond(&folded).unwrap()),
            r#"ARRAY_CONTAINS_ANY(allow, ["u:Bob"]) and not ARRAY_CONTAINS_ANY(deny, ["u:Bob", "u:bob"])"#
        );
        let audience = Scope {
            principals: vec!["group:c1".into()],
            strict_deny: true,
            ..Scope::default()
        };
        assert_eq!(
            expr(scope_cond(&audience).unwrap()),
            r#"ARRAY_CONTAINS_ANY(allow, ["group:c1"]) and not ARRAY_CONTAINS_ANY(deny, ["group:c1"]) and ARRAY_LENGTH(deny) == 0"#
        );
        assert!(scope_cond(&Scope::new(["u:ok", "u:bad\u{2}"])).is_err());
        // An empty scope admits nothing, whatever the filter says.
        let f = Filter {
            sources: vec!["wiki".into()],
            ..Filter::default()
        };
        assert_eq!(
            search_cond(&Scope::default(), Some(&f)).unwrap(),
            Cond::False
        );
    }

    #[test]
    fn filter_expressions() {
        assert_eq!(filter_cond(&Filter::default()).unwrap(), Cond::True);
        let f = Filter {
            sources: vec!["wiki".into(), "fs".into()],
            uri_prefix: Some("file:///srv/a_b/".into()),
            attributes: None,
        };
        assert_eq!(
            expr(filter_cond(&f).unwrap()),
            r#"(source in ["wiki", "fs"]) and (uri >= "file:///srv/a_b/" and uri < "file:///srv/a_b0")"#
        );
        let scoped = expr(search_cond(&Scope::new(["u:a"]), Some(&f)).unwrap());
        assert!(
            scoped.starts_with(r#"(ARRAY_CONTAINS_ANY(allow, ["u:a"])"#),
            "{scoped}"
        );
        assert!(
            scoped.ends_with(r#"uri < "file:///srv/a_b0"))"#),
            "{scoped}"
        );
        let empty_prefix = Filter {
            uri_prefix: Some(String::new()),
            ..Filter::default()
        };
        assert_eq!(filter_cond(&empty_prefix).unwrap(), Cond::True);
    }

    #[test]
    fn prefix_successors() {
        assert_eq!(prefix_successor("team/").as_deref(), Some("team0"));
        assert_eq!(prefix_successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_successor("ab\u{10FFFF}").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("é").as_deref(), Some("ê"));
    }

    #[test]
    fn attribute_expressions() {
        let eq = AttrFilter::Equals {
            key: "dept".into(),
            value: "hr".into(),
        };
        assert_eq!(
            expr(attr_cond(&eq).unwrap()),
            r#"exists attributes["s"]["dept"] and (attributes["s"]["dept"] == "hr")"#
        );
        let one_of = AttrFilter::In {
            key: "dept".into(),
            values: vec!["hr".into(), "eng".into()],
        };
        assert_eq!(
            expr(attr_cond(&one_of).unwrap()),
            r#"exists attributes["s"]["dept"] and (attributes["s"]["dept"] == "hr" or attributes["s"]["dept"] == "eng")"#
        );
        let none_of = AttrFilter::In {
            key: "dept".into(),
            values: vec![],
        };
        assert_eq!(attr_cond(&none_of).unwrap(), Cond::False);
        assert_eq!(attr_cond(&AttrFilter::And(vec![])).unwrap(), Cond::True);
        assert_eq!(attr_cond(&AttrFilter::Or(vec![])).unwrap(), Cond::False);
        assert_eq!(
            attr_cond(&AttrFilter::Not(Box::new(none_of.clone()))).unwrap(),
            Cond::True
        );
        assert_eq!(
            expr(attr_cond(&AttrFilter::Not(Box::new(eq.clone()))).unwrap()),
            r#"not (exists attributes["s"]["dept"] and (attributes["s"]["dept"] == "hr"))"#
        );
        assert_eq!(
            expr(attr_cond(&AttrFilter::Or(vec![eq.clone(), none_of])).unwrap()),
            expr(attr_cond(&eq).unwrap())
        );
        let prefix = AttrFilter::Prefix {
            key: "path".into(),
            prefix: "team/".into(),
        };
        assert_eq!(
            expr(attr_cond(&prefix).unwrap()),
            r#"exists attributes["s"]["path"] and (attributes["s"]["path"] >= "team/" and attributes["s"]["path"] < "team0")"#
        );
        let key = AttrFilter::Equals {
            key: r#"we"ird\k"#.into(),
            value: "x".into(),
        };
        assert!(expr(attr_cond(&key).unwrap()).contains(r#"attributes["s"]["we\"ird\\k"]"#));
    }

    #[test]
    fn range_expressions() {
        let numeric = AttrFilter::Range {
            key: "year".into(),
            gte: Some("2018".into()),
            lte: Some(" 2020.5 ".into()),
        };
        assert_eq!(
            expr(attr_cond(&numeric).unwrap()),
            concat!(
                r#"(exists attributes["n"]["year"] and (attributes["n"]["year"] >= 2018.0 and attributes["n"]["year"] <= 2020.5))"#,
                r#" or (exists attributes["s"]["year"] and (not exists attributes["n"]["year"] and attributes["s"]["year"] >= "2018" and attributes["s"]["year"] <= " 2020.5 "))"#
            )
        );
        let dates = AttrFilter::Range {
            key: "d".into(),
            gte: Some("2024-01-01".into()),
            lte: None,
        };
        assert_eq!(
            expr(attr_cond(&dates).unwrap()),
            r#"exists attributes["s"]["d"] and (attributes["s"]["d"] >= "2024-01-01")"#
        );
        let open = AttrFilter::Range {
            key: "d".into(),
            gte: None,
            lte: None,
        };
        assert_eq!(
            expr(attr_cond(&open).unwrap()),
            r#"exists attributes["s"]["d"]"#
        );
        let huge = AttrFilter::Range {
            key: "x".into(),
            gte: Some("1e300".into()),
            lte: Some("NaN".into()),
        };
        // NaN is not a number for the reference: string order, and no NaN literal.
        assert!(!expr(attr_cond(&huge).unwrap()).contains("attributes[\"n\"]"));
        assert_eq!(number(1e300), "1e300");
        assert_eq!(number(-3.0), "-3.0");
    }

    #[test]
    fn attributes_json_layout() {
        let attrs = BTreeMap::from([
            ("year".to_string(), "2018".to_string()),
            ("dept".to_string(), "hr".to_string()),
            ("nan".to_string(), "NaN".to_string()),
        ]);
        assert_eq!(
            attributes_json(&attrs),
            serde_json::json!({"s": {"dept": "hr", "nan": "NaN", "year": "2018"}, "n": {"year": 2018.0}})
        );
    }
}
