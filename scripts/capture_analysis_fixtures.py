#!/usr/bin/env python3
"""Captures the analysis fixtures from the real tools.

Installs ruff, flake8, mypy and pytest (pip, into a venv under target/) and typescript and
eslint (npm, under target/), runs each on small deliberately broken projects, runs cargo test
and cargo build on broken Rust crates, and writes each raw output to
crates/telemetry/tests/fixtures/<name>.txt and the tool versions to VERSIONS.md there.

Run from the repository root:  python3 scripts/capture_analysis_fixtures.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "target", "fixture-tools")
OUT = os.path.join(ROOT, "crates", "telemetry", "tests", "fixtures")
VENV = os.path.join(TOOLS, "venv")
NODE = os.path.join(TOOLS, "node")


def run(args, cwd=None, env=None):
    print("$", " ".join(args), file=sys.stderr)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    return done.stdout + done.stderr, done.returncode


def write(name, text):
    with open(os.path.join(OUT, name + ".txt"), "w") as f:
        f.write(text)


def setup_tools():
    os.makedirs(TOOLS, exist_ok=True)
    if not os.path.exists(os.path.join(VENV, "bin", "python")):
        run([sys.executable, "-m", "venv", VENV])
    pip = os.path.join(VENV, "bin", "pip")
    out, code = run([pip, "install", "-q", "ruff", "flake8", "mypy", "pytest"])
    if code:
        sys.exit("pip install failed:\n" + out)
    os.makedirs(NODE, exist_ok=True)
    out, code = run(["npm", "install", "--silent", "--prefix", NODE, "typescript@5", "eslint@9", "@eslint/js@9"])
    if code:
        sys.exit("npm install failed:\n" + out)


def python_project(dir):
    with open(os.path.join(dir, "app.py"), "w") as f:
        f.write(textwrap.dedent('''\
            import os
            import sys
            import json
            from typing import List


            def total(values: List[int]) -> int:
                unused = 1
                result: int = "not an int"
                for v in values:
                    result += v
                return result


            def greet(name: str) -> str:
                count = 0
                return 42
            '''))
    with open(os.path.join(dir, "test_app.py"), "w") as f:
        f.write(textwrap.dedent('''\
            def test_passes():
                assert 1 + 1 == 2


            def test_fails():
                assert [1, 2, 3] == [1, 2, 4]


            def test_raises():
                raise ValueError("bad value in test")


            def test_also_passes():
                assert "a".upper() == "A"
            '''))


def js_project(dir):
    with open(os.path.join(dir, "app.ts"), "w") as f:
        f.write(textwrap.dedent('''\
            const count: number = "three";
            function add(a: number, b: number): number { return a + b; }
            add(1, "2");
            let missing = undefinedThing + 1;
            '''))
    with open(os.path.join(dir, "app.js"), "w") as f:
        f.write(textwrap.dedent('''\
            const unused = 1;
            let value = 2
            if (value == undefinedName) { console.log("x") }
            function f() { const inner = 3; }
            '''))
    with open(os.path.join(dir, "eslint.config.mjs"), "w") as f:
        f.write('import js from "@eslint/js";\nexport default [js.configs.recommended];\n')


def rust_projects(dir):
    tests = os.path.join(dir, "failing_tests")
    os.makedirs(os.path.join(tests, "src"))
    with open(os.path.join(tests, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "failing_tests"\nversion = "0.1.0"\nedition = "2021"\n')
    with open(os.path.join(tests, "src", "lib.rs"), "w") as f:
        f.write(textwrap.dedent('''\
            pub fn add(a: i32, b: i32) -> i32 { a + b }

            #[cfg(test)]
            mod tests {
                #[test]
                fn adds() { assert_eq!(super::add(2, 2), 4); }
                #[test]
                fn adds_wrong() { assert_eq!(super::add(2, 2), 5); }
                #[test]
                fn panics() { panic!("something broke"); }
            }
            '''))
    broken = os.path.join(dir, "broken_build")
    os.makedirs(os.path.join(broken, "src"))
    with open(os.path.join(broken, "Cargo.toml"), "w") as f:
        f.write('[package]\nname = "broken_build"\nversion = "0.1.0"\nedition = "2021"\n')
    with open(os.path.join(broken, "src", "lib.rs"), "w") as f:
        f.write(textwrap.dedent('''\
            pub fn f() -> u32 {
                let unused = 5;
                let s: String = 5;
                missing_function();
                "text"
            }
            '''))
    return tests, broken


def main():
    os.makedirs(OUT, exist_ok=True)
    setup_tools()
    bin_ = lambda name: os.path.join(VENV, "bin", name)
    node_bin = lambda name: os.path.join(NODE, "node_modules", ".bin", name)
    versions = []
    with tempfile.TemporaryDirectory() as work:
        python_project(work)
        write("ruff", run([bin_("ruff"), "check", "--output-format", "concise", "--select", "F,E", "app.py"], cwd=work)[0])
        versions.append("ruff: " + run([bin_("ruff"), "--version"])[0].strip())
        write("flake8", run([bin_("flake8"), "app.py"], cwd=work)[0])
        versions.append("flake8: " + run([bin_("flake8"), "--version"])[0].strip().splitlines()[0])
        write("mypy", run([bin_("mypy"), "--no-color-output", "--no-error-summary", "app.py"], cwd=work)[0]
              + run([bin_("mypy"), "--no-color-output", "app.py"], cwd=work)[0].splitlines()[-1] + "\n")
        versions.append("mypy: " + run([bin_("mypy"), "--version"])[0].strip())
        write("pytest", run([bin_("pytest"), "-q", "-p", "no:cacheprovider", "test_app.py"], cwd=work)[0])
        versions.append("pytest: " + run([bin_("pytest"), "--version"])[0].strip())
        # The JS project lives next to node_modules so that its config can import @eslint/js.
        js_dir = os.path.join(NODE, "project")
        os.makedirs(js_dir, exist_ok=True)
        js_project(js_dir)
        write("tsc", run([node_bin("tsc"), "--noEmit", "--pretty", "false", "app.ts"], cwd=js_dir)[0])
        versions.append("tsc: " + run([node_bin("tsc"), "--version"])[0].strip())
        write("eslint", run([node_bin("eslint"), "app.js"], cwd=js_dir)[0])
        versions.append("eslint: " + run([node_bin("eslint"), "--version"])[0].strip())
        tests, broken = rust_projects(work)
        env = dict(os.environ, CARGO_TERM_COLOR="never", RUST_BACKTRACE="0", CARGO_TARGET_DIR=os.path.join(TOOLS, "cargo-target"))
        write("cargo_test", run(["cargo", "test"], cwd=tests, env=env)[0])
        write("cargo_test_quiet", run(["cargo", "test", "--quiet"], cwd=tests, env=env)[0])
        write("cargo_build", run(["cargo", "build"], cwd=broken, env=env)[0])
        versions.append("cargo: " + run(["cargo", "--version"])[0].strip())
        # A clean run of a tool, to check that success is not called failure (and vice versa).
        with open(os.path.join(work, "clean.py"), "w") as f:
            f.write("def ok(x: int) -> int:\n    return x + 1\n")
        write("ruff_clean", run([bin_("ruff"), "check", "--output-format", "concise", "clean.py"], cwd=work)[0])
        with open(os.path.join(work, "test_clean.py"), "w") as f:
            f.write("def test_ok():\n    assert True\n")
        write("pytest_clean", run([bin_("pytest"), "-q", "-p", "no:cacheprovider", "test_clean.py"], cwd=work)[0])
    with open(os.path.join(OUT, "VERSIONS.md"), "w") as f:
        f.write("# Tool versions the fixtures were captured with\n\n")
        f.write("Captured by `python3 scripts/capture_analysis_fixtures.py`.\n\n")
        for line in versions:
            f.write("- " + line + "\n")
    print("fixtures written to", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
