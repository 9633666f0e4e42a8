//! Counts of what is held per key (connections per peer address, event
//! streams per signing key), each held as a [`Slot`] that gives its count
//! back when dropped: what the caps on open things are built on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// How many of something each key holds, and all keys together.
pub struct Tally<K>(Mutex<Held<K>>);

struct Held<K> {
    by_key: HashMap<K, usize>,
    total: usize,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(Mutex::new(Held {
            by_key: HashMap::new(),
            total: 0,
        }))
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    /// Count one more for `key`, unless it holds `per_key` already or all
    /// keys together hold `in_all`: which of the two refused, as `Err`.
    pub fn enter(
        self: &Arc<Self>,
        key: &K,
        per_key: usize,
        in_all: usize,
    ) -> Result<Slot<K>, Refused> {
        let mut held = self.0.lock().expect("no panic while counting");
        if held.total >= in_all {
            return Err(Refused::InAll);
        }
        let count = held.by_key.entry(key.clone()).or_default();
        if *count >= per_key {
            return Err(Refused::PerKey);
        }
        *count += 1;
        held.total += 1;
        Ok(Slot {
            tally: self.clone(),
            key: key.clone(),
        })
    }

    /// What `key` holds now.
    #[cfg(test)]
    pub fn held_by(&self, key: &K) -> usize {
        self.0
            .lock()
            .expect("no panic while counting")
            .by_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// Which cap a [`Tally::enter`] met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerKey,
    InAll,
}

/// One counted thing, uncounted when dropped (a key holding nothing is
/// forgotten).
pub struct Slot<K: Eq + Hash> {
    tally: Arc<Tally<K>>,
    key: K,
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.tally.0.lock().expect("no panic while counting");
        if let Some(count) = held.by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.by_key.remove(&self.key);
            }
            held.total -= 1;
        }
    }
}
