//! Secrets taken out of text a server echoes or a report quotes: each whole, and any piece of one.

use std::collections::HashSet;

/// What stands where a secret was.
pub const REDACTED: &str = "<redacted>";

/// The secrets of one round and how long a piece of one must be to go. Built once, applied to
/// every text of the round: each text costs one set lookup per byte, whatever the secrets.
#[derive(Default)]
pub struct Redactor {
    /// Replaced wherever they appear whole.
    whole: Vec<String>,
    /// Every `piece`-byte window of the pieced secrets.
    pieces: HashSet<Vec<u8>>,
    piece: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.whole.len())
    }
}

impl Redactor {
    /// No secrets yet; a piece of `piece` bytes or more of one (an echo cut short) goes too.
    pub fn new(piece: usize) -> Redactor {
        Redactor {
            piece: piece.max(1),
            ..Redactor::default()
        }
    }

    /// The secrets of `secrets`, taken out whole and in pieces.
    pub fn of<I: IntoIterator<Item = S>, S: Into<String>>(piece: usize, secrets: I) -> Redactor {
        let mut r = Redactor::new(piece);
        for s in secrets {
            r.add(s);
        }
        r
    }

    /// Takes `secret` out whole and in pieces (an empty one is nothing).
    pub fn add(&mut self, secret: impl Into<String>) {
        let secret = secret.into();
        for w in secret.as_bytes().windows(self.piece) {
            self.pieces.insert(w.to_vec());
        }
        self.add_whole(secret);
    }

    /// Takes `secret` out only where it appears whole (a URL whose parts are common words).
    pub fn add_whole(&mut self, secret: impl Into<String>) {
        let secret = secret.into();
        if !secret.is_empty() && !self.whole.contains(&secret) {
            self.whole.push(secret);
            // Longest first: a secret that holds another (a URL and its signature) goes whole.
            self.whole.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every secret out: each whole occurrence, then every run of bytes covered by a
    /// piece of one, each run one [`REDACTED`]. A piece that begins or ends inside a character
    /// takes the whole character.
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        for s in &self.whole {
            if text.contains(s.as_str()) {
                text = text.replace(s.as_str(), REDACTED);
            }
        }
        let b = text.as_bytes();
        if b.len() < self.piece || self.pieces.is_empty() {
            return text;
        }
        let mut covered = vec![false; b.len()];
        let mut any = false;
        for (i, w) in b.windows(self.piece).enumerate() {
            if self.pieces.contains(w) {
                covered[i..i + self.piece].fill(true);
                any = true;
            }
        }
        if !any {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        let mut redacting = false;
        for (i, c) in text.char_indices() {
            if covered[i..i + c.len_utf8()].contains(&true) {
                if !redacting {
                    out.push_str(REDACTED);
                }
                redacting = true;
            } else {
                redacting = false;
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_secrets_and_pieces_go_words_stay() {
        let pw = "fakepw-1-0123456789abcdef0123";
        let r = Redactor::of(12, [pw, ""]);
        assert_eq!(r.apply(&format!("bad: {pw}!")), "bad: <redacted>!");
        // Cut short by the server: 12 bytes of it are enough to go, as one run.
        assert_eq!(r.apply(&format!("x{}y", &pw[3..15])), "x<redacted>y");
        assert_eq!(r.apply(&format!("x{}y", &pw[3..20])), "x<redacted>y");
        // 11 bytes are not a piece.
        assert_eq!(r.apply(&pw[3..14]), &pw[3..14]);
        assert_eq!(r.apply("nothing here"), "nothing here");
        assert_eq!(r.apply(""), "");
        // Two pieces apart are two runs.
        assert_eq!(
            r.apply(&format!("{} and {}", &pw[..12], &pw[10..24])),
            "<redacted> and <redacted>"
        );
    }

    #[test]
    fn a_piece_inside_a_character_takes_the_character() {
        let secret = "é0123456789ab";
        let r = Redactor::of(12, [secret]);
        // 'ɩ' is c9 a9: the piece a9 "0123456789a" of the secret begins inside it.
        let out = r.apply("xɩ0123456789ay");
        assert_eq!(out, "x<redacted>y");
        assert!(!out.contains("0123456789a"));
    }

    #[test]
    fn a_secret_holding_another_goes_whole_whatever_the_order() {
        let url = "https://b.example/k?X-Amz-Signature=0123456789abcdef0123";
        let mut r = Redactor::new(16);
        r.add("0123456789abcdef0123");
        r.add_whole(url);
        assert_eq!(r.apply(&format!("echo {url}")), "echo <redacted>");
    }

    #[test]
    fn whole_only_secrets_leave_their_parts() {
        let mut r = Redactor::new(16);
        r.add_whole("https://bucket.s3.amazonaws.com/x?X-Amz-Signature=abc");
        assert_eq!(
            r.apply("GET https://bucket.s3.amazonaws.com/x?X-Amz-Signature=abc failed"),
            "GET <redacted> failed"
        );
        assert_eq!(
            r.apply("https://bucket.s3.amazonaws.com/"),
            "https://bucket.s3.amazonaws.com/"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let r = Redactor::of(12, ["fakepw-1-0123456789abcdef0123"]);
        assert_eq!(format!("{r:?}"), "Redactor(1 secrets)");
    }
}
