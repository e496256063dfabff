//! Cutting long strings to a bound: head and tail kept, UTF-8 safe, with a marker.

/// A 32-bit FNV-1a hash, as 8 hex digits: enough to tell two cut values apart.
pub fn short_hash(bytes: &[u8]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Returns `value` unchanged when it fits in `max` bytes; otherwise its head and tail around
/// a marker saying how many bytes were cut and a hash of the whole value, in at most `max`
/// bytes, never splitting a character.
///
/// ```
/// let long = "é".repeat(30_000); // 60,000 bytes
/// let cut = flowbalancer_telemetry::truncate(&long, 500).unwrap();
/// assert!(cut.len() <= 500);
/// assert!(cut.contains("bytes cut"));
/// assert!(flowbalancer_telemetry::truncate("short", 500).is_none());
/// ```
pub fn truncate(value: &str, max: usize) -> Option<String> {
    if value.len() <= max {
        return None;
    }
    let hash = short_hash(value.as_bytes());
    // The marker's length depends on the number it carries; size it for the worst case.
    let marker_len = format!(" …[{} bytes cut, fnv {hash}]… ", value.len()).len();
    let room = max.saturating_sub(marker_len);
    let head_end = floor_boundary(value, room / 2 + room % 2);
    let tail_start = ceil_boundary(
        value,
        value.len() - (room - head_end.min(room)).min(value.len()),
    );
    let tail_start = tail_start.max(head_end);
    let cut = tail_start - head_end;
    Some(format!(
        "{} …[{cut} bytes cut, fnv {hash}]… {}",
        &value[..head_end],
        &value[tail_start..]
    ))
}

/// Truncates every long string in `value` (recursively); returns how many were cut.
pub(crate) fn truncate_json(value: &mut serde_json::Value, max: usize) -> usize {
    match value {
        serde_json::Value::String(s) => match truncate(s, max) {
            Some(cut) => {
                *s = cut;
                1
            }
            None => 0,
        },
        serde_json::Value::Array(items) => items.iter_mut().map(|v| truncate_json(v, max)).sum(),
        serde_json::Value::Object(map) => map.values_mut().map(|v| truncate_json(v, max)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_kilobytes_with_multibyte_characters_fit_in_the_bound() {
        for filler in ["a", "é", "€", "𝄞", "a€𝄞é"] {
            let value = filler.repeat(50_000 / filler.len() + 7);
            for max in [64, 500, 512, 1000] {
                let cut = truncate(&value, max).unwrap();
                assert!(cut.len() <= max, "{filler} {max}: {}", cut.len());
                let first = value.chars().next().unwrap();
                assert!(cut.starts_with(first) || max < 80, "the head is kept");
                let cut_bytes: usize = cut
                    .split("…[")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                let kept = cut.len()
                    - format!(
                        " …[{cut_bytes} bytes cut, fnv {}]… ",
                        short_hash(value.as_bytes())
                    )
                    .len();
                assert_eq!(
                    kept + cut_bytes,
                    value.len(),
                    "the marker counts exactly what was cut"
                );
            }
        }
    }

    #[test]
    fn head_and_tail_are_kept() {
        let value = format!("HEAD{}TAIL", "x".repeat(10_000));
        let cut = truncate(&value, 200).unwrap();
        assert!(cut.starts_with("HEAD") && cut.ends_with("TAIL"), "{cut}");
    }
}
