//! Request bodies decoded as Portainer decodes them (segmentio/encoding's `json.Decoder` into a
//! Go struct), with its error texts: `EOF` for an empty body, case-insensitive field names,
//! unknown fields ignored, `null` for "absent", the first value only (trailing bytes ignored).

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The Go type of a payload field.
pub(crate) enum Kind {
    Str,
    Bool,
    /// A struct: its Go type name and fields.
    Struct(&'static str, &'static [Field]),
    /// A map, taken as any object (the handlers ignore its content).
    Map(&'static str),
}

/// A field of a payload struct.
pub(crate) struct Field {
    /// The Go field name (which is also the JSON name).
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// A pointer field: `null` makes it nil (absent); otherwise `null` leaves it as it was.
    pub(crate) pointer: bool,
}

/// The fields a body set; absent ones are missing, nil ones are `Null`.
#[derive(Debug, Default)]
pub(crate) struct Decoded(Map<String, Value>);

impl Decoded {
    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(Value::as_bool)
    }

    pub(crate) fn obj(&self, name: &str) -> Option<Decoded> {
        match self.0.get(name) {
            Some(Value::Object(m)) => Some(Decoded(m.clone())),
            _ => None,
        }
    }
}

/// Go's `*json.UnmarshalTypeError`.
struct TypeError {
    value: String,
    ty: String,
    struct_: String,
    field: String,
}

impl TypeError {
    fn text(&self) -> String {
        if self.struct_.is_empty() && self.field.is_empty() {
            format!(
                "json: cannot unmarshal {} into Go value of type {}",
                self.value, self.ty
            )
        } else {
            format!(
                "json: cannot unmarshal {} into Go struct field {}.{} of type {}",
                self.value, self.struct_, self.field, self.ty
            )
        }
    }
}

