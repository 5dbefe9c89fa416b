//! The steps `doctor` took and how they went, printed as lines or JSON (pure).

use serde::Serialize;

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Works, with something to know (a private address, an unmanaged host).
    Warning,
    Failed,
    /// Not run: an earlier step it needs failed, or the time ran out.
    Skipped,
}

/// One step: its name, outcome, what was found, and the fix when it failed.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Everything `doctor` found, in the order it looked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub image: String,
    /// The pull would work: no step failed.
    pub ok: bool,
    /// The first failing step.
    pub failed_step: Option<&'static str>,
    pub steps: Vec<Step>,
}

impl Report {
    pub fn new(image: &str) -> Report {
        Report {
            image: image.to_string(),
            ok: true,
            ..Default::default()
        }
    }

    pub fn ok(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(step, Outcome::Ok, detail.into(), None);
    }

    pub fn warn(&mut self, step: &'static str, detail: impl Into<String>, fix: Option<String>) {
        self.push(step, Outcome::Warning, detail.into(), fix);
    }

    pub fn fail(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(step, Outcome::Failed, detail.into(), Some(fix.into()));
    }

    pub fn skip(&mut self, step: &'static str, why: impl Into<String>) {
        self.push(step, Outcome::Skipped, why.into(), None);
    }

    /// Appends the steps of a report made beside this one (the network steps, taken while the
    /// AWS calls ran), in their order.
    pub fn absorb(&mut self, other: Report) {
        for s in other.steps {
            self.push(s.step, s.outcome, s.detail, s.fix);
        }
    }

    fn push(&mut self, step: &'static str, outcome: Outcome, detail: String, fix: Option<String>) {
        if outcome == Outcome::Failed {
            self.ok = false;
            self.failed_step.get_or_insert(step);
        }
        self.steps.push(Step {
            step,
            outcome,
            detail,
            fix,
        });
    }

    /// One line per step (`STEP  ok|warning|FAILED|skipped  detail`), a `fix:` line under each
    /// failure or warning that has one, and the verdict; every field escaped for a terminal on
    /// its own ([`crate::escape::shown`]), so no text in a step can start a line of its own.
    pub fn text(&self) -> String {
        use crate::escape::shown;
        let width = self.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
        let mut out = String::new();
        for s in &self.steps {
            let word = match s.outcome {
                Outcome::Ok => "ok",
                Outcome::Warning => "warning",
                Outcome::Failed => "FAILED",
                Outcome::Skipped => "skipped",
            };
            out += &format!("{:width$}  {word:7}  {}\n", s.step, shown(&s.detail));
            if let Some(f) = &s.fix {
                out += &format!("{:width$}  {:7}  fix: {}\n", "", "", shown(f));
            }
        }
        let image = shown(&self.image);
        match self.failed_step {
            None => out += &format!("the pull of {image} would work\n"),
            Some(step) => out += &format!("the pull of {image} fails at step {step}\n"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_named_and_later_ones_kept() {
        let mut r = Report::new("h/app:v1");
        r.ok("image", "h/app:v1");
        r.warn("dns", "h -> 10.0.0.5 (private)", None);
        r.fail("manifest", "HTTP 404", "push it");
        r.skip("layer", "needs the manifest");
        r.fail("consumer", "shadowed", "remove credsStore");
        assert!(!r.ok);
        assert_eq!(r.failed_step, Some("manifest"));
        let t = r.text();
        assert!(t.contains("manifest  FAILED   HTTP 404\n"), "{t}");
        assert!(t.contains("                   fix: push it\n"), "{t}");
        assert!(
            t.ends_with("the pull of h/app:v1 fails at step manifest\n"),
            "{t}"
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["failed_step"], "manifest");
        assert_eq!(j["steps"][2]["outcome"], "failed");
        assert_eq!(j["steps"][0].get("fix"), None);
    }

    #[test]
    fn no_text_in_a_step_starts_a_line_or_acts_on_the_terminal() {
        let mut r = Report::new("x");
        r.warn(
            "identity",
            "failed: denied\nmanifest  ok       FORGED\r\u{1b}[2K\u{202e}",
            Some("a\nb".into()),
        );
        let t = r.text();
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(
            t.contains("failed: denied\\nmanifest  ok       FORGED\\r\\x1b[2K\\u{202e}"),
            "{t}"
        );
        assert!(t.contains("fix: a\\nb"), "{t}");
    }

    #[test]
    fn warnings_do_not_fail_the_pull() {
        let mut r = Report::new("x");
        r.warn("image", "not managed", Some("add it".into()));
        r.ok("token", "ok");
        assert!(r.ok);
        assert!(r.text().ends_with("the pull of x would work\n"));
    }
}
