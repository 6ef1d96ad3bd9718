//! How one table is compared: its columns in the target's form, its key, the key and row
//! hashes of a batch, the comparison of source rows with the target's map, and the tally of
//! differences with their keys.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;
use inlet_core::validation::TableReadBack;
use inlet_core::{within_years, TableSchema};

use super::ranges::{has_canonical_text, key_values, row_hashes, KeyRanges};
use super::target::{Entry, TargetRows};
use super::{Context, Keys};
use crate::JobError;

/// Counts and names of one table's differences in one round.
pub(super) struct Tally {
    pub(super) max_keys: usize,
    pub(super) source_rows: u64,
    pub(super) missing: u64,
    pub(super) extra: u64,
    pub(super) different: u64,
    pub(super) missing_keys: Vec<String>,
    pub(super) extra_keys: Vec<String>,
    pub(super) different_keys: Vec<String>,
    pub(super) differing: HashSet<u128>,
    pub(super) differing_source_rows: u64,
}

impl Tally {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            max_keys,
            source_rows: 0,
            missing: 0,
            extra: 0,
            different: 0,
            missing_keys: Vec::new(),
            extra_keys: Vec::new(),
            different_keys: Vec::new(),
            differing: HashSet::new(),
            differing_source_rows: 0,
        }
    }

    /// Every target row no source row matched is extra.
    pub(super) fn extras(&mut self, state: &TargetRows) {
        let mut extra: Vec<(u128, u32)> = state
            .rows
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(k, e)| (*k, e.count))
            .collect();
        extra.sort_unstable();
        for (k, count) in extra {
            self.extra += u64::from(count);
            self.differing.insert(k);
            if self.extra_keys.len() < self.max_keys {
                if let Some(text) = state.keys.get(&k) {
                    self.extra_keys.push(text.clone());
                }
            }
        }
        self.differing_source_rows = self
            .differing
            .iter()
            .filter_map(|k| state.rows.get(k))
            .map(|e| u64::from(e.source_rows))
            .sum();
    }
}

/// How one table is compared: its columns in the target's form, its key, and the encoders.
pub(super) struct TablePlan {
    pub(super) source: TableSchema,
    /// The columns compared, named and typed as the target's files hold them.
    pub(super) columns: SchemaRef,
    /// Indexes into `columns` of the key; all columns for a table without a key.
    pub(super) key: Vec<usize>,
    pub(super) key_names: Vec<String>,
    pub(super) rows: RowConverter,
    pub(super) keys: RowConverter,
    /// The target's table; taken while it is read.
    pub(super) back: Option<Box<dyn TableReadBack>>,
    /// The key ranges of a table compared by range hashes this round.
    pub(super) ranges: Option<KeyRanges>,
}

impl TablePlan {
    /// The plan, or the reason the table cannot be compared.
    pub(super) async fn new(
        ctx: &Context<'_>,
        source: &TableSchema,
    ) -> Result<Result<Self, String>, JobError> {
        Ok(match ctx.target.read_back(source).await? {
            Ok(back) => Self::build(source, back),
            Err(why) => Err(why),
        })
    }

