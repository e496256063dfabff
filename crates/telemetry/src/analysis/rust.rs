//! cargo test, rustc / cargo build.

use super::{Analysis, Kind, headline, key_lines, number_before, tally};

pub(super) fn cargo_test(text: &str) -> Option<Analysis> {
    let results: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("test result: "))
        .collect();
    if results.is_empty() {
        return None;
    }
    let sum = |word: &str| {
        results
            .iter()
            .filter_map(|l| number_before(l, word))
            .sum::<usize>()
    };
    let (passed, failed) = (sum(" passed"), sum(" failed"));
    // Failed test names: "test tests::panics ... FAILED", or the "failures:" list.
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("test ")?
                .strip_suffix(" ... FAILED")
                .map(str::to_string)
        })
        .collect();
    if names.is_empty() {
        names = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("---- ")?
                    .strip_suffix(" stdout ----")
                    .map(str::to_string)
            })
            .collect();
    }
    names.dedup();
    let panics: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("panicked at")
                || l.trim_start().starts_with("assertion")
                || l.trim_start().starts_with("left:")
                || l.trim_start().starts_with("right:")
        })
        .collect();
    let by_code = tally(names.iter().cloned());
    let headline = if failed == 0 {
        format!("{passed} tests passed")
    } else {
        let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
        format!(
            "{failed} of {} tests failed: {}",
            passed + failed,
            shown.join(", ")
        )
    };
    Some(Analysis {
        kind: Kind::Test,
        tool: Some("cargo test"),
        total: failed,
        by_code,
        headline,
        hint: (failed > 0).then(|| match names.first() {
            Some(name) => format!("cargo test {name} -- --nocapture"),
            None => "cargo test -- --nocapture".into(),
        }),
        key_lines: key_lines(panics),
        failed: failed > 0,
    })
}

pub(super) fn build(text: &str) -> Option<Analysis> {
    // "error[E0308]: mismatched types", "error: cannot find function", "warning: unused variable"
    let is_error = |l: &&str| {
        l.starts_with("error[E")
            || (l.starts_with("error: ")
                && !l.starts_with("error: could not compile")
                && !l.starts_with("error: aborting"))
    };
    let errors: Vec<&str> = text.lines().filter(is_error).collect();
    let warnings = text
        .lines()
        .filter(|l| l.starts_with("warning: ") && !l.contains("generated"))
        .count();
    let could_not_compile = text
        .lines()
        .any(|l| l.starts_with("error: could not compile"));
    if errors.is_empty() && !could_not_compile && !text.contains("Compiling ") {
        return None;
    }
    let code = |l: &&str| {
        l.strip_prefix("error[")
            .and_then(|r| r.split(']').next())
            .map(str::to_string)
            .unwrap_or_else(|| "error".into())
    };
    let by_code = tally(errors.iter().map(code));
    let total = errors.len();
    let mut headline = if total == 0 && could_not_compile {
        "build failed (no error line recognised; see the key lines)".to_string()
    } else if total == 0 {
        "build succeeded".to_string()
    } else {
        headline(total, "build error", &by_code)
    };
    if warnings > 0 {
        headline.push_str(&format!(
            " ({warnings} warning{})",
            if warnings == 1 { "" } else { "s" }
        ));
    }
    let first_code = by_code.iter().map(|(c, _)| c).find(|c| c.starts_with('E'));
    Some(Analysis {
        kind: Kind::Build,
        tool: Some("rustc"),
        total,
        hint: (total > 0).then(|| match first_code {
            Some(code) => format!("rustc --explain {code}"),
            None => "cargo check (fix the first error first)".into(),
        }),
        by_code,
        headline,
        key_lines: if errors.is_empty() {
            key_lines(text.lines().filter(|l| l.starts_with("error")))
        } else {
            key_lines(errors)
        },
        failed: total > 0 || could_not_compile,
    })
}
