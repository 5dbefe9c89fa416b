//! A file serde rejects (bad TOML, a wrong type, an unknown key) as one located diagnostic.

use serde::de::Error as _;

use super::Diagnostic;
use super::check::line_col;
use super::raw::Section;

/// The first problem serde met, located; an unknown key gets the accepted ones or the nearest.
pub(super) fn diagnostic(text: &str, e: &toml::de::Error) -> Diagnostic {
    let start = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, start);
    let message = e.message().trim();
    let message = unknown_key_message(message).unwrap_or_else(|| message.to_string());
    Diagnostic {
        line,
        column,
        message,
    }
}

const UNKNOWN: &str = "unknown field `";

/// The section and the key of serde's "unknown field `x`, expected ...". The list after the key
/// is the field list of the struct that refused it, so it names the table the key belongs to
/// by TOML's rules, however the file wrote it (a header, a dotted key, an inline table).
pub(super) fn unknown_key(message: &str) -> Option<(Section, &str)> {
    let rest = message.strip_prefix(UNKNOWN)?;
    Section::ALL.into_iter().find_map(|section| {
        let key = rest.strip_suffix(tail(section).as_str())?;
        Some((section, key))
    })
}

/// What serde writes after the key when `section` refuses one, in serde's own words.
pub(super) fn tail(section: Section) -> String {
    let sample = serde::de::value::Error::unknown_field("", section.keys()).to_string();
    sample.strip_prefix(UNKNOWN).unwrap_or(&sample).to_string()
}

/// Turns serde's "unknown field `x`, expected ..." into our message with a suggestion.
fn unknown_key_message(message: &str) -> Option<String> {
    let (section, key) = unknown_key(message)?;
    let known = section.keys();
    let place = section.place();
    // The three top-level names are far apart: a looser match there still finds one name only
    // (`registries` for `registry`).
    let near = |k: &str| match section {
        Section::Top => k.len() / 2,
        _ => 2.max(k.len() / 3),
    };
    let suggestion = known
        .iter()
        .map(|k| (strsim::levenshtein(&key.to_lowercase(), k), *k))
        .filter(|(d, k)| *d <= near(k))
        .min();
    let mut message = match suggestion {
        Some((_, k)) => format!("unknown key {key:?} {place}; did you mean {k:?}?"),
        None => format!(
            "unknown key {key:?} {place}; expected one of: {}",
            known.join(", ")
        ),
    };
    if section == Section::Top && suggestion.is_some() {
        message.push_str(&format!(" The top-level tables are: {}", known.join(", ")));
    }
    // TOML has no way back to the top level below a header: a top-level name there is a key
    // of the table above it.
    if let Some(header) = Section::ALL
        .into_iter()
        .filter(|s| *s != section)
        .find_map(|s| s.header().filter(|h| h.trim_matches(['[', ']']) == key))
    {
        message.push_str(&format!(
            " (a key below a table header belongs to that table; the top-level table is written {header})"
        ));
    }
    Some(message)
}
