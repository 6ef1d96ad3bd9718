//! The primary-key index: key → where the live row is (data file and row, or a row of the
//! open batch). Sized for memory, not convenience: one `u64 → u64` entry per row, at most
//! 17 bytes per bucket of a hash table kept between 7/16 and 7/8 full, so under 40 bytes per
//! row.
//!
//! A single integer key is stored as its value, so it is exact. Any other key is stored as a
//! 64-bit hash of its row encoding; to stay exact, an insert whose hash is already present is
//! checked against the stored row's real key by the caller, and keys that truly collide move
//! to a side table keyed by their full encoding (the main entry becomes [`COLLIDED`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;

/// Marks a hash shared by distinct live keys: look in the side table.
pub(crate) const COLLIDED: u64 = u64::MAX;
/// The "file" of rows still in the open (uncommitted) batch.
pub(crate) const PENDING_FILE: u32 = u32::MAX - 1;

/// Packs (file, row) into one u64.
pub(crate) fn loc(file: u32, row: u32) -> u64 {
    (u64::from(file) << 32) | u64::from(row)
}

pub(crate) fn unpack(l: u64) -> (u32, u32) {
    ((l >> 32) as u32, l as u32)
}

/// Mixes an already well-distributed (or sequential integer) u64 for the hash table: a folded
/// 128-bit multiply, so sequential keys spread over the table's control bits.
#[derive(Default, Clone, Copy)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * 0x9E37_79B9_7F4A_7C15_u128;
        (m as u64) ^ ((m >> 64) as u64)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, u64, BuildHasherDefault<MixHasher>>;

/// How keys are turned into index keys.
pub(crate) struct KeyCodec {
    /// Key column types as written in data files.
    types: Vec<DataType>,
    /// A single integer key: its value is the index key (exact).
    exact_int: bool,
    converter: Option<RowConverter>,
}

impl KeyCodec {
    pub(crate) fn new(types: Vec<DataType>, nullable: bool) -> Result<Self, String> {
        let exact_int = types.len() == 1
            && !nullable
            && matches!(
                types[0],
                DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::Date32
            );
        let converter = if exact_int {
            None
        } else {
            Some(
                RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())
                    .map_err(|e| format!("key columns cannot be indexed: {e}"))?,
            )
        };
        Ok(Self {
            types,
            exact_int,
            converter,
        })
    }

    pub(crate) fn types(&self) -> &[DataType] {
        &self.types
    }

    /// Index keys of every row of `columns` (the key columns, in key order, file types).
    pub(crate) fn hashes(&self, columns: &[ArrayRef]) -> Result<Vec<u64>, String> {
        if self.exact_int {
            let Some(column) = columns.first() else {
                return Err("no key column given".into());
            };
            let values = arrow_cast::cast(column, &DataType::Int64)
                .map_err(|e| format!("key column: {e}"))?;
            let values = values
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or("key column did not cast to Int64")?;
            return Ok(values.values().iter().map(|v| *v as u64).collect());
        }
        let rows = self.rows(columns)?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut h = std::hash::DefaultHasher::new();
                h.write(r.as_ref());
                h.finish()
            })
            .collect())
    }

    /// The exact encoding of one row's key.
    pub(crate) fn key_bytes(&self, columns: &[ArrayRef], row: usize) -> Result<Arc<[u8]>, String> {
        let sliced: Vec<ArrayRef> = columns.iter().map(|c| c.slice(row, 1)).collect();
        if self.exact_int {
            return Ok(Arc::from(self.hashes(&sliced)?[0].to_le_bytes().as_slice()));
        }
        let rows = self.rows(&sliced)?;
        Ok(Arc::from(rows.row(0).as_ref()))
    }

    fn rows(&self, columns: &[ArrayRef]) -> Result<arrow_row::Rows, String> {
        let Some(converter) = &self.converter else {
            return Err("row encoding of an integer key".into());
        };
        converter
            .convert_columns(columns)
            .map_err(|e| format!("key columns cannot be encoded: {e}"))
    }

    /// Whether index keys are the key values themselves (no collisions possible).
    pub(crate) fn is_exact(&self) -> bool {
        self.exact_int
    }
}

/// Key → location of the live row.
#[derive(Default)]
pub(crate) struct PkIndex {
    map: Map,
    /// Keys whose hash is shared with another live key, by full encoding.
    exact: HashMap<Arc<[u8]>, u64>,
    /// Entries of `map` that are [`COLLIDED`].
    collided: usize,
}

/// What the index holds for a hash.
pub(crate) enum Entry {
    Absent,
    /// One key with this hash lives at this location.
    One(u64),
    /// Several keys share the hash: the caller must look up the full key.
    Collided,
}

impl PkIndex {
    pub(crate) fn entry(&self, hash: u64) -> Entry {
        match self.map.get(&hash) {
            None => Entry::Absent,
            Some(&COLLIDED) => Entry::Collided,
            Some(&l) => Entry::One(l),
        }
    }

