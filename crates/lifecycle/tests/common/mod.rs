//! Helpers: what /proc says about processes.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::{Duration, Instant};

/// (pid, state, ppid, pgrp) of every process.
pub fn processes() -> Vec<(u32, char, u32, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ..." — comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let state = fields[0].chars().next().unwrap_or('?');
        let ppid = fields[1].parse().unwrap_or(0);
        let pgrp = fields[2].parse().unwrap_or(0);
        out.push((pid, state, ppid, pgrp));
    }
    out
}

/// Live (not zombie) members of process group `pgid`.
pub fn live_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(_, state, _, pgrp)| pgrp == pgid && state != 'Z')
        .map(|(pid, ..)| pid)
        .collect()
}

/// Waits (up to 5 s) until `check` holds; signals and reaping are asynchronous by nature.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the group has `n` live members (the shell has started its children).
pub fn wait_for_members(pgid: u32, n: usize) {
    eventually("the process tree has started", || {
        live_members(pgid).len() >= n
    });
}

/// A shell that starts a grandchild in the background and then waits on another.
pub fn shell_with_grandchild() -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "sleep 600 & sleep 600"]);
    command
}

/// Every process of the group, in any state (zombies included).
pub fn any_members(pgid: u32) -> Vec<(u32, char, u32)> {
    processes()
        .into_iter()
        .filter(|&(_, _, _, pgrp)| pgrp == pgid)
        .map(|(pid, state, ppid, _)| (pid, state, ppid))
        .collect()
}

/// The group is entirely gone: no live process and no zombie (ours or init's) remains.
pub fn assert_tree_gone(pgid: u32) {
    eventually(
        "every process of the group is gone, zombies included",
        || any_members(pgid).is_empty(),
    );
}
