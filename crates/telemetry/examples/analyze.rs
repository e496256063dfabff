//! Analyses the tool output on standard input: `some-tool 2>&1 | cargo run --example analyze`.

use std::io::Read;

fn main() -> std::io::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let analysis = flowbalancer_telemetry::analysis::analyze(&text);
    let json = serde_json::to_string_pretty(&analysis).map_err(std::io::Error::other)?;
    // An example program: its output is the point.
    std::io::Write::write_all(&mut std::io::stdout(), json.as_bytes())?;
    Ok(())
}
