//! A bounded FIFO history: the oldest entry is dropped, and counted, when a new one does not fit.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Bounded<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> Bounded<T> {
    /// A history that keeps at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Bounded {
            // Grow on demand: a large configured history costs nothing until it is used.
            items: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// A history of `capacity` holding `items` (oldest first; the oldest past the bound are
    /// dropped and counted) after `dropped` were dropped already.
    pub fn restore(capacity: usize, items: Vec<T>, dropped: u64) -> Self {
        let mut history = Bounded::new(capacity);
        history.dropped = dropped;
        for item in items {
            history.push(item);
        }
        history
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        self.items.push_back(item);
    }

    /// Changes the bound; shrinking drops (and counts) the oldest entries.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.items.len() > self.capacity {
            self.items.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Entries dropped so far to stay within the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }

    /// The newest `n` entries, oldest first.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> + ExactSizeIterator {
        self.items.iter_mut()
    }

    pub fn last(&self, n: usize) -> impl Iterator<Item = &T> {
        self.items.iter().skip(self.items.len().saturating_sub(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_and_counts_exactly() {
        let mut h = Bounded::new(3);
        for i in 0..10 {
            h.push(i);
        }
        assert_eq!(h.iter().copied().collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!(h.dropped(), 7);
        assert_eq!(h.last(2).copied().collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(h.last(10).count(), 3);
    }

    #[test]
    fn shrinking_counts_the_evicted() {
        let mut h = Bounded::new(5);
        (0..5).for_each(|i| h.push(i));
        h.set_capacity(2);
        assert_eq!(h.iter().copied().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(h.dropped(), 3);
    }
}
