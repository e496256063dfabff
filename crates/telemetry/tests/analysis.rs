//! `analyze` on output captured from the real tools (see fixtures/VERSIONS.md and
//! scripts/capture_analysis_fixtures.py).

use flowbalancer_telemetry::analysis::{Analysis, Kind, analyze};

fn fixture(name: &str) -> Analysis {
    let path = format!("{}/tests/fixtures/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    analyze(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn codes(analysis: &Analysis) -> Vec<(&str, usize)> {
    analysis
        .by_code
        .iter()
        .map(|(c, n)| (c.as_str(), *n))
        .collect()
}

#[test]
fn ruff() {
    let a = fixture("ruff");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::Lint, Some("ruff"), 5, true)
    );
    assert_eq!(codes(&a), [("F401", 3), ("F841", 2)]);
    assert_eq!(a.headline, "5 lint errors: 3x F401, 2x F841");
    assert_eq!(a.hint.as_deref(), Some("ruff check --fix"));
    assert_eq!(
        a.key_lines[0],
        "app.py:1:8: F401 [*] `os` imported but unused"
    );
}

#[test]
fn ruff_clean_is_a_success() {
    let a = fixture("ruff_clean");
    assert_eq!(
        (a.kind, a.total, a.failed, a.hint),
        (Kind::Lint, 0, false, None)
    );
    assert_eq!(a.headline, "no lint errors");
}

#[test]
fn flake8() {
    let a = fixture("flake8");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::Lint, Some("flake8"), 5, true)
    );
    assert_eq!(codes(&a), [("F401", 3), ("F841", 2)]);
    assert_eq!(a.key_lines[0], "app.py:1:1: F401 'os' imported but unused");
    assert!(a.hint.unwrap().starts_with("ruff check --fix"));
}

#[test]
fn mypy() {
    let a = fixture("mypy");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::TypeCheck, Some("mypy"), 2, true)
    );
    assert_eq!(codes(&a), [("assignment", 1), ("return-value", 1)]);
    assert!(a.key_lines[0].starts_with("app.py:9: error: Incompatible types in assignment"));
}

#[test]
fn tsc() {
    let a = fixture("tsc");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::TypeCheck, Some("tsc"), 3, true)
    );
    assert_eq!(codes(&a), [("TS2304", 1), ("TS2322", 1), ("TS2345", 1)]);
    assert_eq!(
        a.key_lines[0],
        "app.ts(1,7): error TS2322: Type 'string' is not assignable to type 'number'."
    );
}

#[test]
fn eslint() {
    let a = fixture("eslint");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::Lint, Some("eslint"), 5, true)
    );
    assert_eq!(codes(&a), [("no-unused-vars", 3), ("no-undef", 2)]);
    assert_eq!(
        a.headline,
        "5 lint problems: 3x no-unused-vars, 2x no-undef"
    );
    assert!(a.key_lines[0].contains("'unused' is assigned a value but never used"));
}

#[test]
fn pytest() {
    let a = fixture("pytest");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::Test, Some("pytest"), 2, true)
    );
    assert_eq!(codes(&a), [("AssertionError", 1), ("ValueError", 1)]);
    assert_eq!(
        a.headline,
        "2 of 4 tests failed: 1x AssertionError, 1x ValueError"
    );
    assert_eq!(
        a.key_lines[0],
        "FAILED test_app.py::test_fails - assert [1, 2, 3] == [1, 2, 4]"
    );
}

#[test]
fn pytest_clean_is_a_success() {
    let a = fixture("pytest_clean");
    assert_eq!((a.kind, a.total, a.failed), (Kind::Test, 0, false));
    assert_eq!(a.headline, "1 test passed");
}

#[test]
fn cargo_test_both_formats() {
    for name in ["cargo_test", "cargo_test_quiet"] {
        let a = fixture(name);
        assert_eq!(
            (a.kind, a.tool, a.total, a.failed),
            (Kind::Test, Some("cargo test"), 2, true),
            "{name}"
        );
        assert_eq!(
            a.headline, "2 of 3 tests failed: tests::adds_wrong, tests::panics",
            "{name}"
        );
        assert_eq!(
            a.hint.as_deref(),
            Some("cargo test tests::adds_wrong -- --nocapture")
        );
        assert!(
            a.key_lines[0].contains("panicked at src/lib.rs:8:23"),
            "{name}: {:?}",
            a.key_lines
        );
    }
}

#[test]
fn cargo_build() {
    let a = fixture("cargo_build");
    assert_eq!(
        (a.kind, a.tool, a.total, a.failed),
        (Kind::Build, Some("rustc"), 3, true)
    );
    assert_eq!(codes(&a), [("E0308", 2), ("E0425", 1)]);
    assert!(
        a.headline.starts_with("3 build errors: 2x E0308, 1x E0425"),
        "{}",
        a.headline
    );
    assert_eq!(a.hint.as_deref(), Some("rustc --explain E0308"));
    assert_eq!(a.key_lines[0], "error[E0308]: mismatched types");
}

#[test]
fn red_is_never_reported_as_green() {
    // A test run cut off before its summary, a crash, a failing build with no error lines.
    for text in [
        "running 3 tests\nthread 'main' panicked at src/lib.rs:1:1:\nboom\n",
        "Traceback (most recent call last):\n  File \"x.py\", line 1\nZeroDivisionError: division by zero\n",
        "   Compiling x v0.1.0\nerror: could not compile `x` (lib) due to 1 previous error\n",
    ] {
        let a = analyze(text);
        assert!(a.failed, "{text:?} → {a:?}");
        assert!(
            !a.key_lines.is_empty(),
            "{text:?}: the error lines are kept"
        );
    }
}

#[test]
fn a_python_traceback_is_summarised_by_its_exception_and_place() {
    let text = r#"Traceback (most recent call last):
  File "/srv/worker/flowbalancer_worker.py", line 402, in _main
    outcome = ("ok", function(**params))
  File "/srv/worker/tools.py", line 17, in lookup
    return table[key]
KeyError: 'missing'
"#;
    let analysis = flowbalancer_telemetry::analysis::analyze(text);
    assert_eq!(
        analysis.kind,
        flowbalancer_telemetry::analysis::Kind::Exception
    );
    assert_eq!(analysis.headline, "KeyError at tools.py:17 in lookup");
    assert!(analysis.failed);
    assert_eq!(
        analysis.key_lines.last().map(String::as_str),
        Some("KeyError: 'missing'")
    );
}
