//! A small XML-RPC codec: exactly the subset DokuWiki's remote API speaks (scalars, arrays,
//! structs, faults), encoded by hand and decoded with `quick-xml`.
//!
//! DokuWiki 2022-07 reports most errors as a *successful* response whose value is an empty
//! struct (`{}`), not as a `<fault>`; [`Value::is_empty_struct`] is how callers recognise them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Double(f64),
    String(String),
    /// `dateTime.iso8601`, kept as written (DokuWiki also sends the Unix time as an int).
    DateTime(String),
    /// `base64`, kept encoded (no DokuWiki call this connector makes returns one).
    Base64(String),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
    Nil,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, also from its decimal string form (ACL levels arrive as strings).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_struct(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Self::Struct(m) => Some(m),
            _ => None,
        }
    }

    /// Member `key` of a struct.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_struct().and_then(|m| m.get(key))
    }

    /// DokuWiki's error reply: `{}`.
    pub fn is_empty_struct(&self) -> bool {
        matches!(self, Self::Struct(m) if m.is_empty())
    }

    /// A struct from `(name, value)` pairs.
    pub fn structure<'a>(members: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Self::Struct(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn encode(&self, out: &mut String) {
        out.push_str("<value>");
        match self {
            Self::Int(i) => {
                let _ = write!(out, "<int>{i}</int>");
            }
            Self::Bool(b) => {
                let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
            }
            Self::Double(d) => {
                let _ = write!(out, "<double>{d}</double>");
            }
            Self::String(s) => {
                let _ = write!(out, "<string>{}</string>", escape(s.as_str()));
            }
            Self::DateTime(s) => {
                let _ = write!(
                    out,
                    "<dateTime.iso8601>{}</dateTime.iso8601>",
                    escape(s.as_str())
                );
            }
            Self::Base64(s) => {
                let _ = write!(out, "<base64>{}</base64>", escape(s.as_str()));
            }
            Self::Array(items) => {
                out.push_str("<array><data>");
                for v in items {
                    v.encode(out);
                }
                out.push_str("</data></array>");
            }
            Self::Struct(members) => {
                out.push_str("<struct>");
                for (k, v) in members {
                    let _ = write!(out, "<member><name>{}</name>", escape(k.as_str()));
                    v.encode(out);
                    out.push_str("</member>");
                }
                out.push_str("</struct>");
            }
            Self::Nil => out.push_str("<nil/>"),
        }
        out.push_str("</value>");
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Self::Array(v)
    }
}

