//! A generation-checked slab for links, so a stale event never reaches a new link that
//! happens to reuse a slot.

/// Handle of a slab entry: slot index and the generation it was issued with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn insert(&mut self, value: T) -> Key {
        if let Some(index) = self.free.pop() {
            let e = &mut self.entries[index as usize];
            e.0 = e.0.wrapping_add(1);
            e.1 = Some(value);
            Key {
                index,
                generation: e.0,
            }
        } else {
            let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
            self.entries.push((0, Some(value)));
            Key {
                index,
                generation: 0,
            }
        }
    }

    pub(crate) fn get(&self, k: Key) -> Option<&T> {
        match self.entries.get(k.index as usize) {
            Some((g, v)) if *g == k.generation => v.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, k: Key) -> Option<&mut T> {
        match self.entries.get_mut(k.index as usize) {
            Some((g, v)) if *g == k.generation => v.as_mut(),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, k: Key) -> Option<T> {
        match self.entries.get_mut(k.index as usize) {
            Some((g, v)) if *g == k.generation => {
                let out = v.take();
                if out.is_some() {
                    self.free.push(k.index);
                }
                out
            }
            _ => None,
        }
    }

    /// Live keys in slot order (deterministic).
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(i, (g, _))| Key {
                index: i as u32,
                generation: *g,
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss_after_reuse() {
        let mut s = Slab::default();
        let a = s.insert(1);
        assert_eq!(s.remove(a), Some(1));
        let b = s.insert(2);
        assert_eq!(a.index, b.index);
        assert!(s.get(a).is_none());
        assert_eq!(s.get(b), Some(&2));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.keys(), vec![b]);
    }
}
