//! State that outlives a table swap: one [`KeyedStore`] per kind (upstream
//! endpoints, retry budgets, active health checks; later rate-limit buckets
//! and auth caches), keyed by the identity of what the state describes plus
//! the settings it was made with.
//!
//! A table build asks the store for each value its rules need
//! ([`KeyedStore::get_or_insert_with`]) and keeps the `Arc`s it gets: the
//! request path reads them through the table and never touches the store,
//! so it takes no lock. The store itself holds only weak references, so a
//! value lives exactly as long as some table uses it:
//!
//! - unchanged between two tables (same key): the new table gets the same
//!   value, and its state carries on;
//! - changed settings: a different key, a fresh value;
//! - no longer named by any table: dropped with the last table that held
//!   it, once the requests still running on that table are done (a value
//!   with a background task, a health check, stops it in its `Drop`).
//!
//! [`KeyedStore::prune`] then forgets the dead entries, after each publish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Values of one kind by key, shared by every table that names the key.
pub struct KeyedStore<K, V> {
    entries: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for KeyedStore<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V> KeyedStore<K, V> {
    /// The live value for `key`, or a new one from `make`. Table builds
    /// only: this takes the store's lock.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        match self.get_or_make(key, || Ok::<V, Infallible>(make())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) for values that
    /// cannot always be made: `None` from `make` stores nothing.
    pub fn try_get_or_insert_with(
        &self,
        key: K,
        make: impl FnOnce() -> Option<V>,
    ) -> Option<Arc<V>> {
        self.get_or_make(key, || make().ok_or(())).ok()
    }

    fn get_or_make<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        let mut entries = self.lock();
        if let Some(v) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok(v);
        }
        let v = Arc::new(make()?);
        entries.insert(key, Arc::downgrade(&v));
        Ok(v)
    }

    /// Forgets the entries no table holds any more (their values are
    /// already dropped); after each publish.
    pub fn prune(&self) {
        self.lock().retain(|_, v| v.strong_count() > 0);
    }

    /// Values some table still holds.
    pub fn live(&self) -> usize {
        self.lock()
            .values()
            .filter(|v| v.strong_count() > 0)
            .count()
    }

    /// Every live value, for work done on all of them off the request
    /// path (the lock is held only to list them).
    pub fn values(&self) -> Vec<Arc<V>> {
        self.lock().values().filter_map(Weak::upgrade).collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Weak<V>>> {
        // A poisoned map only means a builder panicked mid-insert; the map
        // itself is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops, as a health check stops its task in its own.
    struct Tracked(Arc<AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_same_key_while_held_is_the_same_value() {
        let store: KeyedStore<(&str, u32), u32> = KeyedStore::default();
        let a = store.get_or_insert_with(("web", 20), || 1);
        let again = store.get_or_insert_with(("web", 20), || 2);
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(*again, 1);
        assert_eq!(store.live(), 1);
    }

    #[test]
    fn other_settings_are_another_value() {
        let store: KeyedStore<(&str, u32), u32> = KeyedStore::default();
        let a = store.get_or_insert_with(("web", 20), || 1);
        let b = store.get_or_insert_with(("web", 30), || 2);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((*a, *b), (1, 2));
        assert_eq!(store.live(), 2);
    }

    #[test]
    fn a_value_no_table_holds_is_dropped_then_forgotten() {
        let drops = Arc::new(AtomicUsize::new(0));
        let store: KeyedStore<&str, Tracked> = KeyedStore::default();
        let old_table = store.get_or_insert_with("web", || Tracked(Arc::clone(&drops)));
        // A second table built while the first is live shares the value.
        let new_table = store.get_or_insert_with("web", || unreachable!());
        drop(old_table);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(store.live(), 1);

        // The last table using it goes: the value goes with it, before any
        // prune; the prune forgets the entry.
        drop(new_table);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(store.live(), 0);
        assert_eq!(store.lock().len(), 1);
        store.prune();
        assert_eq!(store.lock().len(), 0);

        // Named again later: a fresh value.
        let fresh = store.get_or_insert_with("web", || Tracked(Arc::clone(&drops)));
        assert_eq!(store.live(), 1);
        drop(fresh);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn prune_keeps_what_a_table_holds() {
        let store: KeyedStore<u8, u8> = KeyedStore::default();
        let kept = store.get_or_insert_with(1, || 10);
        drop(store.get_or_insert_with(2, || 20));
        store.prune();
        assert_eq!(store.lock().len(), 1);
        assert!(Arc::ptr_eq(&kept, &store.get_or_insert_with(1, || 11)));
        assert_eq!(store.values().iter().map(|v| **v).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn a_value_that_cannot_be_made_stores_nothing() {
        let store: KeyedStore<u8, u8> = KeyedStore::default();
        assert!(store.try_get_or_insert_with(1, || None).is_none());
        assert_eq!(store.lock().len(), 0);
        let v = store.try_get_or_insert_with(1, || Some(3));
        assert_eq!(v.as_deref(), Some(&3));
    }
}
