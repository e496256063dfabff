//! ruff, flake8, mypy, pytest.

use super::{Analysis, Kind, headline, key_lines, number_before, tally};

/// `path:line:col: CODE message` → the code.
fn lint_code(line: &str) -> Option<&str> {
    let mut parts = line.splitn(4, ':');
    let (path, row, col, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if path.is_empty()
        || !row.trim().chars().all(|c| c.is_ascii_digit())
        || !col.trim().chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let code = rest.split_whitespace().next()?;
    let letters = code.chars().take_while(|c| c.is_ascii_uppercase()).count();
    (letters >= 1 && code.len() > letters && code[letters..].chars().all(|c| c.is_ascii_digit()))
        .then_some(code)
}

fn lint(text: &str, tool: &'static str, hint: Option<String>) -> Analysis {
    let errors: Vec<&str> = text.lines().filter(|l| lint_code(l).is_some()).collect();
    let by_code = tally(
        errors
            .iter()
            .filter_map(|l| lint_code(l))
            .map(str::to_string),
    );
    let total = errors.len();
    Analysis {
        kind: Kind::Lint,
        tool: Some(tool),
        total,
        headline: if total == 0 {
            "no lint errors".into()
        } else {
            headline(total, "lint error", &by_code)
        },
        by_code,
        hint: if total == 0 { None } else { hint },
        key_lines: key_lines(errors),
        failed: total > 0,
    }
}

pub(super) fn ruff(text: &str) -> Option<Analysis> {
    let ruff_like = text
        .lines()
        .any(|l| l.starts_with("Found ") && l.contains(" error"))
        || text.contains("All checks passed!")
        || text
            .lines()
            .any(|l| lint_code(l).is_some() && l.contains(" [*] "));
    if !ruff_like {
        return None;
    }
    let fixable = text.contains("--fix") || text.contains("[*]");
    let hint = Some(if fixable {
        "ruff check --fix".to_string()
    } else {
        "ruff check --statistics".to_string()
    });
    Some(lint(text, "ruff", hint))
}

pub(super) fn flake8(text: &str) -> Option<Analysis> {
    if !text.lines().any(|l| lint_code(l).is_some()) {
        return None;
    }
    let analysis = lint(text, "flake8", None);
    let fixable = analysis
        .by_code
        .iter()
        .any(|(c, _)| c.starts_with('F') || c.starts_with('E') || c.starts_with('W'));
    Some(Analysis {
        hint: fixable
            .then(|| "ruff check --fix (fixes these pyflakes/pycodestyle codes)".to_string()),
        ..analysis
    })
}

pub(super) fn mypy(text: &str) -> Option<Analysis> {
    // path:line: error: message  [code]
    let is_error = |l: &&str| {
        l.contains(": error: ")
            && l.split(':')
                .nth(1)
                .is_some_and(|n| n.trim().parse::<u32>().is_ok())
    };
    let errors: Vec<&str> = text.lines().filter(is_error).collect();
    let summary = text
        .lines()
        .any(|l| l.starts_with("Found ") && l.contains(" error") && l.contains(" file"))
        || text.starts_with("Success: no issues found");
    if errors.is_empty() && !summary {
        return None;
    }
    let code = |l: &&str| {
        let open = l.rfind('[')?;
        let close = l.rfind(']')?;
        (close > open && close == l.trim_end().len() - 1).then(|| l[open + 1..close].to_string())
    };
    let by_code = tally(
        errors
            .iter()
            .map(|l| code(l).unwrap_or_else(|| "error".into())),
    );
    let total = errors.len();
    Some(Analysis {
        kind: Kind::TypeCheck,
        tool: Some("mypy"),
        total,
        headline: if total == 0 {
            "no type errors".into()
        } else {
            headline(total, "type error", &by_code)
        },
        by_code,
        hint: (total > 0)
            .then(|| "mypy --show-error-context <file> (fix the first error first)".into()),
        key_lines: key_lines(errors),
        failed: total > 0,
    })
}

pub(super) fn pytest(text: &str) -> Option<Analysis> {
    // The summary: "=== 2 failed, 2 passed in 0.05s ===" or, with -q, "2 failed, 2 passed in 0.05s".
    let summary = text.lines().rev().find(|l| {
        let l = l.trim_matches(|c| c == '=' || c == ' ');
        (l.contains(" passed") || l.contains(" failed") || l.contains(" error"))
            && l.contains(" in ")
            && l.ends_with('s')
    })?;
    let failed = number_before(summary, " failed").unwrap_or(0);
    let errors = number_before(summary, " error").unwrap_or(0);
    let passed = number_before(summary, " passed").unwrap_or(0);
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("FAILED ") || l.starts_with("ERROR "))
        .collect();
    // "FAILED test_app.py::test_fails - assert [1, 2, 3] == [1, 2, 4]" → the exception type
    // when the short reason names one.
    let by_code = tally(failures.iter().map(|l| {
        let reason = l.split(" - ").nth(1).unwrap_or("");
        let first = reason.split(':').next().unwrap_or("").trim();
        if !first.is_empty()
            && first
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && first.chars().next().is_some_and(char::is_uppercase)
        {
            first.to_string()
        } else if reason.starts_with("assert") {
            "AssertionError".to_string()
        } else {
            "failure".to_string()
        }
    }));
    let total = failed + errors;
    let ran = total + passed;
    let headline = if total == 0 {
        format!("{passed} test{} passed", if passed == 1 { "" } else { "s" })
    } else {
        let mut line = format!("{total} of {ran} tests failed");
        if !by_code.is_empty() {
            let top: Vec<String> = by_code
                .iter()
                .take(3)
                .map(|(c, n)| format!("{n}x {c}"))
                .collect();
            line.push_str(&format!(": {}", top.join(", ")));
        }
        line
    };
    Some(Analysis {
        kind: Kind::Test,
        tool: Some("pytest"),
        total,
        by_code,
        headline,
        hint: (total > 0)
            .then(|| "pytest -x --lf (rerun the last failures, stop at the first)".into()),
        key_lines: key_lines(if failures.is_empty() {
            vec![summary]
        } else {
            failures
        }),
        failed: total > 0,
    })
}

