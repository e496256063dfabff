//! The stdio link: one writer task feeding the server's stdin whole lines, one reader task
//! sorting what it writes to stdout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flowbalancer_pool::{ErrorKind, WorkerError};
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;

use crate::route::dispatch;
use crate::wire::{LineReader, ReadError};
use crate::worker::{Shared, Waiter};

/// Writes whole lines to the server's stdin until the instance dies or is dropped.
pub(crate) async fn write_lines(
    shared: Arc<Shared>,
    mut stdin: ChildStdin,
    mut lines: mpsc::UnboundedReceiver<(Option<u64>, Vec<u8>)>,
) {
    let mut batch = Vec::new();
    let mut calls = Vec::new();
    loop {
        let died = shared.died.notified();
        tokio::pin!(died);
        died.as_mut().enable();
        if !shared.alive.load(Ordering::SeqCst) || shared.stopping.load(Ordering::SeqCst) {
            return; // stdin closes here
        }
        let line = tokio::select! {
            line = lines.recv() => match line {
                Some(line) => line,
                None => return,
            },
            () = &mut died => return,
        };
        batch.clear();
        calls.clear();
        let mut take = |(call, line): (Option<u64>, Vec<u8>)| {
            batch.extend_from_slice(&line);
            calls.extend(call);
        };
        take(line);
        while let Ok(more) = lines.try_recv() {
            take(more);
        }
        if let Err(e) = stdin.write_all(&batch).await {
            shared.die(WorkerError::new(
                ErrorKind::Crashed,
                format!("{}: writing to its stdin failed: {e}", shared.label),
            ));
            return;
        }
        if !calls.is_empty() {
            let mut pending = shared.pending.lock();
            for id in &calls {
                if let Some(Waiter::Call { sent, .. }) = pending.waiting.get_mut(id) {
                    *sent = true;
                }
            }
        }
    }
}

/// Reads the server's messages until it dies, then reaps it.
pub(crate) async fn read_messages(shared: Arc<Shared>, stdout: ChildStdout) {
    let mut reader = LineReader::new(stdout, shared.spec.max_message);
    let error = loop {
        let died = shared.died.notified();
        tokio::pin!(died);
        died.as_mut().enable();
        if !shared.alive.load(Ordering::SeqCst) {
            return;
        }
        let incoming = tokio::select! {
            incoming = reader.next() => incoming,
            () = &mut died => return,
        };
        match incoming {
            Ok(message) => {
                if let Err(error) = dispatch(&shared, message) {
                    break error;
                }
            }
            Err(ReadError::Eof) => {
                let message = match shared.link.exit_status(Duration::from_millis(500)).await {
                    Some(status) => format!("{}: exited ({status})", shared.label),
                    None => format!("{}: closed its stdout", shared.label),
                };
                break WorkerError::new(ErrorKind::Crashed, message);
            }
            Err(other) => {
                break WorkerError::new(ErrorKind::Crashed, format!("{}: {other}", shared.label));
            }
        }
    };
    shared.die(error);
}