/// Decodes `body` into the struct `type_name` (e.g. `registries.registryUpdatePayload`).
///
/// The error is the `details` Portainer answers: the Go error text, first letter capitalized.
pub(crate) fn decode(body: &str, type_name: &str, fields: &[Field]) -> Result<Decoded, String> {
    let text = body.trim_start_matches(is_space);
    if text.is_empty() {
        return Err("EOF".to_string());
    }
    let mut de = serde_json::Deserializer::from_str(body);
    // One value; what follows it stays unread, as with Go's Decoder.Decode.
    let raw = match <&RawValue>::deserialize(&mut de) {
        Ok(r) => r,
        Err(e) => return Err(syntax_details(text, &e)),
    };
    match decode_struct(body, raw, type_name, fields) {
        Ok(d) => Ok(d.unwrap_or_default()),
        Err(e) => Err(capitalize(&e.text())),
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Go's `libhttp/error.capitalize`: the first byte upper-cased.
pub(crate) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// segmentio's `prefix`: the first 32 bytes, then `...`.
fn prefix(s: &str) -> String {
    if s.len() < 32 {
        return s.to_string();
    }
    let mut end = 32;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The details of a body that is not JSON (segmentio's wording where it is easy to match).
fn syntax_details(text: &str, e: &serde_json::Error) -> String {
    if e.is_eof() {
        // The Decoder ran out of input inside a value.
        return "Unexpected EOF".to_string();
    }
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    let generic = || {
        let msg = e.to_string();
        let msg = msg
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string();
        format!("Json: {msg}: {}", prefix(text))
    };
    match first {
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' => generic(),
        b'n' if !text.starts_with("null") => {
            format!(
                "Json: expected 'null' but found invalid token: {}",
                prefix(text)
            )
        }
        b't' if !text.starts_with("true") => {
            format!(
                "Json: expected 'true' but found invalid token: {}",
                prefix(text)
            )
        }
        b'f' if !text.starts_with("false") => {
            format!(
                "Json: expected 'false' but found invalid token: {}",
                prefix(text)
            )
        }
        b'n' | b't' | b'f' => generic(),
        c => format!(
            "Json: invalid character '{}' looking for beginning of value: {}",
            char::from(c),
            prefix(text)
        ),
    }
}

/// The input from `raw` on (segmentio quotes the rest of the input, not just the value).
fn rest<'a>(input: &'a str, raw: &'a RawValue) -> &'a str {
    let v = raw.get();
    let start = (v.as_ptr() as usize).checked_sub(input.as_ptr() as usize);
    match start {
        Some(s) if s <= input.len() && input.is_char_boundary(s) => &input[s..],
        _ => v,
    }
}

fn type_error(input: &str, raw: &RawValue, ty: &str) -> TypeError {
    TypeError {
        value: go_quote(&prefix(rest(input, raw))),
        ty: ty.to_string(),
        struct_: String::new(),
        field: String::new(),
    }
}

/// An object's members in order, duplicates kept, values unparsed.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// `Ok(None)` for `null` (a no-op in Go).
fn decode_struct(
    input: &str,
    raw: &RawValue,
    type_name: &str,
    fields: &[Field],
) -> Result<Option<Decoded>, TypeError> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err(type_error(input, raw, type_name));
    }
    let entries = match serde_json::from_str::<Entries<'_>>(text) {
        Ok(e) => e.0,
        // Already checked as JSON; cannot happen.
        Err(_) => return Err(type_error(input, raw, type_name)),
    };
    let mut out = Map::new();
    for (key, value) in entries {
        let field = fields
            .iter()
            .find(|f| f.name == key)
            .or_else(|| fields.iter().find(|f| f.name.eq_ignore_ascii_case(&key)));
        let Some(field) = field else {
            continue;
        };
        match decode_field(input, value, &field.kind) {
            Ok(Value::Null) if !field.pointer => {}
            Ok(v) => {
                out.insert(field.name.to_string(), v);
            }
            Err(mut e) => {
                e.struct_ = format!("{type_name}{}", e.struct_);
                e.field = if e.field.is_empty() {
                    key
                } else {
                    format!("{key}.{}", e.field)
                };
                return Err(e);
            }
        }
    }
    Ok(Some(Decoded(out)))
}

fn decode_field(input: &str, raw: &RawValue, kind: &Kind) -> Result<Value, TypeError> {
    let text = raw.get();
    if text == "null" {
        return Ok(Value::Null);
    }
    match kind {
        Kind::Str if text.starts_with('"') => serde_json::from_str::<String>(text)
            .map(Value::String)
            .map_err(|_| type_error(input, raw, "string")),
        Kind::Str => Err(type_error(input, raw, "string")),
        Kind::Bool if text == "true" => Ok(Value::Bool(true)),
        Kind::Bool if text == "false" => Ok(Value::Bool(false)),
        Kind::Bool => Err(type_error(input, raw, "bool")),
        Kind::Struct(name, fields) => Ok(decode_struct(input, raw, name, fields)?
            .map(|d| Value::Object(d.0))
            .unwrap_or(Value::Null)),
        Kind::Map(name) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(type_error(input, raw, name)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field {
            name: "Name",
            kind: Kind::Str,
            pointer: true,
        },
        Field {
            name: "Authentication",
            kind: Kind::Bool,
            pointer: true,
        },
        Field {
            name: "Quay",
            kind: Kind::Struct(
                "portainer.QuayRegistryData",
                &[Field {
                    name: "UseOrganisation",
                    kind: Kind::Bool,
                    pointer: false,
                }],
            ),
            pointer: true,
        },
    ];

    fn d(body: &str) -> Result<Decoded, String> {
        decode(body, "registries.registryUpdatePayload", FIELDS)
    }

    #[test]
    fn go_decoder_semantics() {
        assert_eq!(d("").unwrap_err(), "EOF");
        assert_eq!(d(" \n").unwrap_err(), "EOF");
        assert_eq!(d("{\"Name\":\"a\"").unwrap_err(), "Unexpected EOF");
        assert_eq!(
            d("x").unwrap_err(),
            "Json: invalid character 'x' looking for beginning of value: x"
        );
        assert_eq!(
            d("nope").unwrap_err(),
            "Json: expected 'null' but found invalid token: nope"
        );
        let ok = d(r#"{"name":"a","NAME":"b","x":1} trailing"#).unwrap();
        assert_eq!(ok.str("Name"), Some("b"));
        let ok = d(r#"{"Name":"a","Name":null}"#).unwrap();
        assert_eq!(ok.str("Name"), None);
        assert!(d("null").unwrap().str("Name").is_none());
        assert_eq!(
            d(r#"{"Authentication":"yes"}"#).unwrap_err(),
            r#"Json: cannot unmarshal "\"yes\"}" into Go struct field registries.registryUpdatePayload.Authentication of type bool"#
        );
        assert_eq!(
            d("[1]").unwrap_err(),
            r#"Json: cannot unmarshal "[1]" into Go value of type registries.registryUpdatePayload"#
        );
        assert_eq!(
            d(r#"{"quay":{"UseOrganisation":1}}"#).unwrap_err(),
            r#"Json: cannot unmarshal "1}}" into Go struct field registries.registryUpdatePayloadportainer.QuayRegistryData.quay.UseOrganisation of type bool"#
        );
        let q = d(r#"{"Quay":{"useorganisation":true}}"#).unwrap();
        assert_eq!(
            q.obj("Quay").and_then(|q| q.bool("UseOrganisation")),
            Some(true)
        );
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\\\n\u{1}é"), r#""a\"b\\\n\x01é""#);
    }
}
