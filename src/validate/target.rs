//! The target side of a comparison: a table's rows, read back as readers see them (the sink's
//! [`inlet_core::validation::TableReadBack`]: Parquet `LOAD` files then change files replayed;
//! Iceberg the current snapshot's live rows), into a map by key or into key-range sums.

use std::collections::HashMap;

use arrow_array::{Array, RecordBatch, StringArray};
use inlet_core::validation::ReadBackStep;

use super::compare::TablePlan;
use super::ranges::{row_hashes, RangeSum};
use super::{Context, Keys, BYTES_PER_ROW};
use crate::JobError;

/// The target's rows of one table: key hash → (row hash, copies left to match), and, when the
/// round is restricted to suspects, the key as text.
pub(super) struct TargetRows {
    pub(super) rows: HashMap<u128, Entry>,
    pub(super) keys: HashMap<u128, String>,
    /// Instead of `rows`: the count and hash of each key range, when the table was read for
    /// its range hashes and holds inserts only (Iceberg's live rows, Parquet `LOAD` files):
    /// no map of every row.
    pub(super) sums: Option<Vec<RangeSum>>,
}

#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub(super) row: u64,
    pub(super) count: u32,
    /// Source rows read with this key, matched or not: a recheck of the key reads them again.
    pub(super) source_rows: u32,
    /// With range hashes: its key range (and `row` is the hash of its canonical text).
    pub(super) range: u32,
}

impl TablePlan {
    /// The table's rows as the target holds them (restricted to `only` when given), or why
    /// they cannot be read as a state. With `sums` (the number of key ranges), a table that
    /// holds inserts only is read into the sums of its ranges instead (see [`TargetRows`]).
    pub(super) async fn read_target(
        &mut self,
        ctx: &Context<'_>,
        only: &Keys,
        estimate: Option<u64>,
        sums: Option<usize>,
    ) -> Result<Result<TargetRows, String>, JobError> {
        let mut state = TargetRows {
            rows: HashMap::new(),
            keys: HashMap::new(),
            sums: None,
        };
        // Sized once from the target's count or the source's estimate, as far as
        // `--memory-mb` allows (a stale estimate must not size it past that): growing the map
        // would hold its old and new tables at once.
        let budget = (ctx.memory_mb.max(1) << 20) / BYTES_PER_ROW;
        let mut reserved = false;
        let Some(mut back) = self.back.take() else {
            return Ok(Ok(state));
        };
        let plan = &*self;
        let read = back
            .read(&mut |step| match step {
                ReadBackStep::Begin { inserts_only, rows } => {
                    state.rows.clear();
                    state.keys.clear();
                    // Change files are replayed by key: only inserts can be summed.
                    state.sums = sums
                        .filter(|_| inserts_only)
                        .map(|n| vec![RangeSum::default(); n]);
                    if state.sums.is_none() && !reserved {
                        let expected = only.expected_rows(rows.or(estimate).unwrap_or(0));
                        state
                            .rows
                            .reserve(usize::try_from(expected.min(budget)).unwrap_or(0));
                        reserved = true;
                    }
                    Ok(())
                }
                ReadBackStep::Rows { batch, ops } => plan.apply(batch, ops, only, &mut state),
            })
            .await;
        self.back = Some(back);
        if let Err(why) = read? {
            return Ok(Err(why));
        }
        Ok(Ok(state))
    }

    /// Applies one batch of the target (inserts, or the operations `ops` says) to `state`.
    pub(super) fn apply(
        &self,
        batch: &RecordBatch,
        ops: Option<&StringArray>,
        only: &Keys,
        state: &mut TargetRows,
    ) -> Result<(), String> {
        let columns = self.conform(batch)?;
        if let Some(sums) = state.sums.as_mut() {
            // Inserts only (see `read_target`): each row into its range's sum.
            let hashes = row_hashes(&columns, None)?;
            let ranges = self.range_indexes(&columns)?.unwrap_or_default();
            for (h, r) in hashes.into_iter().zip(ranges) {
                if only.keeps(0, Some(r)) {
                    if let Some(s) = sums.get_mut(r as usize) {
                        s.add(h, 1);
                    }
                }
            }
            return Ok(());
        }
        // With range hashes: each row's key range, and the rows of the ranges kept (a pass's
        // ranges, or those whose hashes differed), the only ones whose text is hashed.
        let ranges = self.range_indexes(&columns)?;
        let keep: Option<Vec<bool>> = match only {
            Keys::Only(_) => None,
            _ => ranges
                .as_ref()
                .map(|r| r.iter().map(|&x| only.keeps(0, Some(x))).collect()),
        };
        let (keys, rows) = self.hashes(&columns, keep.as_deref())?;
        let keyless = self.key_names.is_empty();
        for (i, (k, r)) in keys.into_iter().zip(rows).enumerate() {
            let op = ops.map_or("I", |o| if o.is_null(i) { "I" } else { o.value(i) });
            if op == "T" {
                state.rows.clear();
                state.keys.clear();
                continue;
            }
            let range = ranges.as_ref().map(|r| r[i]);
            if !only.keeps(k, range) {
                continue;
            }
            let range = range.unwrap_or(0);
            match op {
                "I" => {
                    let e = state.rows.entry(k).or_insert(Entry {
                        row: r,
                        count: 0,
                        source_rows: 0,
                        range,
                    });
                    e.row = r;
                    e.range = range;
                    e.count += 1;
                }
                "U" if keyless => {
                    return Err(
                        "an update of a table without a key cannot be replayed (its change \
                         files hold the new row only)"
                            .into(),
                    )
                }
                "U" => {
                    let e = state.rows.entry(k).or_insert(Entry {
                        row: r,
                        count: 1,
                        source_rows: 0,
                        range,
                    });
                    e.row = r;
                    e.range = range;
                }
                "D" if keyless => {
                    if let Some(e) = state.rows.get_mut(&k) {
                        e.count = e.count.saturating_sub(1);
                    }
                }
                "D" => {
                    state.rows.remove(&k);
                }
                other => return Err(format!("unknown operation {other:?}")),
            }
            if only.names_keys() && !state.keys.contains_key(&k) {
                state.keys.insert(k, self.key_text(&columns, i));
            }
        }
        Ok(())
    }
}
