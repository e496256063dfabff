//! The embedded default config: the bundled Python workers when python3 is there, the same
//! tools built in otherwise.

use std::path::Path;

use flowbalancer::Config;

const WORKER_LIBRARY: &str = include_str!("../../../workers/python/flowbalancer_worker.py");
const EXAMPLE_WORKER: &str = include_str!("../../../workers/python/examples/basic_worker.py");

/// Tiers of the default config: `(name, size, call timeout)`. Every tier offers every tool,
/// so a call that times out on one falls back to the next.
const TIERS: [(&str, usize, &str); 3] = [("hot", 2, "2s"), ("warm", 1, "10s"), ("cold", 1, "30s")];

const ROUTES: &str = r#"
[routes]
default = "hot"
exact = { sleep = "warm", fib = "cold" }
"#;

/// Whether `python3` (the interpreter it resolves to) runs.
pub(crate) fn python_available() -> bool {
    std::process::Command::new(flowbalancer::pool::process::python_interpreter())
        .args(["-c", "import json, struct"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The default config, writing the bundled Python workers into `dir` when python3 is there.
/// Returns the config and a line for stderr saying what is served.
pub(crate) fn default_config(dir: &Path) -> Result<(Config, String), flowbalancer::Error> {
    // The event log goes to its per-user default (private, outliving the run).
    let mut toml = String::from("name = \"flowbalancer\"\ntimeout = \"60s\"\n");
    let note = if python_available() {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| flowbalancer::Error::Io {
                    what: format!("creating {}", parent.display()),
                    source,
                })?;
            }
            std::fs::write(&path, text).map_err(|source| flowbalancer::Error::Io {
                what: format!("writing {}", path.display()),
                source,
            })?;
            Ok::<_, flowbalancer::Error>(path)
        };
        write("flowbalancer_worker.py", WORKER_LIBRARY)?;
        let script = write("examples/basic_worker.py", EXAMPLE_WORKER)?;
        for (name, size, timeout) in TIERS {
            toml.push_str(&format!(
                "\n[[tiers]]\nname = \"{name}\"\nworkers = {{ python = {:?} }}\npython_args = [\"-S\"]\nsize = {size}\ncall_timeout = \"{timeout}\"\n",
                script.display().to_string()
            ));
        }
        "flowbalancer: serving the bundled Python workers (echo, word_count, sleep, fib, pid) in tiers hot → warm → cold".to_string()
    } else {
        for (name, size, timeout) in TIERS {
            toml.push_str(&format!(
                "\n[[tiers]]\nname = \"{name}\"\nworkers = {{ builtin = [\"echo\", \"word_count\", \"sleep\", \"fib\", \"pid\"] }}\nsize = {size}\ncall_timeout = \"{timeout}\"\n"
            ));
        }
        "flowbalancer: python3 was not found; serving the built-in in-process versions of echo, word_count, sleep, fib and pid instead".to_string()
    };
    toml.push_str(ROUTES);
    Ok((Config::from_toml(&toml)?, note))
}
