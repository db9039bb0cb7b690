//! What the route memos (`gateway::Memo`, `httproute::Memo`) share: kept
//! values by their object's address, each with the Services its
//! translation looked up, dropped when what every translation reads
//! besides the object changed, or when its Services did, and swept when
//! a translation no longer finds its object. The Ingress memo keeps more
//! per entry (canaries, parsed annotations) and has its own.

use std::collections::{BTreeSet, HashMap};

use crate::snapshot::{Key, Snapshot};

pub(super) struct Kept<T> {
    /// What the last translation read besides the objects (a reduced
    /// snapshot, compared by identity, and anything else as text).
    inputs: Option<(Snapshot, String)>,
    /// By the object's address; each value holds its object, so the
    /// address is not reused while it is here.
    entries: HashMap<usize, Entry<T>>,
    /// Counts translations: an entry holds the last one that found it.
    epoch: u64,
    /// Values the last translation took again.
    reused: usize,
}

struct Entry<T> {
    value: T,
    /// Every Service the translation looked up (found or not): a change to
    /// one of them or to its EndpointSlices drops the entry.
    services: Box<[Key]>,
    epoch: u64,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self {
            inputs: None,
            entries: HashMap::new(),
            epoch: 0,
            reused: 0,
        }
    }
}

impl<T> Kept<T> {
    pub(super) fn reused(&self) -> usize {
        self.reused
    }

    /// Starts a translation: drops every entry if `inputs` or `context`
    /// differ from the last translation's, else those whose Services
    /// changed.
    pub(super) fn start(&mut self, inputs: Snapshot, context: String) {
        self.epoch = self.epoch.wrapping_add(1);
        self.reused = 0;
        match &self.inputs {
            Some((last, last_context))
                if *last_context == context
                    && last.same_objects_besides_ingresses_and_services(&inputs) =>
            {
                let changed = last.changed_services(&inputs);
                if !changed.is_empty() {
                    self.entries
                        .retain(|_, e| !e.services.iter().any(|k| changed.contains(k)));
                }
            }
            _ => self.entries.clear(),
        }
        self.inputs = Some((inputs, context));
    }

    /// The value kept for the object at `address`, counted as taken again
    /// and kept past this translation.
    pub(super) fn take(&mut self, address: usize) -> Option<&mut T> {
        let e = self.entries.get_mut(&address)?;
        e.epoch = self.epoch;
        self.reused += 1;
        Some(&mut e.value)
    }

    /// Keeps a value made by this translation, with the Services it read.
    pub(super) fn insert(&mut self, address: usize, value: T, services: BTreeSet<Key>) {
        let entry = Entry {
            value,
            services: services.into_iter().collect(),
            epoch: self.epoch,
        };
        self.entries.insert(address, entry);
    }

    /// The value at `address`, found earlier in this translation.
    pub(super) fn get_mut(&mut self, address: usize) -> Option<&mut T> {
        self.entries.get_mut(&address).map(|e| &mut e.value)
    }

    /// Ends a translation: drops the entries it did not find.
    pub(super) fn sweep(&mut self) {
        let epoch = self.epoch;
        self.entries.retain(|_, e| e.epoch == epoch);
    }
}