    pub(crate) fn exact_get(&self, key: &[u8]) -> Option<u64> {
        self.exact.get(key).copied()
    }

    /// Sets the location of the only key with this hash.
    pub(crate) fn set(&mut self, hash: u64, location: u64) {
        self.map.insert(hash, location);
    }

    pub(crate) fn remove(&mut self, hash: u64) {
        self.map.remove(&hash);
    }

    /// Sets the location of a key whose hash is collided.
    pub(crate) fn exact_set(&mut self, key: Arc<[u8]>, location: u64) {
        self.exact.insert(key, location);
    }

    pub(crate) fn exact_remove(&mut self, key: &[u8]) {
        self.exact.remove(key);
    }

    /// Two distinct keys share `hash`: both go to the side table.
    pub(crate) fn collide(&mut self, hash: u64, existing: (Arc<[u8]>, u64), new: (Arc<[u8]>, u64)) {
        if self.map.insert(hash, COLLIDED) != Some(COLLIDED) {
            self.collided += 1;
        }
        self.exact.insert(existing.0, existing.1);
        self.exact.insert(new.0, new.1);
    }

    pub(crate) fn clear(&mut self) {
        self.map = Map::default();
        self.exact.clear();
        self.collided = 0;
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Gives memory back after many deletes (the table never shrinks by itself), keeping the
    /// bytes per row within bound.
    pub(crate) fn shrink_if_sparse(&mut self) {
        // shrink_to_fit leaves the table at least 7/16 full, i.e. under 39 bytes per row; a
        // table only drops below that bound through deletes.
        let len = self.len();
        if self.map.capacity() > 64 && self.heap_bytes() > 40 * len.max(1) {
            self.map.shrink_to_fit();
        }
    }

    /// Live keys in the index (collided hashes count once per key).
    pub(crate) fn len(&self) -> usize {
        self.map.len() - self.collided + self.exact.len()
    }

    /// Heap bytes of the index: the hash table's buckets (16-byte entry plus one control
    /// byte each; the table holds at most 7/8 of its buckets) and the side table.
    pub(crate) fn heap_bytes(&self) -> usize {
        let buckets = if self.map.capacity() == 0 {
            0
        } else {
            (self.map.capacity() * 8 / 7).next_power_of_two()
        };
        let exact: usize = self.exact.keys().map(|k| k.len() + 16 + 8 + 16 + 1).sum();
        buckets * (16 + 1) + exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, StringArray};

    #[test]
    fn bytes_per_row_under_40() {
        let mut index = PkIndex::default();
        for n in [1_000usize, 100_000, 1_000_000] {
            index.clear();
            for i in 0..n as u64 {
                index.set(i, loc(0, i as u32));
            }
            let per_row = index.heap_bytes() as f64 / index.len() as f64;
            assert!(per_row <= 40.0, "{n} rows: {per_row} bytes/row");
        }
        // After deleting most rows the table gives memory back.
        for i in 0..900_000u64 {
            index.remove(i);
        }
        index.shrink_if_sparse();
        let per_row = index.heap_bytes() as f64 / index.len() as f64;
        assert!(per_row <= 40.0, "after deletes: {per_row} bytes/row");
    }

    #[test]
    fn int_keys_are_exact_and_strings_hash() {
        let ints = KeyCodec::new(vec![DataType::Int32], false).unwrap();
        assert!(ints.is_exact());
        let col: ArrayRef = Arc::new(Int32Array::from(vec![-1, 7]));
        assert_eq!(ints.hashes(&[col]).unwrap(), vec![u64::MAX, 7]);
        let strings = KeyCodec::new(vec![DataType::Utf8, DataType::Int32], false).unwrap();
        assert!(!strings.is_exact());
        let a: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "b"]));
        let b: ArrayRef = Arc::new(Int32Array::from(vec![1, 1, 1]));
        let h = strings.hashes(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(h[0], h[1]);
        assert_ne!(h[0], h[2]);
        assert_ne!(
            strings.key_bytes(&[a.clone(), b.clone()], 0).unwrap(),
            strings.key_bytes(&[a, b], 2).unwrap()
        );
    }

    #[test]
    fn collided_keys_resolve_exactly() {
        let mut index = PkIndex::default();
        index.set(5, loc(0, 1));
        let (k1, k2): (Arc<[u8]>, Arc<[u8]>) = (Arc::from(&b"one"[..]), Arc::from(&b"two"[..]));
        index.collide(5, (k1.clone(), loc(0, 1)), (k2.clone(), loc(1, 2)));
        assert!(matches!(index.entry(5), Entry::Collided));
        assert_eq!(index.exact_get(&k1), Some(loc(0, 1)));
        assert_eq!(index.exact_get(&k2), Some(loc(1, 2)));
        assert_eq!(index.len(), 2);
    }
}
