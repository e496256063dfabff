//! Positions in the ring: a lap counter in the high bits and a slot index in the low bits.
//!
//! Encoding the lap next to the index lets a capacity that is not a power of two advance without
//! a division, and keeps "full" a single comparison: the tail is exactly one lap ahead of the
//! head. Positions are `u64`, so at a billion operations per second the laps take centuries to
//! wrap; comparisons use wrapping differences all the same.

/// The arithmetic of positions for one capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Positions {
    /// Number of usable slots.
    capacity: u64,
    /// `log2(one_lap)`; the index occupies the low `shift` bits.
    shift: u32,
    /// Bits of the index that are exchanged to spread neighbouring positions over cache lines
    /// (0: no exchange).
    stripe_bits: u32,
}

impl Positions {
    /// `capacity` must be at least 1 and at most 2^62.
    pub(crate) fn new(capacity: usize, slot_size: usize) -> Self {
        let capacity = capacity as u64;
        // At least one bit, so that "published at p" (p + 1) and "free at the next lap"
        // (p + one_lap) differ even for a capacity of 1.
        let shift = capacity.next_power_of_two().trailing_zeros().max(1);
        Self {
            capacity,
            shift,
            stripe_bits: stripe_bits(capacity, slot_size),
        }
    }

    /// The distance between the same index on two consecutive laps.
    #[inline(always)]
    pub(crate) fn one_lap(&self) -> u64 {
        1 << self.shift
    }

    /// The slot (offset into the buffer) that holds `position`.
    #[inline(always)]
    pub(crate) fn slot_of(&self, position: u64) -> usize {
        let index = position & (self.one_lap() - 1);
        if self.stripe_bits == 0 {
            index as usize
        } else {
            // Exchange the lowest `stripe_bits` bits with the next `stripe_bits` bits: positions
            // p and p + 1 land `1 << stripe_bits` slots apart, on different cache lines, so a
            // producer and a consumer working next to each other do not share a line.
            let mask = (1u64 << self.stripe_bits) - 1;
            let low = index & mask;
            let mid = (index >> self.stripe_bits) & mask;
            let high = index & !((mask << self.stripe_bits) | mask);
            (high | (low << self.stripe_bits) | mid) as usize
        }
    }

    /// The position after `position`.
    #[inline(always)]
    pub(crate) fn next(&self, position: u64) -> u64 {
        self.advance(position, 1)
    }

    /// The position `n` steps after `position`, for `n <= capacity`.
    #[inline(always)]
    pub(crate) fn advance(&self, position: u64, n: u64) -> u64 {
        let index = position & (self.one_lap() - 1);
        if index + n < self.capacity {
            position.wrapping_add(n)
        } else {
            let lap = position & !(self.one_lap() - 1);
            lap.wrapping_add(self.one_lap())
                .wrapping_add(index + n - self.capacity)
        }
    }

    /// How many positions lie from `head` (inclusive) to `tail` (exclusive), for `head <= tail`
    /// at most one lap apart.
    #[inline(always)]
    pub(crate) fn distance(&self, head: u64, tail: u64) -> u64 {
        let mask = self.one_lap() - 1;
        let laps = (tail & !mask).wrapping_sub(head & !mask) >> self.shift;
        laps.wrapping_mul(self.capacity)
            .wrapping_add(tail & mask)
            .wrapping_sub(head & mask)
    }
}

/// How many index bits to exchange so that consecutive positions fall on different 128-byte
/// blocks (two cache lines, as adjacent-line prefetchers pair them). Only for power-of-two
/// capacities large enough to hold the exchange.
fn stripe_bits(capacity: u64, slot_size: usize) -> u32 {
    const BLOCK: usize = 128;
    if !capacity.is_power_of_two() || slot_size == 0 || slot_size >= BLOCK {
        return 0;
    }
    let per_block = (BLOCK / slot_size).next_power_of_two() as u64;
    let bits = per_block.trailing_zeros();
    if bits == 0 || capacity < per_block * per_block {
        return 0;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_a_permutation() {
        let capacities: &[usize] = if cfg!(miri) {
            &[1, 2, 3, 7, 64, 256]
        } else {
            &[1, 2, 3, 7, 64, 100, 256, 1024, 4096]
        };
        for &capacity in capacities {
            for slot_size in [8usize, 16, 24, 64, 200] {
                let p = Positions::new(capacity, slot_size);
                let mut seen = vec![false; capacity];
                let mut pos = 0;
                for _ in 0..capacity {
                    let slot = p.slot_of(pos);
                    assert!(slot < capacity, "slot {slot} out of range for {capacity}");
                    assert!(!seen[slot], "slot {slot} used twice for {capacity}");
                    seen[slot] = true;
                    pos = p.next(pos);
                }
                assert_eq!(
                    pos,
                    p.one_lap(),
                    "one lap of {capacity} ends at the next lap"
                );
            }
        }
    }

    #[test]
    fn distance_counts_positions() {
        for capacity in [1usize, 3, 8, 10] {
            let p = Positions::new(capacity, 16);
            let mut head = 0;
            for _ in 0..3 * capacity {
                let mut tail = head;
                for n in 0..=capacity as u64 {
                    assert_eq!(p.distance(head, tail), n);
                    assert_eq!(p.advance(head, n), tail);
                    tail = p.next(tail);
                }
                head = p.next(head);
            }
        }
    }

    #[test]
    fn neighbours_are_striped_for_small_slots() {
        let p = Positions::new(1024, 16);
        assert_eq!(p.slot_of(0), 0);
        assert_eq!(p.slot_of(1), 8, "8 slots of 16 bytes per 128-byte block");
    }
}