/// The body of a `methodCall`.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        "<?xml version=\"1.0\"?><methodCall><methodName>{}</methodName><params>",
        escape(method)
    );
    for p in params {
        out.push_str("<param>");
        p.encode(&mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

/// A decoded `methodResponse`.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Value(Value),
    Fault { code: i64, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML-RPC response: {0}")]
pub struct DecodeError(pub String);

fn bad(msg: impl Into<String>) -> DecodeError {
    DecodeError(msg.into())
}

/// An element of the response with its direct text (entities resolved) and child elements.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// How deep a response's elements may nest. DokuWiki's answers nest a few levels (a struct in
/// an array); decoding a value, and dropping the tree, recurse once per level, so a hostile
/// answer nested thousands deep would overflow the stack and abort the daemon.
const MAX_DEPTH: usize = 128;

/// The most elements a response may hold. A tree costs ~100 bytes an element, so a hostile
/// answer of 256 MiB of `<value><int>1</int></value>` would have taken gigabytes; a page
/// list of ~150,000 pages (about 25 elements a page) fits.
const MAX_ELEMENTS: usize = 4_000_000;

/// Reads the document into a tree; XML-RPC responses are small and shallow enough for that.
fn parse_tree(xml: &str) -> Result<Element, DecodeError> {
    parse_tree_within(xml, MAX_ELEMENTS)
}

/// [`parse_tree`] with at most `max_elements` elements.
fn parse_tree_within(xml: &str, max_elements: usize) -> Result<Element, DecodeError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut elements = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("at byte {}: {e}", reader.buffer_position())))?;
        if matches!(event, Event::Start(_) | Event::Empty(_)) {
            elements += 1;
            if elements > max_elements {
                return Err(bad(format!("more than {max_elements} elements")));
            }
        }
        match event {
            Event::Start(_) if stack.len() > MAX_DEPTH => {
                return Err(bad(format!("elements nested more than {MAX_DEPTH} deep")));
            }
            Event::Start(s) => stack.push(Element {
                name: s.name().as_ref().to_string(),
                ..Element::default()
            }),
            Event::Empty(s) => {
                let el = Element {
                    name: s.name().as_ref().to_string(),
                    ..Element::default()
                };
                stack.last_mut().expect("root").children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().expect("balanced by the reader");
                stack
                    .last_mut()
                    .ok_or_else(|| bad("unbalanced end tag"))?
                    .children
                    .push(el);
            }
            Event::Text(t) => stack
                .last_mut()
                .expect("root")
                .text
                .push_str(&t.xml10_content()),
            Event::CData(c) => stack
                .last_mut()
                .expect("root")
                .text
                .push_str(&c.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => resolve_predefined_entity(&r)
                        .ok_or_else(|| bad(format!("unknown entity &{};", &*r)))?
                        .to_string(),
                    Err(e) => return Err(bad(e.to_string())),
                };
                stack.last_mut().expect("root").text.push_str(&resolved);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if stack.len() != 1 {
        return Err(bad("unexpected end of document"));
    }
    let mut root = stack.pop().expect("checked");
    root.children
        .pop()
        .filter(|_| root.children.is_empty())
        .ok_or_else(|| bad("expected exactly one root element"))
}

/// Decodes a `methodResponse` document.
pub fn decode_response(xml: &str) -> Result<Response, DecodeError> {
    let root = parse_tree(xml)?;
    if root.name != "methodResponse" {
        return Err(bad(format!("root element is <{}>", root.name)));
    }
    if let Some(fault) = root.child("fault") {
        let v = decode_value(
            fault
                .child("value")
                .ok_or_else(|| bad("fault without value"))?,
        )?;
        let code = v.get("faultCode").and_then(Value::as_i64).unwrap_or(0);
        let message = v
            .get("faultString")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Ok(Response::Fault { code, message });
    }
    let value = root
        .child("params")
        .and_then(|p| p.child("param"))
        .and_then(|p| p.child("value"))
        .ok_or_else(|| bad("response without params/param/value"))?;
    Ok(Response::Value(decode_value(value)?))
}

fn decode_value(v: &Element) -> Result<Value, DecodeError> {
    // `<value>text</value>` without a type element is a string.
    let Some(typed) = v.children.first() else {
        return Ok(Value::String(v.text.clone()));
    };
    let text = typed.text.trim();
    let int = |t: &str| {
        t.parse::<i64>()
            .map_err(|_| bad(format!("<{}> holds {t:?}", typed.name)))
    };
    Ok(match typed.name.as_str() {
        "int" | "i4" | "i8" => Value::Int(int(text)?),
        "boolean" => Value::Bool(int(text)? != 0),
        "double" => Value::Double(
            text.parse()
                .map_err(|_| bad(format!("<double> holds {text:?}")))?,
        ),
        "string" => Value::String(typed.text.clone()),
        "dateTime.iso8601" => Value::DateTime(text.to_string()),
        "base64" => Value::Base64(text.to_string()),
        "nil" => Value::Nil,
        "array" => {
            let data = typed
                .child("data")
                .ok_or_else(|| bad("<array> without <data>"))?;
            Value::Array(
                data.children
                    .iter()
                    .filter(|c| c.name == "value")
                    .map(decode_value)
                    .collect::<Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut members = BTreeMap::new();
            for m in typed.children.iter().filter(|c| c.name == "member") {
                let name = m
                    .child("name")
                    .ok_or_else(|| bad("<member> without <name>"))?;
                let value = m
                    .child("value")
                    .ok_or_else(|| bad("<member> without <value>"))?;
                members.insert(name.text.clone(), decode_value(value)?);
            }
            Value::Struct(members)
        }
        other => return Err(bad(format!("unknown value type <{other}>"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session 31's review: decoding and dropping recursed once per level, so an answer nested
    /// thousands of arrays deep overflowed the stack and aborted the daemon.
    #[test]
    fn an_answer_nested_too_deep_is_an_error_not_a_crash() {
        let n = 100_000;
        let xml = format!(
            "<?xml version=\"1.0\"?><methodResponse><params><param>{}<value><int>1</int></value>{}</param></params></methodResponse>",
            "<value><array><data>".repeat(n),
            "</data></array></value>".repeat(n)
        );
        let e = decode_response(&xml).unwrap_err();
        assert!(e.to_string().contains("nested more than"), "{e}");
        // A shallow array still decodes.
        let ok = "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data><value><int>7</int></value></data></array></value></param></params></methodResponse>";
        assert!(decode_response(ok).is_ok());
    }

    /// Session 34's review: a flat answer of millions of small values built a tree ten times
    /// its size; the element count is bounded.
    #[test]
    fn an_answer_with_too_many_elements_is_an_error() {
        let values = |n: usize| {
            format!(
                "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data>{}</data></array></value></param></params></methodResponse>",
                "<value><int>1</int></value>".repeat(n)
            )
        };
        // methodResponse, params, param, value, array, data: 6, then 2 per value.
        assert!(parse_tree_within(&values(10), 26).is_ok());
        let e = parse_tree_within(&values(11), 26).unwrap_err();
        assert!(e.to_string().contains("more than 26 elements"), "{e}");
    }

    #[test]
    fn encodes_a_call_with_escaped_strings_and_nested_values() {
        let body = encode_call(
            "wiki.putPage",
            &[
                "a:b".into(),
                "x < y & \"z\"".into(),
                Value::structure([("sum", "s".into()), ("minor", false.into())]),
                Value::Array(vec![1.into()]),
            ],
        );
        assert_eq!(
            body,
            "<?xml version=\"1.0\"?><methodCall><methodName>wiki.putPage</methodName><params>\
             <param><value><string>a:b</string></value></param>\
             <param><value><string>x &lt; y &amp; &quot;z&quot;</string></value></param>\
             <param><value><struct><member><name>minor</name><value><boolean>0</boolean></value></member>\
             <member><name>sum</name><value><string>s</string></value></member></struct></value></param>\
             <param><value><array><data><value><int>1</int></value></data></array></value></param>\
             </params></methodCall>"
        );
    }

    #[test]
    fn decodes_dokuwiki_page_info() {
        let xml = r#"<?xml version="1.0"?>
<methodResponse>
  <params>
    <param>
      <value>
      <struct>
  <member><name>name</name><value><string>hr:handbook</string></value></member>
  <member><name>lastModified</name><value><dateTime.iso8601>2026-12-01T19:30:49+00:00</dateTime.iso8601></value></member>
  <member><name>version</name><value><int>1796153449</int></value></member>
  <member><name>size</name><value><boolean>0</boolean></value></member>
  <member><name>plain</name><value>untyped &amp; text</value></member>
</struct>
      </value>
    </param>
  </params>
</methodResponse>"#;
        let Response::Value(v) = decode_response(xml).unwrap() else {
            panic!("not a value")
        };
        assert_eq!(v.get("name").and_then(Value::as_str), Some("hr:handbook"));
        assert_eq!(v.get("version").and_then(Value::as_i64), Some(1796153449));
        assert_eq!(v.get("size"), Some(&Value::Bool(false)));
        assert_eq!(
            v.get("plain").and_then(Value::as_str),
            Some("untyped & text")
        );
        assert!(matches!(v.get("lastModified"), Some(Value::DateTime(_))));
    }

    #[test]
    fn decodes_escaped_html_strings_exactly() {
        let xml = "<methodResponse><params><param><value><string>\n&lt;h1 class=&quot;s&quot;&gt;Start &amp;amp; go&#233;&lt;/h1&gt;\n</string></value></param></params></methodResponse>";
        assert_eq!(
            decode_response(xml).unwrap(),
            Response::Value(Value::String(
                "\n<h1 class=\"s\">Start &amp; go\u{e9}</h1>\n".into()
            ))
        );
    }

    #[test]
    fn decodes_empty_struct_array_and_string() {
        let wrap = |inner: &str| {
            format!(
                "<methodResponse><params><param><value>{inner}</value></param></params></methodResponse>"
            )
        };
        let v = |inner: &str| match decode_response(&wrap(inner)).unwrap() {
            Response::Value(v) => v,
            f => panic!("{f:?}"),
        };
        assert!(v("\n  <struct>\n</struct>\n  ").is_empty_struct());
        assert_eq!(v("<array><data></data></array>"), Value::Array(vec![]));
        assert_eq!(v("<string/>"), Value::String(String::new()));
        assert_eq!(v(""), Value::String(String::new()));
        assert_eq!(
            v("<array><data><value><i4>-3</i4></value><value>s</value></data></array>"),
            Value::Array(vec![Value::Int(-3), Value::String("s".into())])
        );
    }

    #[test]
    fn decodes_faults() {
        let xml = "<methodResponse><fault><value><struct>\
            <member><name>faultCode</name><value><int>-32700</int></value></member>\
            <member><name>faultString</name><value><string>parse error</string></value></member>\
            </struct></value></fault></methodResponse>";
        assert_eq!(
            decode_response(xml).unwrap(),
            Response::Fault {
                code: -32700,
                message: "parse error".into()
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "<html><body>502 Bad Gateway</body></html>",
            "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
            "<methodResponse><params>",
        ] {
            assert!(decode_response(bad).is_err(), "{bad}");
        }
    }
}
