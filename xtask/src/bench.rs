//! `cargo xtask bench [--quick] [FILTER]`: criterion benches side by side with peer crates,
//! then a report of throughput and ratios (ours / peer) in `target/bench-report.md`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cmd;

/// One measured benchmark.
struct Measurement {
    function: String,
    /// Items (elements) per second, when the bench declared a throughput.
    per_second: Option<f64>,
    /// Mean time per iteration, in nanoseconds.
    mean_ns: f64,
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut filter = None;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            other if other.starts_with('-') => {
                return Err(format!(
                    "unknown flag {other}; usage: cargo xtask bench [--quick] [FILTER]"
                ));
            }
            other => filter = Some(other.to_string()),
        }
    }
    let started = SystemTime::now();
    let extra_dir = cmd::root().join("target/bench-extra");
    let _ = fs::remove_dir_all(&extra_dir);
    fs::create_dir_all(&extra_dir).map_err(|e| format!("{}: {e}", extra_dir.display()))?;
    // The Python peers of the gateway benchmarks: the MCP SDK's server, FastMCP's proxy.
    if let Err(error) = crate::ci::e2e_venv().and_then(|_| crate::ci::fastmcp_venv()) {
        eprintln!(
            "the Python peers are not available ({error}); their rows are reported as not run"
        );
    }
    // The NATS bench's server.
    let nats_server = crate::nats::nats_server()
        .map_err(|error| {
            eprintln!("nats-server is not available ({error}); the NATS bench is skipped")
        })
        .ok();
    let mut command = cmd::cargo();
    if let Some(server) = &nats_server {
        command.env("NATS_SERVER", server);
    }
    command.args(["bench", "-p", "flowbalancer-benches", "--benches", "--"]);
    if quick {
        command.arg("--quick");
    }
    if let Some(filter) = &filter {
        command.arg(filter);
    }
    command.env("FLOWBALANCER_BENCH_EXTRA", &extra_dir);
    if quick {
        command.env("FLOWBALANCER_BENCH_QUICK", "1");
    }
    cmd::run(&mut command)?;

    let groups = collect(&cmd::root().join("target/criterion"), started)?;
    let report = render(&groups, &extra_dir, quick)?;
    let path = cmd::root().join("target/bench-report.md");
    fs::write(&path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{report}");
    eprintln!("report written to {}", path.display());
    Ok(())
}

/// Every benchmark.json written since `since`, grouped by "group / parameter".
fn collect(dir: &Path, since: SystemTime) -> Result<BTreeMap<String, Vec<Measurement>>, String> {
    let mut groups: BTreeMap<String, Vec<Measurement>> = BTreeMap::new();
    let mut files = Vec::new();
    find_files(dir, "benchmark.json", &mut files);
    for file in files {
        if !file.parent().is_some_and(|p| p.ends_with("new")) {
            continue;
        }
        let fresh = fs::metadata(&file)
            .and_then(|m| m.modified())
            .map(|t| t >= since)
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let read = |path: &Path| -> Result<serde_json::Value, String> {
            let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let benchmark = read(&file)?;
        let estimates = read(&file.with_file_name("estimates.json"))?;
        let mean_ns = estimates["mean"]["point_estimate"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let elements = benchmark["throughput"]["Elements"]
            .as_f64()
            .or_else(|| benchmark["throughput"]["Bytes"].as_f64());
        let group = benchmark["group_id"].as_str().unwrap_or("?").to_string();
        let key = match benchmark["value_str"].as_str() {
            Some(value) => format!("{group} / {value}"),
            None => group,
        };
        groups.entry(key).or_default().push(Measurement {
            function: benchmark["function_id"].as_str().unwrap_or("?").to_string(),
            per_second: elements.map(|n| n / (mean_ns * 1e-9)),
            mean_ns,
        });
    }
    Ok(groups)
}

fn find_files(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            find_files(&path, name, out);
        } else if path.file_name().is_some_and(|n| n == name) {
            out.push(path);
        }
    }
}

fn render(
    groups: &BTreeMap<String, Vec<Measurement>>,
    extra_dir: &Path,
    quick: bool,
) -> Result<String, String> {
    let mut out = String::new();
    out.push_str("# flowbalancer benchmark report\n\n");
    out.push_str(&format!(
        "Machine: {} cores, {}. Mode: {}. Ratio = ours / peer (higher is better for throughput).\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        if quick { "--quick (short samples)" } else { "full criterion samples" },
    ));
    for (group, measurements) in groups {
        out.push_str(&format!("## {group}\n\n| implementation | throughput | mean time / iter | ours ÷ this |\n|---|---:|---:|---:|\n"));
        let ours = measurements
            .iter()
            .find(|m| m.function.starts_with("flowbalancer"))
            .and_then(|m| m.per_second.or(Some(1e9 / m.mean_ns)));
        let mut sorted: Vec<&Measurement> = measurements.iter().collect();
        sorted.sort_by(|a, b| {
            let ka = a.per_second.unwrap_or(1e9 / a.mean_ns);
            let kb = b.per_second.unwrap_or(1e9 / b.mean_ns);
            kb.total_cmp(&ka)
        });
        for m in sorted {
            let rate = m.per_second.unwrap_or(1e9 / m.mean_ns);
            let ratio = ours
                .map(|o| format!("{:.2}×", o / rate))
                .unwrap_or_else(|| "–".into());
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                m.function,
                m.per_second.map(human_rate).unwrap_or_else(|| "–".into()),
                human_time(m.mean_ns),
                ratio
            ));
        }
        out.push('\n');
    }
    // Benches that measure what criterion does not (latency percentiles at a fixed rate,
    // start-up times) write their own Markdown sections here.
    let mut extras: Vec<PathBuf> = fs::read_dir(extra_dir)
        .map_err(|e| format!("{}: {e}", extra_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    extras.sort();
    for path in extras {
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

fn human_rate(per_second: f64) -> String {
    if per_second >= 1e9 {
        format!("{:.2} G/s", per_second / 1e9)
    } else if per_second >= 1e6 {
        format!("{:.1} M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k/s", per_second / 1e3)
    } else {
        format!("{per_second:.1} /s")
    }
}

fn human_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
