//! Positions in the ring: a lap counter in the high bits and a slot index in the low bits.
//!
//! Encoding the lap next to the index lets a capacity that is not a power of two advance without
//! a division, and keeps "full" a single comparison: the tail is exactly one lap ahead of the
//! head. Positions are `u64`, so at a billion operations per second the laps take centuries to
//! wrap; comparisons use wrapping differences all the same.

/// The arithmetic of positions for one capacity.
///
/// `one_lap` and `index_mask` are derived from `shift` and kept beside it, so the hot paths
/// (every push and pop finds a slot and computes the next position) read them instead of
/// rebuilding them from the shift each time: measured in the harness's loops, that was three
/// variable shifts and their moves per operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Positions {
    /// Number of usable slots.
    capacity: u64,
    /// `log2(one_lap)`; the index occupies the low `shift` bits.
    shift: u32,
    /// `1 << shift`.
    one_lap: u64,
    /// `one_lap - 1`: the bits of the index.
    index_mask: u64,
}

impl Positions {
    /// `capacity` must be at least 1 and at most 2^60 (the tail keeps bit 63 for its closed mark).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity as u64;
        // At least one bit, so that "published at p" (p + 1) and "free at the next lap"
        // (p + one_lap) differ even for a capacity of 1.
        let shift = capacity.next_power_of_two().trailing_zeros().max(1);
        let one_lap = 1 << shift;
        Self {
            capacity,
            shift,
            one_lap,
            index_mask: one_lap - 1,
        }
    }

    /// The distance between the same index on two consecutive laps.
    #[inline(always)]
    pub(crate) fn one_lap(&self) -> u64 {
        self.one_lap
    }

    /// The slot (offset into the buffer) that holds `position`: its index, the low part.
    ///
    /// Neighbouring positions share cache lines, as in crossbeam's `ArrayQueue`. Spreading
    /// them over 128-byte blocks (an exchange of index bits) was tried: a producer and a
    /// consumer side by side then no longer write the same line, but each item costs a line
    /// transfer of its own. In interleaved rounds against `ArrayQueue` on the project's 2-core
    /// VM, the median at one producer and one consumer was 0.71× with the spreading and 1.04×
    /// without, and the spread narrower without.
    #[inline(always)]
    pub(crate) fn slot_of(&self, position: u64) -> usize {
        (position & self.index_mask) as usize
    }

    /// The position after `position`.
    #[inline(always)]
    pub(crate) fn next(&self, position: u64) -> u64 {
        self.advance(position, 1)
    }

    /// The position `n` steps after `position`, for `n <= capacity`.
    #[inline(always)]
    pub(crate) fn advance(&self, position: u64, n: u64) -> u64 {
        let index = position & self.index_mask;
        if index + n < self.capacity {
            position.wrapping_add(n)
        } else {
            let lap = position & !self.index_mask;
            lap.wrapping_add(self.one_lap)
                .wrapping_add(index + n - self.capacity)
        }
    }

    /// How many positions lie from `head` (inclusive) to `tail` (exclusive), for `head <= tail`
    /// at most one lap apart.
    #[inline(always)]
    pub(crate) fn distance(&self, head: u64, tail: u64) -> u64 {
        let mask = self.index_mask;
        let laps = (tail & !mask).wrapping_sub(head & !mask) >> self.shift;
        laps.wrapping_mul(self.capacity)
            .wrapping_add(tail & mask)
            .wrapping_sub(head & mask)
    }
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
            let p = Positions::new(capacity);
            let mut seen = vec![false; capacity];
            let mut pos = 0;
            for step in 0..capacity {
                let slot = p.slot_of(pos);
                // `Queue::new` relies on it: the first lap's positions are the slots in order.
                assert_eq!(slot, step, "first lap of {capacity}");
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

    #[test]
    fn distance_counts_positions() {
        for capacity in [1usize, 3, 8, 10] {
            let p = Positions::new(capacity);
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
    fn a_position_lives_in_the_slot_of_its_index() {
        let p = Positions::new(10);
        assert_eq!(p.slot_of(0), 0);
        assert_eq!(p.slot_of(1), 1);
        // The second lap starts at `one_lap` (16) and serves slot 0 again.
        assert_eq!(p.slot_of(p.advance(0, 10)), 0);
        assert_eq!(p.slot_of(p.advance(7, 5)), 2);
    }
}
