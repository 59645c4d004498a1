//! The names of the metrics table: the app labels its series use, each given a small id by the arbiter (which
//! alone writes them, before it forks the workers that count under them). Ids are never reused, so a label
//! stays bounded by the apps a server ever hosted. Id 0 is the empty label: a request no app took, and, as a
//! pool, the shared pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

/// How many names the table holds; past it, apps share the label `_OTHER`.
pub(crate) const NAMES: usize = 256;
/// App names are at most 64 bytes (the manifest's rule).
const NAME_BYTES: usize = 64;
/// The id of `_OTHER`, which the table full falls back on.
const OTHER: u32 = 1;

#[repr(C)]
struct Name {
    /// The name's length plus one; 0 while unused.
    length: AtomicU32,
    bytes: [AtomicU8; NAME_BYTES],
}

/// The table's names (zeroed: none yet; ids 0 and 1 are set by `init`).
#[repr(C)]
pub(crate) struct Names {
    names: [Name; NAMES],
}

impl Names {
    /// In the arbiter, before any worker: the reserved names.
    pub(crate) fn init(&self) {
        self.put(0, "");
        self.put(OTHER as usize, "_OTHER");
    }

    fn put(&self, id: usize, label: &str) {
        let name = &self.names[id];
        let bytes = name_bytes(label);
        for (cell, byte) in name.bytes.iter().zip(bytes) {
            cell.store(*byte, Ordering::Relaxed);
        }
        name.length.store(bytes.len() as u32 + 1, Ordering::Release);
    }

    /// In the arbiter: the id of `label`, given one if new (`_OTHER`'s when the table is full).
    pub(crate) fn register(&self, label: &str) -> u32 {
        if let Some(id) = self.find(label) {
            return id;
        }
        let free = (0..NAMES).find(|id| self.names[*id].length.load(Ordering::Acquire) == 0);
        match free {
            Some(id) => {
                self.put(id, label);
                id as u32
            }
            None => OTHER,
        }
    }

    /// The id of `label`, if it has one.
    pub(crate) fn find(&self, label: &str) -> Option<u32> {
        (0..NAMES).find(|id| self.get(*id as u32).as_deref() == Some(label)).map(|id| id as u32)
    }

    /// The name of `id`, if it has one.
    pub(crate) fn get(&self, id: u32) -> Option<String> {
        let name = self.names.get(id as usize)?;
        let length = (name.length.load(Ordering::Acquire) as usize).checked_sub(1)?.min(NAME_BYTES);
        let bytes: Vec<u8> = name.bytes[..length].iter().map(|cell| cell.load(Ordering::Relaxed)).collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Every name by id, for a worker's lookups.
    pub(crate) fn all(&self) -> HashMap<String, u32> {
        (0..NAMES as u32).filter_map(|id| Some((self.get(id)?, id))).collect()
    }
}

/// At most `NAME_BYTES` of `label`, cut on a character boundary.
fn name_bytes(label: &str) -> &[u8] {
    let mut length = label.len().min(NAME_BYTES);
    while !label.is_char_boundary(length) {
        length -= 1;
    }
    &label.as_bytes()[..length]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_stable_ids_and_the_full_table_falls_back_on_other() {
        // SAFETY: `Names` is atomics only, for which all-zero bytes are valid (no names).
        let names: Box<Names> = unsafe { Box::new_zeroed().assume_init() };
        names.init();
        assert_eq!(names.get(0).as_deref(), Some(""));
        assert_eq!(names.get(1).as_deref(), Some("_OTHER"));
        let shop = names.register("shop");
        assert_eq!(names.register("shop"), shop);
        assert_eq!(names.get(shop).as_deref(), Some("shop"));
        assert_eq!(names.all().get("shop"), Some(&shop));
        for index in 0..NAMES {
            names.register(&format!("app{index}"));
        }
        assert_eq!(names.register("late"), OTHER);
    }
}
