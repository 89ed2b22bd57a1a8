//! Which directions between nodes a partition cuts: one bit per ordered pair of nodes, so
//! that a partition of a large network costs a bit per pair it cuts and every envelope
//! asks in constant time whether it may pass.

/// The set of cut directions `(from, to)`. Rows are per sender and grow on demand, so
/// nodes added after a fault are not cut by it, as a fault only names the nodes it knew.
#[derive(Debug, Default)]
pub(crate) struct Cuts {
    rows: Vec<Vec<u64>>,
    any: bool,
}

impl Cuts {
    /// Cuts the directions from every node of `a` to every other node of `b` (and back
    /// with `both_ways`): one pass of whole words per row, as a partition of a large
    /// network cuts a large share of all pairs.
    pub(crate) fn cut_between(&mut self, a: &[usize], b: &[usize], both_ways: bool) {
        self.cut_rows(a, b);
        if both_ways {
            self.cut_rows(b, a);
        }
    }

    fn cut_rows(&mut self, from: &[usize], to: &[usize]) {
        let Some(&max) = to.iter().max() else {
            return;
        };
        let mut mask = vec![0u64; max / 64 + 1];
        for &y in to {
            mask[y / 64] |= 1 << (y % 64);
        }
        for &x in from {
            if self.rows.len() <= x {
                self.rows.resize_with(x + 1, Vec::new);
            }
            let row = &mut self.rows[x];
            if row.len() < mask.len() {
                row.resize(mask.len(), 0);
            }
            for (w, m) in row.iter_mut().zip(&mask) {
                *w |= m;
            }
            // A node is never cut from itself (no fault sets that bit).
            if let Some(w) = row.get_mut(x / 64) {
                *w &= !(1 << (x % 64));
            }
            self.any = true;
        }
    }

    /// Whether the direction from `from` to `to` is cut.
    #[inline]
    pub(crate) fn is_cut(&self, from: usize, to: usize) -> bool {
        self.any
            && self
                .rows
                .get(from)
                .and_then(|row| row.get(to / 64))
                .is_some_and(|w| w & (1 << (to % 64)) != 0)
    }

    /// Heals every cut.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.any = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_per_direction_and_heal_at_once() {
        let mut c = Cuts::default();
        assert!(!c.is_cut(0, 1));
        c.cut_between(&[0], &[1, 130], false);
        assert!(c.is_cut(0, 1) && c.is_cut(0, 130));
        assert!(!c.is_cut(1, 0) && !c.is_cut(130, 0) && !c.is_cut(0, 129));
        c.cut_between(&[2], &[2, 3], true);
        assert!(c.is_cut(2, 3) && c.is_cut(3, 2) && !c.is_cut(2, 2));
        c.clear();
        assert!(!c.is_cut(0, 1) && !c.is_cut(2, 3));
    }
}
