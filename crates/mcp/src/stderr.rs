//! A server's stderr: read to the end (a flood never blocks the server), the last lines kept
//! for start errors, and a bounded number of lines per second passed to `tracing` at debug.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;

/// Lines kept for a start error.
const TAIL_LINES: usize = 12;
/// The longest line kept or logged (longer ones are cut).
const MAX_LINE: usize = 1024;
/// Lines logged per second at most; the rest are counted.
const LINES_PER_SECOND: u32 = 50;

/// The last lines a server wrote to stderr.
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    lines: Mutex<VecDeque<String>>,
}

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock();
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, joined; empty when the server wrote nothing.
    pub(crate) fn text(&self) -> String {
        self.lines
            .lock()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads `stderr` to its end on the scope, keeping the tail.
pub(crate) fn read_stderr(
    scope: &flowbalancer_lifecycle::ScopeHandle,
    label: Arc<str>,
    mut stderr: ChildStderr,
    tail: Arc<StderrTail>,
) {
    let reading = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut line: Vec<u8> = Vec::new();
        let mut window = Instant::now();
        let mut logged = 0u32;
        let mut suppressed = 0u64;
        let mut emit = |line: &[u8]| {
            let text = String::from_utf8_lossy(line)
                .trim_end_matches('\r')
                .to_string();
            if window.elapsed() >= Duration::from_secs(1) {
                if suppressed > 0 {
                    tracing::debug!(target: "flowbalancer::mcp_stderr", server = %label, suppressed, "stderr lines not logged (flood)");
                }
                window = Instant::now();
                logged = 0;
                suppressed = 0;
            }
            if logged < LINES_PER_SECOND {
                logged += 1;
                tracing::debug!(target: "flowbalancer::mcp_stderr", server = %label, "{text}");
            } else {
                suppressed += 1;
            }
            tail.push(text);
        };
        loop {
            let n = match stderr.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &byte in &buffer[..n] {
                if byte == b'\n' {
                    emit(&line);
                    line.clear();
                } else if line.len() < MAX_LINE {
                    line.push(byte);
                }
            }
        }
        if !line.is_empty() {
            emit(&line);
        }
    };
    if let Err(error) = scope.spawn(reading) {
        tracing::debug!(%error, "cannot read an MCP server's stderr");
    }
}
