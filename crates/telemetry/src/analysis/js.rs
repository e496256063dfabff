//! tsc, eslint.

use super::{Analysis, Kind, headline, key_lines, tally};

pub(super) fn tsc(text: &str) -> Option<Analysis> {
    // app.ts(1,7): error TS2322: Type 'string' is not assignable to type 'number'.
    let code = |l: &str| -> Option<String> {
        let rest = l.split("): error ").nth(1)?;
        let code = rest.split(':').next()?;
        (code.starts_with("TS") && code[2..].chars().all(|c| c.is_ascii_digit()))
            .then(|| code.to_string())
    };
    let errors: Vec<&str> = text.lines().filter(|l| code(l).is_some()).collect();
    if errors.is_empty() {
        return None;
    }
    let by_code = tally(errors.iter().filter_map(|l| code(l)));
    let total = errors.len();
    Some(Analysis {
        kind: Kind::TypeCheck,
        tool: Some("tsc"),
        total,
        headline: headline(total, "type error", &by_code),
        by_code,
        hint: Some("npx tsc --noEmit (fix the first error first)".into()),
        key_lines: key_lines(errors),
        failed: true,
    })
}

pub(super) fn eslint(text: &str) -> Option<Analysis> {
    // Stylish: "  1:7  error  'unused' is assigned a value but never used  no-unused-vars"
    // and a summary "✖ 5 problems (5 errors, 0 warnings)".
    text.lines()
        .find(|l| l.trim_start().starts_with('✖') && l.contains(" problem"))?;
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            let position = words.next().unwrap_or("");
            let severity = words.next().unwrap_or("");
            position.split(':').count() == 2
                && position.split(':').all(|n| n.parse::<u32>().is_ok())
                && (severity == "error" || severity == "warning")
        })
        .collect();
    let rule = |l: &&str| l.split_whitespace().last().unwrap_or("unknown").to_string();
    let errors: Vec<&str> = problems
        .iter()
        .copied()
        .filter(|l| l.split_whitespace().nth(1) == Some("error"))
        .collect();
    let by_code = tally(problems.iter().map(rule));
    let total = problems.len();
    let fixable = text.contains("--fix");
    Some(Analysis {
        kind: Kind::Lint,
        tool: Some("eslint"),
        total,
        headline: headline(total, "lint problem", &by_code),
        by_code,
        hint: Some(if fixable {
            "npx eslint --fix".into()
        } else {
            "npx eslint (fix by rule; see eslint.org/docs/rules)".into()
        }),
        key_lines: key_lines(if errors.is_empty() {
            problems.clone()
        } else {
            errors.clone()
        }),
        failed: !errors.is_empty() || total > 0,
    })
}
