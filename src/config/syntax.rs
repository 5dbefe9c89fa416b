//! A file serde rejects (bad TOML, a wrong type, an unknown key) as one located diagnostic.

use super::Diagnostic;
use super::check::line_col;
use super::raw::Section;

/// The first problem serde met, located; an unknown key gets the accepted ones or the nearest.
pub(super) fn diagnostic(text: &str, e: &toml::de::Error) -> Diagnostic {
    let start = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, start);
    let section = section_at(text, start);
    let message = unknown_key_message(e.message(), &section)
        .unwrap_or_else(|| e.message().trim().to_string());
    Diagnostic {
        line,
        column,
        message,
    }
}

/// The table header (`[daemon]`, `[[registry]]`, ...) in force at a byte offset.
fn section_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    // Only whole lines before the error's line: a key in a header line belongs to the level above.
    let before = before.rfind('\n').map_or("", |i| &before[..i]);
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let end = l.rfind(']').map_or(l.len(), |i| i + 1);
            format!("in {}", &l[..end])
        })
        .unwrap_or_else(|| "at the top level".to_string())
}

/// Turns serde's "unknown field `x`, expected ..." into our message with a suggestion.
fn unknown_key_message(message: &str, section: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, _) = rest.split_once('`')?;
    let known = if section.contains("[daemon]") {
        Section::Daemon
    } else if section.contains("[[registry]]") {
        Section::Registry
    } else if section.contains("[[target]]") {
        Section::Target
    } else {
        Section::Top
    }
    .keys();
    let suggestion = known
        .iter()
        .map(|k| (strsim::levenshtein(&key.to_lowercase(), k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    Some(match suggestion {
        Some((_, k)) => format!("unknown key {key:?} {section}; did you mean {k:?}?"),
        None => format!(
            "unknown key {key:?} {section}; expected one of: {}",
            known.join(", ")
        ),
    })
}
