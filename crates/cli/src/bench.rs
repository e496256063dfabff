//! `flowbalancer bench`: a load generator with a progress bar and a report per tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flowbalancer::Balancer;
use flowbalancer::pool::LatencyHistogram;
use flowbalancer::tiers::CallOptions;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

pub(crate) struct Report {
    calls: u64,
    pub(crate) errors: u64,
    elapsed: Duration,
    latency: Arc<LatencyHistogram>,
    tiers: Vec<flowbalancer::tiers::TierStats>,
    tool: String,
    concurrency: usize,
}

impl Report {
    fn ms(d: Duration) -> String {
        format!("{:.3} ms", d.as_secs_f64() * 1000.0)
    }

    pub(crate) fn to_text(&self) -> String {
        let s = self.latency.summary();
        let mut text = format!(
            "{} calls of {:?} in {:.2}s with {} callers: {:.0} calls/s, {} errors\nlatency p50 {} p95 {} p99 {} max {}\n\n{:<10} {:>9} {:>9} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
            self.calls,
            self.tool,
            self.elapsed.as_secs_f64(),
            self.concurrency,
            self.calls as f64 / self.elapsed.as_secs_f64(),
            self.errors,
            Self::ms(s.p50),
            Self::ms(s.p95),
            Self::ms(s.p99),
            Self::ms(s.max),
            "tier",
            "calls",
            "served",
            "fb in",
            "fb out",
            "skips",
            "p50",
            "p95",
            "p99",
            "max"
        );
        for t in &self.tiers {
            text.push_str(&format!(
                "{:<10} {:>9} {:>9} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
                t.name,
                t.calls,
                t.successes,
                t.fallbacks_in,
                t.fallbacks_out,
                t.skips,
                Self::ms(t.latency.p50),
                Self::ms(t.latency.p95),
                Self::ms(t.latency.p99),
                Self::ms(t.latency.max)
            ));
        }
        text
    }

    pub(crate) fn to_json(&self) -> Value {
        let s = self.latency.summary();
        json!({
            "tool": self.tool,
            "concurrency": self.concurrency,
            "calls": self.calls,
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "calls_per_sec": self.calls as f64 / self.elapsed.as_secs_f64(),
            "latency_ms": { "p50": s.p50.as_secs_f64() * 1e3, "p95": s.p95.as_secs_f64() * 1e3, "p99": s.p99.as_secs_f64() * 1e3, "max": s.max.as_secs_f64() * 1e3 },
            "tiers": self.tiers,
        })
    }
}

pub(crate) async fn run(
    balancer: Arc<Balancer>,
    tool: &str,
    params: Value,
    duration: Duration,
    concurrency: usize,
) -> Report {
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(LatencyHistogram::new());
    let bar = ProgressBar::with_draw_target(
        Some(duration.as_millis() as u64),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (balancer, calls, errors, latency, params, tool) = (
                Arc::clone(&balancer),
                Arc::clone(&calls),
                Arc::clone(&errors),
                Arc::clone(&latency),
                params.clone(),
                tool.to_string(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match balancer
                        .call(&tool, params.clone(), CallOptions::default())
                        .await
                    {
                        Ok(_) => latency.record(t.elapsed()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = calls.load(Ordering::Relaxed);
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{done} calls, {:.0}/s",
            done as f64 / started.elapsed().as_secs_f64()
        ));
    }
    for caller in callers {
        let _ = caller.await;
    }
    bar.finish_and_clear();
    Report {
        calls: calls.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency,
        tiers: balancer.router().stats(),
        tool: tool.to_string(),
        concurrency,
    }
}
