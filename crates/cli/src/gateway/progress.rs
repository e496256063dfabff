//! Progress reports of a call, forwarded to its client in order.

use flowbalancer::pool::ProgressSink;
use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use serde_json::Value;
use tokio::sync::mpsc;

enum Forward {
    Report(flowbalancer::pool::Progress),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Waits until every report given to a forwarder so far has been sent to the client.
pub(crate) struct Flush(mpsc::UnboundedSender<Forward>);

impl Flush {
    pub(crate) async fn flush(self) {
        let (done, sent) = tokio::sync::oneshot::channel();
        if self.0.send(Forward::Flush(done)).is_ok() {
            let _ = sent.await;
        }
    }
}

/// A progress sink that forwards a worker's reports to the client as `notifications/progress`
/// with the client's own token, in order, from one task that ends when the call's sinks are
/// gone.
pub(crate) fn progress_forwarder(
    token: ProgressToken,
    peer: rmcp::Peer<RoleServer>,
) -> (ProgressSink, Flush) {
    let (reports, mut received) = mpsc::unbounded_channel::<Forward>();
    let token_json = serde_json::to_value(&token).unwrap_or(Value::Null);
    tokio::spawn(async move {
        while let Some(forward) = received.recv().await {
            let report = match forward {
                Forward::Report(report) => report,
                Forward::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let mut param = ProgressNotificationParam::new(token.clone(), report.progress);
            if let Some(total) = report.total {
                param = param.with_total(total);
            }
            if let Some(message) = report.message {
                param = param.with_message(message);
            }
            if peer.notify_progress(param).await.is_err() {
                break; // the client is gone
            }
        }
    });
    let flush = Flush(reports.clone());
    let sink = ProgressSink::new(move |report| {
        let _ = reports.send(Forward::Report(report));
    })
    .with_token(token_json);
    (sink, flush)
}
