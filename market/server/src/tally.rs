//! Counts of what is held per key (connections per peer address, event
//! streams per signing key), each held as a [`Slot`] that gives its count
//! back when dropped: what the caps on open things are built on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// How many of something each key holds.
pub struct Tally<K>(Mutex<HashMap<K, usize>>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    /// Count one more for `key`, unless it holds `per_key` already or all
    /// keys together hold `in_all`: which of the two refused, as `Err`.
    pub fn enter(self: &Arc<Self>, key: &K, per_key: usize, in_all: usize) -> Result<Slot<K>, Refused> {
        let mut held = self.0.lock().expect("no panic while counting");
        if held.values().sum::<usize>() >= in_all {
            return Err(Refused::InAll);
        }
        let count = held.entry(key.clone()).or_default();
        if *count >= per_key {
            return Err(Refused::PerKey);
        }
        *count += 1;
        Ok(Slot { tally: self.clone(), key: key.clone() })
    }

    /// What `key` holds now.
    pub fn held_by(&self, key: &K) -> usize {
        self.0.lock().expect("no panic while counting").get(key).copied().unwrap_or(0)
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
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}
