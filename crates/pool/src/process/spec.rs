//! `ProcessSpec`: how to start a worker process (program, arguments, environment, limits), and
//! the commands that start the bundled and Python workers.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use flowbalancer_protocol::frame::DEFAULT_MAX_FRAME;

/// Variables passed through from the pool's environment by default.
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
];

/// How to start a worker process. The command is an argv (never a shell). Its `Debug` output
/// names the variables of `env` but not their values.
#[derive(Clone, PartialEq)]
pub struct ProcessSpec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory (default: ours).
    pub cwd: Option<PathBuf>,
    /// Variables copied from our environment when set (default [`DEFAULT_ENV_ALLOW`]).
    pub env_allow: Vec<String>,
    /// Variables set explicitly.
    pub env: Vec<(String, String)>,
    /// The largest frame either side may send (default 16 MiB).
    pub max_frame: usize,
    /// How long the worker has to send its hello (default 10 s).
    pub hello_timeout: Duration,
    /// The longest stderr line forwarded to `tracing` (longer lines are cut).
    pub max_stderr_line: usize,
}

impl std::fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("env_allow", &self.env_allow)
            .field("env", &super::RedactedValues(&self.env))
            .field("max_frame", &self.max_frame)
            .field("hello_timeout", &self.hello_timeout)
            .field("max_stderr_line", &self.max_stderr_line)
            .finish()
    }
}

impl ProcessSpec {
    /// A spec running `program` with `args`.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: None,
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
            hello_timeout: Duration::from_secs(10),
            max_stderr_line: 8 * 1024,
        }
    }

    /// A spec running a Python worker script with the real interpreter behind `python3`.
    ///
    /// `python3` is often a shim (pyenv, asdf) costing tens of milliseconds per start; the
    /// interpreter it points to is asked once (`sys.executable`) and used directly. Pass
    /// `-S` in `interpreter_args` for workers that need only the standard library: skipping
    /// `site` makes a start several times faster.
    pub fn python(
        script: impl Into<PathBuf>,
        interpreter_args: impl IntoIterator<Item = impl Into<String>>,
        script_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let mut args: Vec<String> = interpreter_args.into_iter().map(Into::into).collect();
        args.push(script.into().display().to_string());
        args.extend(script_args.into_iter().map(Into::into));
        Self::new(python_interpreter(), args)
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the hello timeout.
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// Sets the maximum frame size.
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    pub(super) fn command(&self) -> Command {
        let max_frame = (
            "FLOWBALANCER_MAX_FRAME".to_string(),
            self.max_frame.to_string(),
        );
        worker_command(
            &self.program,
            &self.args,
            self.cwd.as_deref(),
            &self.env_allow,
            std::iter::once(&max_frame).chain(&self.env),
        )
    }
}

/// The command of a worker process: `program args…` with piped stdio, a cleared environment
/// but for the variables of `env_allow` that are set here, then `env` (later entries win),
/// run in `cwd` when given. Never a shell.
pub fn worker_command<'a>(
    program: &std::path::Path,
    args: &[String],
    cwd: Option<&std::path::Path>,
    env_allow: &[String],
    env: impl IntoIterator<Item = &'a (String, String)>,
) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for key in env_allow {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command
}

/// The interpreter `python3` resolves to (asked once), or `python3` itself when asking fails.
pub fn python_interpreter() -> PathBuf {
    static RESOLVED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    RESOLVED
        .get_or_init(|| {
            Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("python3"))
        })
        .clone()
}
