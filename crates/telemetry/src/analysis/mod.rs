//! Turns raw linter, type-checker, test and build output into a short summary and a hint.
//!
//! ```
//! use flowbalancer_telemetry::analysis::{analyze, Kind};
//!
//! let output = "app.py:1:8: F401 [*] `os` imported but unused\n\
//!               app.py:2:8: F401 [*] `sys` imported but unused\n\
//!               app.py:8:5: F841 Local variable `unused` is assigned to but never used\n\
//!               Found 3 errors.\n";
//! let analysis = analyze(output);
//! assert_eq!(analysis.kind, Kind::Lint);
//! assert_eq!(analysis.headline, "3 lint errors: 2x F401, 1x F841");
//! assert_eq!(analysis.hint.as_deref(), Some("ruff check --fix"));
//! assert!(analysis.failed);
//! ```
//!
//! Faithful on red: output that shows a failure is never summarised as a success, and the
//! first error lines are kept verbatim in `key_lines`.

mod js;
mod python;
mod rust;

use serde::Serialize;

/// What kind of output it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// A linter (ruff, flake8, eslint).
    Lint,
    /// A type checker (mypy, tsc).
    TypeCheck,
    /// A test run (pytest, cargo test).
    Test,
    /// A build (rustc, cargo build).
    Build,
    /// An exception with its traceback (Python).
    Exception,
    /// Not recognised.
    Unknown,
}

/// A summary of one tool's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Analysis {
    /// What kind of output.
    pub kind: Kind,
    /// The tool recognised (`ruff`, `pytest`, …).
    pub tool: Option<&'static str>,
    /// Problems found (errors, failed tests).
    pub total: usize,
    /// Problems by code (rule, error code, exception type), most frequent first.
    pub by_code: Vec<(String, usize)>,
    /// One line: `53 lint errors: 40x F401, 8x F841`.
    pub headline: String,
    /// What to run next, when there is a known fix.
    pub hint: Option<String>,
    /// The first error lines, verbatim.
    pub key_lines: Vec<String>,
    /// Whether the output shows a failure.
    pub failed: bool,
}

/// Lines kept verbatim in `key_lines`.
const KEY_LINES: usize = 5;

/// Analyses the output of one tool run.
pub fn analyze(text: &str) -> Analysis {
    let parsers: [fn(&str) -> Option<Analysis>; 9] = [
        rust::cargo_test,
        python::pytest,
        python::traceback,
        rust::build,
        js::tsc,
        js::eslint,
        python::mypy,
        python::ruff,
        python::flake8,
    ];
    for parse in parsers {
        if let Some(analysis) = parse(text) {
            return analysis;
        }
    }
    unknown(text)
}

/// Output nobody recognised: failed if it looks like a failure, with its error lines kept.
fn unknown(text: &str) -> Analysis {
    let key_lines: Vec<String> = text
        .lines()
        .filter(|l| looks_like_failure(l))
        .take(KEY_LINES)
        .map(str::to_string)
        .collect();
    let failed = !key_lines.is_empty();
    Analysis {
        kind: Kind::Unknown,
        tool: None,
        total: key_lines.len(),
        by_code: Vec::new(),
        headline: if failed {
            "failed (output not recognised; see the key lines)".into()
        } else {
            "no problem recognised".into()
        },
        hint: None,
        key_lines,
        failed,
    }
}

fn looks_like_failure(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "error",
        "failed",
        "failure",
        "traceback",
        "panicked",
        "exception",
        "fatal",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Counts codes, most frequent first (ties by code).
fn tally(codes: impl IntoIterator<Item = String>) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for code in codes {
        match counts.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => counts.push((code, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// `N things: 40x A, 8x B, 2x C` (the three most frequent codes).
fn headline(total: usize, what: &str, by_code: &[(String, usize)]) -> String {
    let plural = if total == 1 {
        what.to_string()
    } else {
        format!("{what}s")
    };
    if by_code.is_empty() {
        return format!("{total} {plural}");
    }
    let top: Vec<String> = by_code
        .iter()
        .take(3)
        .map(|(c, n)| format!("{n}x {c}"))
        .collect();
    let more = if by_code.len() > 3 { ", …" } else { "" };
    format!("{total} {plural}: {}{more}", top.join(", "))
}

fn key_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .take(KEY_LINES)
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// The number just before `word` in `line` (`"3 failed"` → 3).
fn number_before(line: &str, word: &str) -> Option<usize> {
    let index = line.find(word)?;
    line[..index]
        .split(|c: char| !c.is_ascii_digit())
        .rev()
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrecognised_failures_are_not_called_success() {
        let analysis = analyze("compiling...\nFATAL: out of memory\ndone\n");
        assert!(analysis.failed);
        assert_eq!(analysis.key_lines, ["FATAL: out of memory"]);
        assert!(!analyze("all good\n").failed);
    }

    #[test]
    fn headline_shows_the_top_three() {
        let by = tally(["a", "b", "a", "c", "d", "a", "b"].map(String::from));
        assert_eq!(
            headline(7, "lint error", &by),
            "7 lint errors: 3x a, 2x b, 1x c, …"
        );
        assert_eq!(headline(1, "test failure", &[]), "1 test failure");
    }
}