    /// The plan of `source` compared with its read-back `back`, over the target's columns by
    /// its key (none: every column, a multiset), or why the table cannot be compared.
    pub(super) fn build(
        source: &TableSchema,
        back: Box<dyn TableReadBack>,
    ) -> Result<Self, String> {
        let columns = back.columns();
        let key_names = back.key();
        let key: Vec<usize> = if key_names.is_empty() {
            (0..columns.fields().len()).collect()
        } else {
            let mut key = Vec::new();
            for k in &key_names {
                match columns.index_of(k) {
                    Ok(i) => key.push(i),
                    Err(_) => {
                        return Err(format!(
                            "key column {k} is not a column of the target table"
                        ))
                    }
                }
            }
            key
        };
        let field = |i: usize| SortField::new(columns.field(i).data_type().clone());
        let rows = RowConverter::new((0..columns.fields().len()).map(field).collect());
        let keys = RowConverter::new(key.iter().map(|&i| field(i)).collect());
        let (rows, keys) = match (rows, keys) {
            (Ok(r), Ok(k)) => (r, k),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!("its column types cannot be compared: {e}"))
            }
        };
        Ok(Self {
            source: source.clone(),
            columns,
            key,
            key_names,
            rows,
            keys,
            back: Some(back),
            ranges: None,
        })
    }

    /// The columns' types as the target holds them, when every one has a canonical text (see
    /// [`super::ranges`]), or the column that has none.
    pub(super) fn canonical_types(&self) -> Result<Vec<arrow_schema::DataType>, String> {
        if self.columns.fields().len() != self.source.columns.len() {
            return Err("the target's columns are not the source's".into());
        }
        let mut types = Vec::with_capacity(self.source.columns.len());
        for f in self.columns.fields() {
            if !has_canonical_text(f.data_type()) {
                return Err(format!(
                    "column {} ({}) has no canonical text both sides render alike",
                    f.name(),
                    f.data_type()
                ));
            }
            types.push(f.data_type().clone());
        }
        Ok(types)
    }

    /// With range hashes: each row's key range.
    pub(super) fn range_indexes(&self, columns: &[ArrayRef]) -> Result<Option<Vec<u32>>, String> {
        let Some(ranges) = &self.ranges else {
            return Ok(None);
        };
        let n = columns.first().map_or(0, |c| c.len());
        Ok(Some(match (&ranges.key, self.key.first()) {
            (Some(_), Some(&k)) => key_values(&columns[k])?
                .into_iter()
                .map(|v| ranges.index_of(v))
                .collect(),
            _ => vec![0; n],
        }))
    }

    /// `batch`'s columns in the plan's order and types: cast where a file holds another type
    /// (Iceberg widens a smallint), NULL where it lacks the column (added since it was written).
    pub(super) fn conform(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, String> {
        self.columns
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                Some(a) if a.data_type() == f.data_type() => Ok(a.clone()),
                Some(a) => arrow_cast::cast(a, f.data_type())
                    .map_err(|e| format!("column {}: cannot compare its values: {e}", f.name())),
            })
            .collect()
    }

    /// Key hashes and row hashes of `columns`' rows.
    pub(super) fn hashes(
        &self,
        columns: &[ArrayRef],
        keep: Option<&[bool]>,
    ) -> Result<(Vec<u128>, Vec<u64>), String> {
        let key_cols: Vec<ArrayRef> = self.key.iter().map(|&i| columns[i].clone()).collect();
        let keys = self
            .keys
            .convert_columns(&key_cols)
            .map_err(|e| format!("cannot encode keys: {e}"))?;
        let n = columns.first().map_or(0, |c| c.len());
        let mut kh = Vec::with_capacity(n);
        for i in 0..n {
            kh.push(hash128(keys.row(i).as_ref()));
        }
        // A table compared by range hashes: the hash of its canonical text, which the range
        // sums add up (equal values, equal text); else the hash of its Arrow row encoding.
        if self.ranges.is_some() {
            return Ok((kh, row_hashes(columns, keep)?));
        }
        let rows = self
            .rows
            .convert_columns(columns)
            .map_err(|e| format!("cannot encode rows: {e}"))?;
        let rh = (0..n).map(|i| hash64(rows.row(i).as_ref(), 0x5a)).collect();
        Ok((kh, rh))
    }

    /// The key of row `i` as text: `id=5`, `(a=1, b=x)`.
    pub(super) fn key_text(&self, columns: &[ArrayRef], i: usize) -> String {
        let options = FormatOptions::default().with_null("NULL");
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|&c| {
                let value = ArrayFormatter::try_new(columns[c].as_ref(), &options)
                    .map(|f| f.value(i).to_string())
                    .unwrap_or_else(|_| "?".into());
                // A long text key is named by its start.
                let value = match value.char_indices().nth(100) {
                    Some((at, _)) => format!("{}…", &value[..at]),
                    None => value,
                };
                format!("{}={}", self.columns.field(c).name(), value)
            })
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            format!("({})", parts.join(", "))
        }
    }

    /// Compares one source batch with the target's rows.
    pub(super) fn compare_source(
        &self,
        ctx: &Context<'_>,
        batch: &RecordBatch,
        state: &mut TargetRows,
        only: &Keys,
        tally: &mut Tally,
    ) -> Result<(), JobError> {
        let fail = |m: String| JobError::Failed(format!("{}: {m}", self.source.id));
        let checked;
        let batch = match ctx.policy {
            Some(policy) => match within_years(&self.source, policy, batch) {
                Ok(b) => {
                    checked = b;
                    &checked
                }
                // The load fails on such a value (policy `fail`): compared as it is, it differs.
                Err(_) => batch,
            },
            None => batch,
        };
        let written = match &self.back {
            Some(back) => back.written_source_batch(batch)?,
            None => batch.clone(),
        };
        let columns = self.conform(&written).map_err(fail)?;
        let (keys, rows) = self.hashes(&columns, None).map_err(fail)?;
        let ranges = self.range_indexes(&columns).map_err(fail)?;
        for (i, (k, r)) in keys.into_iter().zip(rows).enumerate() {
            if !only.keeps(k, ranges.as_ref().map(|r| r[i])) {
                continue;
            }
            tally.source_rows += 1;
            match state.rows.get_mut(&k) {
                Some(e) if e.count > 0 => {
                    e.count -= 1;
                    e.source_rows += 1;
                    if e.row != r {
                        tally.different += 1;
                        tally.differing.insert(k);
                        if tally.different_keys.len() < tally.max_keys {
                            tally.different_keys.push(self.key_text(&columns, i));
                        }
                    }
                }
                _ => {
                    tally.missing += 1;
                    state
                        .rows
                        .entry(k)
                        .or_insert(Entry {
                            row: r,
                            count: 0,
                            source_rows: 0,
                            range: 0,
                        })
                        .source_rows += 1;
                    tally.differing.insert(k);
                    if tally.missing_keys.len() < tally.max_keys {
                        tally.missing_keys.push(self.key_text(&columns, i));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A 64-bit hash of `bytes` (SipHash with fixed keys: the same in one process, which is all a
/// comparison needs), seeded by `seed`.
pub(super) fn hash64(bytes: &[u8], seed: u8) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

/// A 128-bit hash of a key: two 64-bit hashes, so distinct keys of a table never meet in
/// practice.
pub(super) fn hash128(bytes: &[u8]) -> u128 {
    (u128::from(hash64(bytes, 1)) << 64) | u128::from(hash64(bytes, 2))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::validate::glob;
    use crate::validate::target::TargetRows;
    use arrow_array::StringArray;

    #[test]
    pub(super) fn globs_match_table_names() {
        assert!(glob("public.*", "public.orders"));
        assert!(glob("public.orders", "public.orders"));
        assert!(!glob("public.order", "public.orders"));
        assert!(glob("*.ord?rs", "shop.orders"));
        assert!(!glob("shop.*", "public.orders"));
    }

    use arrow_array::{Int32Array, Int64Array};
    use arrow_schema::{DataType, Field};
    use inlet_core::{Column, TableId};

    pub(super) fn table(keyed: bool) -> TableSchema {
        let column = |name: &str, t: DataType| Column {
            name: name.into(),
            source_type: "test".into(),
            field: Field::new(name, t, true),
            distinct_values: None,
        };
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![column("id", DataType::Int64), column("v", DataType::Int32)],
            primary_key: if keyed { vec!["id".into()] } else { Vec::new() },
        }
    }

    /// Rows of `(id, v)`.
    type Rows<'a> = &'a [(Option<i64>, Option<i32>)];

    pub(super) fn batch(table: &TableSchema, rows: Rows<'_>) -> RecordBatch {
        let ids: Int64Array = rows.iter().map(|r| r.0).collect();
        let vs: Int32Array = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_new(table.arrow_schema(), vec![Arc::new(ids), Arc::new(vs)]).unwrap()
    }

    /// Applies the target's batches (each with its ops, None for a LOAD file), compares the
    /// source's rows, and returns (rows compared, missing, extra, different, their keys).
    pub(super) fn compare(
        keyed: bool,
        target: &[(Rows<'_>, Option<&[&str]>)],
        source: Rows<'_>,
    ) -> (u64, u64, u64, u64, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = crate::sink::Target::new(
            &crate::config::TargetConfig::Parquet(
                inlet_sink_parquet::ParquetTargetConfig::with_url(dir.path().display().to_string()),
            ),
            "t",
        )
        .unwrap();
        let t = table(keyed);
        let back = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(sink.read_back(&t))
            .unwrap()
            .unwrap();
        let plan = TablePlan::build(&t, back).unwrap();
        let ctx = Context {
            target: &sink,
            policy: None,
            max_keys: 10,
            progress: false,
            memory_mb: 64,
        };
        let mut state = TargetRows {
            rows: HashMap::new(),
            keys: HashMap::new(),
            sums: None,
        };
        for (rows, ops) in target {
            let ops = ops.map(|o| StringArray::from(o.to_vec()));
            plan.apply(&batch(&t, rows), ops.as_ref(), &Keys::All, &mut state)
                .unwrap();
        }
        let mut tally = Tally::new(10);
        plan.compare_source(&ctx, &batch(&t, source), &mut state, &Keys::All, &mut tally)
            .unwrap();
        tally.extras(&state);
        let mut named = [tally.missing_keys, tally.different_keys].concat();
        named.sort();
        (
            tally.source_rows,
            tally.missing,
            tally.extra,
            tally.different,
            named,
        )
    }

    #[test]
    pub(super) fn changes_replay_over_the_load_by_key() {
        let load: Rows = &[
            (Some(1), Some(10)),
            (Some(2), Some(20)),
            (Some(3), Some(30)),
        ];
        let changes: Rows = &[
            (Some(2), Some(21)),
            (Some(3), None),
            (Some(4), Some(40)),
            (Some(1), Some(10)),
        ];
        let ops: &[&str] = &["U", "D", "I", "I"];
        // id 2 updated, 3 deleted, 4 inserted, 1 inserted a second time (extra).
        let source = [
            (Some(1), Some(10)),
            (Some(2), Some(21)),
            (Some(4), Some(40)),
        ];
        assert_eq!(
            compare(true, &[(load, None), (changes, Some(ops))], &source),
            (3, 0, 1, 0, vec![])
        );
        // The source has id 5 the target lacks, and another v for id 4.
        let source = [
            (Some(1), Some(10)),
            (Some(2), Some(21)),
            (Some(4), Some(41)),
            (Some(5), Some(50)),
        ];
        let (_, missing, _, different, named) =
            compare(true, &[(load, None), (changes, Some(ops))], &source);
        assert_eq!((missing, different), (1, 1));
        assert_eq!(named, ["id=4", "id=5"]);
    }

    #[test]
    pub(super) fn a_truncate_empties_the_table() {
        let load: Rows = &[(Some(1), Some(10)), (Some(2), Some(20))];
        let changes: Rows = &[(None, None), (Some(9), Some(90))];
        let ops: &[&str] = &["T", "I"];
        assert_eq!(
            compare(
                true,
                &[(load, None), (changes, Some(ops))],
                &[(Some(9), Some(90))]
            ),
            (1, 0, 0, 0, vec![])
        );
    }

    #[test]
    pub(super) fn a_table_without_a_key_is_a_multiset() {
        let load: Rows = &[(Some(1), Some(1)), (Some(1), Some(1)), (Some(2), None)];
        let changes: Rows = &[(Some(1), Some(1))];
        let ops: &[&str] = &["D"];
        // One of the two equal rows deleted: the source's second copy is missing.
        let source = [(Some(1), Some(1)), (Some(1), Some(1)), (Some(2), None)];
        let (rows, missing, extra, different, named) =
            compare(false, &[(load, None), (changes, Some(ops))], &source);
        assert_eq!((rows, missing, extra, different), (3, 1, 0, 0));
        assert_eq!(named, ["(id=1, v=1)"]);
    }

    #[test]
    pub(super) fn hashes_tell_keys_apart() {
        assert_ne!(hash128(b"a"), hash128(b"b"));
        assert_eq!(hash128(b"a"), hash128(b"a"));
    }
}
