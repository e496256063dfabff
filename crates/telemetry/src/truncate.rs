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

/// How large one event may grow: every string, every array and object, the nesting, the
/// number of fields, and the whole event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) max_string: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_items: usize,
    pub(crate) max_fields: usize,
    pub(crate) max_event_bytes: usize,
}

/// Cuts `value` to `bounds` (strings, items per array or object, depth); returns how many
/// cuts were made.
pub(crate) fn bound_json(value: &mut serde_json::Value, bounds: &Bounds, depth: usize) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => match truncate(s, bounds.max_string) {
            Some(cut) => {
                *s = cut;
                1
            }
            None => 0,
        },
        Value::Array(_) | Value::Object(_) if depth >= bounds.max_depth => {
            *value = Value::String(format!("…[nested deeper than {}]", bounds.max_depth));
            1
        }
        Value::Array(items) => {
            let mut cuts = 0;
            if items.len() > bounds.max_items {
                let more = items.len() - bounds.max_items;
                items.truncate(bounds.max_items);
                items.push(Value::String(format!("…[{more} more items]")));
                cuts += 1;
            }
            cuts + items
                .iter_mut()
                .map(|v| bound_json(v, bounds, depth + 1))
                .sum::<usize>()
        }
        Value::Object(map) => {
            let mut cuts = 0;
            if map.len() > bounds.max_items {
                let more = map.len() - bounds.max_items;
                let keep: Vec<String> = map.keys().take(bounds.max_items).cloned().collect();
                map.retain(|k, _| keep.contains(k));
                map.insert("…".into(), Value::String(format!("[{more} more keys]")));
                cuts += 1;
            }
            cuts + map
                .values_mut()
                .map(|v| bound_json(v, bounds, depth + 1))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// Cuts an event's fields to `bounds`: each value, then the number of fields, then the whole
/// event's size (the largest fields are replaced by a marker until it fits). Returns the cuts.
pub(crate) fn bound_fields(
    message: &mut String,
    fields: &mut serde_json::Map<String, serde_json::Value>,
    bounds: &Bounds,
) -> usize {
    use serde_json::Value;
    let mut cuts = 0;
    if let Some(short) = truncate(message, bounds.max_string) {
        *message = short;
        cuts += 1;
    }
    if fields.len() > bounds.max_fields {
        let more = fields.len() - bounds.max_fields;
        let keep: Vec<String> = fields.keys().take(bounds.max_fields).cloned().collect();
        fields.retain(|k, _| keep.contains(k));
        fields.insert("fields_cut".into(), Value::from(more));
        cuts += 1;
    }
    for value in fields.values_mut() {
        cuts += bound_json(value, bounds, 1);
    }
    // Most events are a few hundred bytes: measure them without serializing. JSON escaping
    // makes a string at most 6 times longer (`\u0000`), so a raw size below a sixth of the
    // bound cannot exceed it; only larger events are serialized to be measured exactly.
    let raw: usize = message.len()
        + fields
            .iter()
            .map(|(k, v)| k.len() + raw_size(v) + 4)
            .sum::<usize>();
    if raw.saturating_mul(6) <= bounds.max_event_bytes {
        return cuts;
    }
    let size = |fields: &serde_json::Map<String, Value>| {
        serde_json::to_vec(fields).map(|v| v.len()).unwrap_or(0) + message.len()
    };
    let mut total = size(fields);
    while total > bounds.max_event_bytes {
        // The largest field goes first.
        let Some((key, bytes)) = fields
            .iter()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0),
                )
            })
            .max_by_key(|(_, bytes)| *bytes)
        else {
            break;
        };
        if bytes <= 24 {
            break; // only small fields left: the field count bound keeps the rest in check
        }
        fields.insert(
            key,
            Value::String(format!("…[{bytes} bytes cut: event too large]")),
        );
        cuts += 1;
        total = size(fields);
    }
    cuts
}

/// The bytes of `value`'s strings and a small allowance per other element: a cheap stand-in
/// for its JSON size, before escaping.
fn raw_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| raw_size(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + raw_size(v))
                .sum::<usize>()
        }
        // Numbers are at most 24 characters; null, true, false at most 5.
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_string: 100,
            max_depth: 3,
            max_items: 4,
            max_fields: 5,
            max_event_bytes: 600,
        }
    }

    #[test]
    fn depth_items_fields_and_total_size_are_bounded() {
        let mut message = "m".repeat(1000);
        let mut fields = serde_json::Map::new();
        fields.insert(
            "a_deep".into(),
            serde_json::json!({"a": {"b": {"c": {"d": 1}}}}),
        );
        fields.insert(
            "a_wide".into(),
            serde_json::json!((0..100).collect::<Vec<_>>()),
        );
        fields.insert(
            "a_keys".into(),
            serde_json::Value::Object((0..50).map(|i| (format!("k{i}"), i.into())).collect()),
        );
        for i in 0..20 {
            fields.insert(format!("f{i}"), serde_json::json!("y".repeat(90)));
        }
        let cuts = bound_fields(&mut message, &mut fields, &bounds());
        assert!(cuts > 0);
        assert!(message.len() <= 100);
        assert!(fields.len() <= 6, "{} fields", fields.len());
        assert_eq!(fields["fields_cut"], 18);
        assert!(
            fields["a_deep"].to_string().contains("nested deeper"),
            "{}",
            fields["a_deep"]
        );
        assert_eq!(fields["a_keys"].as_object().unwrap().len(), 5);
        let wide = fields["a_wide"].as_array().unwrap();
        assert_eq!(wide.len(), 5);
        assert_eq!(wide[4], "…[96 more items]");
        let total = serde_json::to_vec(&fields).unwrap().len() + message.len();
        assert!(total <= 600, "{total} bytes");
    }

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