/// A Python traceback (`Traceback (most recent call last):` … `ExcType: message`): the
/// exception type and where it was raised (the innermost frame).
pub(super) fn traceback(text: &str) -> Option<Analysis> {
    let start = text.find("Traceback (most recent call last):")?;
    let body = &text[start..];
    let lines: Vec<&str> = body.lines().collect();
    // The innermost frame: the last `File "…", line N, in f`.
    let frame = lines
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with("File \""))
        .map(|l| l.trim().to_string());
    // The exception: the first line after the frames that starts in column 0 and names a type.
    let exception = lines
        .iter()
        .skip(1)
        .rev()
        .find(|l| {
            !l.starts_with(' ')
                && l.split(':').next().is_some_and(|t| {
                    !t.is_empty()
                        && t.chars()
                            .all(|c| c.is_alphanumeric() || c == '.' || c == '_')
                })
        })?
        .trim()
        .to_string();
    let exc_type = exception
        .split(':')
        .next()
        .unwrap_or("Exception")
        .to_string();
    let short_type = exc_type.rsplit('.').next().unwrap_or(&exc_type).to_string();
    let place = frame
        .as_deref()
        .and_then(|f| {
            let file = f.split('"').nth(1)?;
            let file = file.rsplit('/').next().unwrap_or(file);
            let line = f.split("line ").nth(1)?.split(',').next()?.trim();
            let function = f.split(", in ").nth(1).unwrap_or("?").trim();
            Some(format!("{file}:{line} in {function}"))
        })
        .unwrap_or_else(|| "an unknown place".into());
    let mut key = Vec::new();
    key.extend(frame);
    key.push(exception.clone());
    Some(Analysis {
        kind: Kind::Exception,
        tool: Some("python"),
        total: 1,
        by_code: vec![(short_type.clone(), 1)],
        headline: format!("{short_type} at {place}"),
        hint: None,
        key_lines: key_lines(key.iter().map(String::as_str)),
        failed: true,
    })
}
