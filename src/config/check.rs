//! The validator: collects located errors and warnings, and checks values common to sections.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::Diagnostic;

/// Line and column (1-based, in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Walks the raw config once, gathering every problem, each located in the text.
pub(super) struct Checker<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Checker {
            text,
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The warnings when nothing was wrong, else every error.
    pub(super) fn finish(self) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
        if !self.diagnostics.is_empty() {
            return Err(self.diagnostics);
        }
        Ok(self.warnings)
    }

    fn located(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = line_col(self.text, span.start);
        Diagnostic {
            line,
            column,
            message: message.into(),
        }
    }

    pub(super) fn error(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let d = self.located(span, message);
        self.diagnostics.push(d);
    }

    pub(super) fn warning(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let d = self.located(span, message);
        self.warnings.push(d);
    }

    /// [`Checker::duration`] that must also be at least `min` (how often something is polled).
    pub(super) fn duration_at_least(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let d = self.duration(key, v, default, max);
        if d < min
            && let Some(v) = v
        {
            self.error(
                v.span(),
                format!(
                    "{key} must be at least {}, found {:?}",
                    humantime::format_duration(min),
                    v.get_ref()
                ),
            );
        }
        d
    }

    /// A duration between zero (exclusive) and `max`: every time computation stays far from
    /// overflow, and no setting can make the daemon wait longer than makes sense.
    pub(super) fn duration(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.error(v.span(), format!("{key} must be longer than zero"));
                default
            }
            Ok(d) if d > max => {
                self.error(
                    v.span(),
                    format!(
                        "{key} must be at most {}, found {:?}",
                        humantime::format_duration(max),
                        v.get_ref()
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error(
                    v.span(),
                    format!(
                        "{key}: {:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn absolute_path(&mut self, key: &str, v: &Spanned<String>) -> PathBuf {
        let p = PathBuf::from(v.get_ref());
        if !p.is_absolute() {
            self.error(
                v.span(),
                format!("{key} must be an absolute path, found {:?}", v.get_ref()),
            );
        } else if p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            self.error(v.span(), format!("{key} must not contain \"..\""));
        }
        p
    }

    pub(super) fn non_empty(&mut self, key: &str, v: &Option<Spanned<String>>) -> Option<String> {
        let v = v.as_ref()?;
        if v.get_ref().trim().is_empty() {
            self.error(v.span(), format!("{key} must not be empty"));
            return None;
        }
        Some(v.get_ref().clone())
    }
}
