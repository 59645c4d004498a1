//! A block of series in the metrics table: a fixed number of cells, each a key (what is counted, for which app,
//! with which labels) and its values (a histogram's buckets and sum, or a counter in the first value). One
//! process writes a block, with relaxed loads and stores; any may read it. A key is placed by hashing, so that a
//! worker finds its series in a probe or two.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A histogram's finite buckets; the value after them counts what is above the last.
pub(crate) const FINITE_BUCKETS: usize = 15;
/// The values of a cell: the buckets (the last one unbounded), then the sum in microseconds.
pub(crate) const VALUES: usize = FINITE_BUCKETS + 2;
const SUM: usize = FINITE_BUCKETS + 1;

/// OpenTelemetry's default bucket bounds for `http.server.request.duration`, in seconds.
pub(crate) const REQUEST_BOUNDS: [f64; FINITE_BUCKETS] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, f64::INFINITY];
/// Bounds for the time to create an instance (tens of microseconds for a small guest), in seconds.
pub(crate) const INSTANCE_BOUNDS: [f64; FINITE_BUCKETS] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5];

/// A cell's values, as read.
pub(crate) type Values = [u64; VALUES];

/// What a series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `http_server_request_duration_seconds`: field = method index * 1000 + status.
    Request = 1,
    /// `wasmcorn_guest_outcomes_total`: field = `Outcome` index.
    Outcome = 2,
    /// `wasmcorn_instance_creation_seconds`: field 0.
    Instance = 3,
}

/// A series' key: its kind, its app's name id and a field, packed into a non-zero `u32` (0 marks a free cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key(u32);

impl Key {
    pub(crate) fn new(kind: Kind, app: u32, field: u32) -> Key {
        Key(((kind as u32) << 28) | ((app & 0xfff) << 16) | (field & 0xffff))
    }

    pub(crate) fn from_raw(raw: u32) -> Key {
        Key(raw)
    }

    pub(crate) fn raw(self) -> u32 {
        self.0
    }

    pub(crate) fn kind(self) -> Option<Kind> {
        match self.0 >> 28 {
            1 => Some(Kind::Request),
            2 => Some(Kind::Outcome),
            3 => Some(Kind::Instance),
            _ => None,
        }
    }

    pub(crate) fn app(self) -> u32 {
        (self.0 >> 16) & 0xfff
    }

    pub(crate) fn field(self) -> u32 {
        self.0 & 0xffff
    }
}

#[repr(C)]
struct Cell {
    key: AtomicU32,
    values: [AtomicU64; VALUES],
}

/// A block of `N` cells (zeroed: empty).
#[repr(C)]
pub(crate) struct Series<const N: usize> {
    cells: [Cell; N],
}

impl<const N: usize> Series<N> {
    /// The cell of `key`, claimed if new; `None` when the block is full.
    fn cell(&self, key: u32) -> Option<&Cell> {
        let start = (key.wrapping_mul(0x9e37_79b9) as usize) % N;
        for probe in 0..N {
            let cell = &self.cells[(start + probe) % N];
            match cell.key.load(Ordering::Acquire) {
                found if found == key => return Some(cell),
                0 => {
                    cell.key.store(key, Ordering::Release);
                    return Some(cell);
                }
                _ => {}
            }
        }
        None
    }

    /// Adds one to counter `key`; false when the block is full.
    pub(crate) fn count(&self, key: u32) -> bool {
        self.cell(key).map(|cell| bump(&cell.values[0], 1)).is_some()
    }

    /// Records one observation of `seconds` in histogram `key` with `bounds`; false when the block is full.
    pub(crate) fn observe(&self, key: u32, bounds: &[f64; FINITE_BUCKETS], seconds: f64) -> bool {
        let Some(cell) = self.cell(key) else { return false };
        let bucket = bounds.iter().position(|bound| seconds <= *bound).unwrap_or(FINITE_BUCKETS);
        bump(&cell.values[bucket], 1);
        bump(&cell.values[SUM], (seconds * 1e6) as u64);
        true
    }

    /// Adds `values` to `key` (the arbiter folding a dead worker's block); false when the block is full.
    pub(crate) fn add_values(&self, key: u32, values: &Values) -> bool {
        let Some(cell) = self.cell(key) else { return false };
        for (cell, value) in cell.values.iter().zip(values) {
            bump(cell, *value);
        }
        true
    }

    /// Every used cell's key and values.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u32, Values)> + '_ {
        self.cells.iter().filter_map(|cell| {
            let key = cell.key.load(Ordering::Acquire);
            (key != 0).then(|| (key, std::array::from_fn(|index| cell.values[index].load(Ordering::Relaxed))))
        })
    }

    /// Empties every cell (the arbiter, once the block's worker is gone).
    pub(crate) fn clear(&self) {
        for cell in &self.cells {
            if cell.key.load(Ordering::Relaxed) != 0 {
                cell.values.iter().for_each(|value| value.store(0, Ordering::Relaxed));
                cell.key.store(0, Ordering::Release);
            }
        }
    }
}

/// One writer per cell: a plain load and store, not a locked read-modify-write.
fn bump(cell: &AtomicU64, amount: u64) {
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
}

/// Adds `more` into `total`.
pub(crate) fn add(total: &mut Values, more: &Values) {
    for (total, more) in total.iter_mut().zip(more) {
        *total = total.wrapping_add(*more);
    }
}

/// A histogram's count of observations.
pub(crate) fn observations(values: &Values) -> u64 {
    values[..=FINITE_BUCKETS].iter().sum()
}

/// A histogram's sum, in seconds.
pub(crate) fn sum_seconds(values: &Values) -> f64 {
    values[SUM] as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Box<Series<8>> {
        // SAFETY: a `Series` is atomics only, for which all-zero bytes are valid (an empty block).
        unsafe { Box::new_zeroed().assume_init() }
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let series = block();
        let key = Key::new(Kind::Request, 2, 1200).raw();
        assert!(series.observe(key, &REQUEST_BOUNDS, 0.003));
        assert!(series.observe(key, &REQUEST_BOUNDS, 0.005));
        assert!(series.observe(key, &REQUEST_BOUNDS, 11.0));
        let (found, values) = series.entries().next().unwrap();
        assert_eq!(found, key);
        assert_eq!(values[0], 2);
        assert_eq!(values[13], 0, "above 10 s");
        assert_eq!(values[1..=FINITE_BUCKETS].iter().sum::<u64>(), 1);
        assert_eq!(observations(&values), 3);
        assert!((sum_seconds(&values) - 11.008).abs() < 1e-6);
    }

    #[test]
    fn a_full_block_says_so_and_clear_empties_it() {
        let series = block();
        for app in 0..8 {
            assert!(series.count(Key::new(Kind::Outcome, app, 0).raw()));
        }
        assert!(!series.count(Key::new(Kind::Outcome, 9, 0).raw()));
        assert!(series.count(Key::new(Kind::Outcome, 3, 0).raw()), "a known key still counts");
        series.clear();
        assert_eq!(series.entries().count(), 0);
        let key = Key::new(Kind::Instance, 7, 0);
        assert_eq!((key.kind(), key.app(), key.field()), (Some(Kind::Instance), 7, 0));
    }
}
