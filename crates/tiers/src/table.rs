//! The route table: which tier serves a method first, and which tiers it falls back to.
//!
//! Looked up on every routed call, so the exact routes are hashed with a small
//! multiply-rotate hash instead of SipHash: the table is built from the configuration
//! only, so a caller's method names can make a lookup slower but cannot grow the table.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The route of a method: the tiers a call tries, in order, worked out once when the router
/// is built (a call only drops the tiers that say they do not offer its method).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The primary tier, then its fallbacks: the route's own list (without the primary), or
    /// else every later tier.
    pub(crate) order: Box<[usize]>,
}

impl Route {
    /// The route to `primary` with its own `fallback` list, or with every tier after it
    /// (of `tiers`) when it has none.
    pub(crate) fn new(primary: usize, fallback: Option<&[usize]>, tiers: usize) -> Self {
        let rest: Vec<usize> = match fallback {
            Some(list) => list.iter().copied().filter(|&i| i != primary).collect(),
            None => (primary.saturating_add(1)..tiers).collect(),
        };
        Self {
            order: std::iter::once(primary).chain(rest).collect(),
        }
    }

    /// The primary tier.
    #[cfg(test)]
    fn primary(&self) -> usize {
        self.order[0]
    }
}

/// Exact routes, prefix routes (longest first) and the default route.
#[derive(Debug)]
pub(crate) struct RouteTable {
    exact: HashMap<Box<str>, Route, BuildHasherDefault<MethodHasher>>,
    prefixes: Vec<(String, Route)>,
    default: Route,
}

impl RouteTable {
    pub(crate) fn new(
        exact: impl IntoIterator<Item = (String, Route)>,
        mut prefixes: Vec<(String, Route)>,
        default: Route,
    ) -> Self {
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            exact: exact
                .into_iter()
                .map(|(method, route)| (method.into_boxed_str(), route))
                .collect(),
            prefixes,
            default,
        }
    }

    /// The route of `method`: its exact route, else the longest matching prefix, else the
    /// default.
    pub(crate) fn route(&self, method: &str) -> &Route {
        if let Some(route) = self.exact.get(method) {
            return route;
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| method.starts_with(prefix.as_str()))
            .map(|(_, route)| route)
            .unwrap_or(&self.default)
    }
}

/// A multiply-rotate hash over 8-byte words (the FxHash family): a few nanoseconds for a
/// method name, where SipHash takes tens.
#[derive(Default, Clone, Copy)]
pub(crate) struct MethodHasher(u64);

impl MethodHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

/// The last 1 to 7 bytes of a name as one word, read with at most two loads (overlapping
/// when the tail is not 4 or 8 bytes long): copying them byte by byte into a zeroed word
/// and reading it back stalls on store forwarding, and this runs for every routed call.
fn tail_word(rest: &[u8]) -> u64 {
    let len = rest.len();
    let at = |i: usize| u64::from(rest.get(i).copied().unwrap_or(0));
    if len >= 4 {
        let (Some(head), Some(tail)) = (rest.first_chunk::<4>(), rest.last_chunk::<4>()) else {
            return 0;
        };
        u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*tail)) << 32
    } else {
        // 1 to 3 bytes: the first, the middle and the last (some the same byte), and the
        // length, so that "a" and "aa" differ.
        at(0) | at(len / 2) << 8 | at(len.saturating_sub(1)) << 16 | (len as u64) << 24
    }
}

impl Hasher for MethodHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(tail_word(rest));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // The table takes its control bits from the top of the hash: bring the well-mixed
        // high bits of the last multiplication down too.
        self.0.rotate_left(26)
    }
}

/// The tiers of one call's chain, without a heap allocation for up to 8 tiers.
#[derive(Default)]
pub(crate) struct Chain {
    inline: [u32; 8],
    len: u8,
    more: Vec<usize>,
}

impl Chain {
    pub(crate) fn push(&mut self, index: usize) {
        let slot = usize::from(self.len);
        match u32::try_from(index) {
            // In order: once one index went to `more`, the rest follow it there.
            Ok(small) if slot < self.inline.len() && self.more.is_empty() => {
                self.inline[slot] = small;
                self.len += 1;
            }
            _ => self.more.push(index),
        }
    }

    pub(crate) fn count(&self) -> usize {
        usize::from(self.len) + self.more.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.inline[..usize::from(self.len)]
            .iter()
            .map(|&index| index as usize)
            .chain(self.more.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use std::hash::Hash;

    use super::*;

    fn route(primary: usize) -> Route {
        Route::new(primary, None, primary.saturating_add(1))
    }

    #[test]
    fn exact_then_longest_prefix_then_default() {
        let table = RouteTable::new(
            [("tools/call".to_string(), route(1))],
            vec![
                ("tools/".to_string(), route(2)),
                ("tools/li".to_string(), route(3)),
            ],
            route(0),
        );
        assert_eq!(table.route("tools/call").primary(), 1);
        assert_eq!(table.route("tools/list").primary(), 3);
        assert_eq!(table.route("tools/other").primary(), 2);
        assert_eq!(table.route("resources/read").primary(), 0);
        assert_eq!(table.route("").primary(), 0);
    }

    #[test]
    fn many_exact_routes_all_found() {
        let methods: Vec<String> = (0..500)
            .map(|i| format!("method_{i}_{}", "x".repeat(i % 17)))
            .collect();
        let table = RouteTable::new(
            methods
                .iter()
                .enumerate()
                .map(|(i, m)| (m.clone(), route(i))),
            Vec::new(),
            route(usize::MAX),
        );
        for (i, method) in methods.iter().enumerate() {
            assert_eq!(table.route(method).primary(), i, "{method}");
        }
        assert_eq!(table.route("method_").primary(), usize::MAX);
    }

    #[test]
    fn tail_words_tell_apart_names_of_each_short_length() {
        let names = [
            "a", "aa", "aaa", "ab", "ba", "abc", "acb", "echo", "echa", "ech", "hello", "hellp",
            "jello", "abcdefg", "abcdefh", "bbcdefg",
        ];
        let words: std::collections::HashSet<u64> =
            names.iter().map(|n| tail_word(n.as_bytes())).collect();
        assert_eq!(words.len(), names.len());
        let hash = |n: &str| {
            let mut h = MethodHasher::default();
            n.hash(&mut h);
            h.finish()
        };
        assert_ne!(hash("tools/call"), hash("tools/cal"));
        assert_ne!(hash("tools/callx"), hash("tools/cally"));
    }

    #[test]
    fn route_order_is_primary_then_own_list_or_every_later_tier() {
        assert_eq!(&*Route::new(1, None, 4).order, [1, 2, 3]);
        assert_eq!(&*Route::new(3, None, 4).order, [3]);
        // The primary is not tried twice when its own list names it.
        assert_eq!(&*Route::new(2, Some(&[0, 2, 1]), 4).order, [2, 0, 1]);
        assert_eq!(&*Route::new(0, Some(&[]), 4).order, [0]);
    }

    #[test]
    fn chain_spills_past_eight_tiers_in_order() {
        let mut chain = Chain::default();
        for i in 0..12 {
            chain.push(i);
        }
        assert_eq!(chain.count(), 12);
        assert_eq!(
            chain.iter().collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>()
        );
    }
}
