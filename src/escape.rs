//! Foreign text (file values, endpoint messages, SDK errors, paths) made safe for a terminal or a log line.

use std::borrow::Cow;
use std::fmt::Write;

/// At most this many bytes of one string are shown; the rest is counted, not printed.
pub const MAX_SHOWN: usize = 4096;

/// Whether `c` would act on a terminal or split a log line if printed raw.
fn acts(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` as it may be shown: control characters (C0, DEL, C1), Unicode bidi controls and line
/// separators become visible escapes (`\n`, `\x1b`, `\u{202e}`), a backslash becomes `\\` so
/// an escape in the output is never ambiguous, and a huge value is cut short. Unchanged (borrowed)
/// when it holds nothing to escape and is short.
///
/// Every edge where text reaches a terminal or a log goes through here: the status table, the
/// lines of `once`, `check`, `refresh`, `reload`, printed errors, and every log field.
/// `status --json` is not: JSON escapes control characters itself and must stay exact.
pub fn shown(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_SHOWN && !s.chars().any(acts) {
        return Cow::Borrowed(s);
    }
    let head = &s[..s.floor_char_boundary(MAX_SHOWN)];
    let mut out = String::with_capacity(head.len() + 16);
    for c in head.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && acts(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if acts(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if head.len() < s.len() {
        let _ = write!(out, "…[{} more bytes]", s.len() - head.len());
    }
    Cow::Owned(out)
}

/// JSON text made safe for a terminal without changing what it decodes to: the characters that
/// act and that JSON writers leave raw (C1 controls, bidi controls, line separators; all outside
/// ASCII, so only inside strings) become `\uXXXX` escapes. C0 controls are escaped by every JSON
/// writer already.
pub fn json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| !c.is_ascii() && acts(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !c.is_ascii() && acts(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text of several lines of our own making (a config error per line): each line [`shown`], the
/// line feeds between them kept.
pub fn shown_lines(s: &str) -> String {
    s.split('\n').map(shown).collect::<Vec<_>>().join("\n")
}

/// A path as it may be shown (see [`shown`]); bytes that are not UTF-8 become U+FFFD.
pub fn path(p: &std::path::Path) -> String {
    shown(&p.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_its_meaning_and_loses_what_acts() {
        let v = serde_json::json!({"k": "a\u{9b}2J\u{202e}evil\u{2028}é\n"});
        let text = serde_json::to_string_pretty(&v).unwrap();
        let safe = json(&text);
        assert!(
            !safe.contains('\u{9b}') && !safe.contains('\u{202e}') && !safe.contains('\u{2028}')
        );
        assert!(safe.contains('é'), "other text stays");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v, "decodes to the same values");
        assert!(matches!(json("{\"a\": 1}"), Cow::Borrowed(_)));
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            shown("registry 1.dkr.ecr: ok, é ✓"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_bidi_and_backslash_are_escaped() {
        assert_eq!(
            shown("\r\u{1b}[2K\u{1b}]0;t\u{7}\nx\ty\u{7f}"),
            "\\r\\x1b[2K\\x1b]0;t\\x07\\nx\\ty\\x7f"
        );
        assert_eq!(shown("\u{9b}31m \u{85}"), "\\u{9b}31m \\u{85}");
        assert_eq!(
            shown("a\u{202e}b\u{2066}c\u{2028}d\u{200f}"),
            "a\\u{202e}b\\u{2066}c\\u{2028}d\\u{200f}"
        );
        // A literal backslash-x in the input stays distinguishable from an escaped byte.
        assert_eq!(shown("\\x1b"), "\\\\x1b");
        assert_eq!(shown("\0"), "\\x00");
    }

    #[test]
    fn nothing_shown_acts_on_a_terminal() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = shown(&all);
        assert!(!out.chars().any(|c| acts(c) && c != '\\'), "{out}");
    }

    #[test]
    fn huge_values_are_cut_at_a_char_boundary() {
        let s = "é".repeat(MAX_SHOWN);
        let out = shown(&s);
        assert!(out.len() < MAX_SHOWN + 32, "{}", out.len());
        assert!(out.ends_with(&format!("…[{} more bytes]", s.len() - MAX_SHOWN)));
        let exact = "a".repeat(MAX_SHOWN);
        assert!(matches!(shown(&exact), Cow::Borrowed(_)));
    }

    #[test]
    fn lines_keep_their_line_feeds_only() {
        assert_eq!(
            shown_lines("config.toml:8:8: bad\r\u{1b}[2K\nnext"),
            "config.toml:8:8: bad\\r\\x1b[2K\nnext"
        );
    }
}
