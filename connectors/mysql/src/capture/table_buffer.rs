//! A captured table's buffered changes: rows of committed transactions and of the open one,
//! cut into change batches ([`inlet_core::change_schema`] layout) when taken, and into parts
//! when the open transaction grows too large to hold.

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use inlet_core::{change_schema, Op, Position, TableChanges, TableSchema, Unrepresentable};
use mysql_common::binlog::value::BinlogValue;

use super::transactions::OpenTxn;
use crate::catalog::MysqlTable;
use crate::error::MysqlError;
use crate::rows::Image;
use crate::types::MysqlType;
use crate::values::{ColumnBuilder, Origin, ValueError};

/// Per-table change builders.
pub(super) struct TableBuffer {
    pub(super) schema: TableSchema,
    pub(super) kinds: Vec<MysqlType>,
    /// Each column's value policy (`[values.columns]`, else the task's default).
    pub(super) policies: Vec<Unrepresentable>,
    /// Changes in an older shape of the table, cut off by a schema change, waiting to be taken.
    pub(super) segments: Vec<TableChanges>,
    pub(super) committed: Option<Position>,
    pub(super) data: Vec<ColumnBuilder>,
    /// Rows finished into arrays but not yet taken (data columns only); they precede the
    /// builders' rows.
    pub(super) carry: Option<RecordBatch>,
    /// Op of every buffered row (carry, then builders).
    pub(super) ops: Vec<Op>,
    /// Change columns of the committed rows (the open transaction's are filled in at commit).
    pub(super) positions: Vec<i64>,
    pub(super) commit_times: Vec<i64>,
    pub(super) txids: Vec<i64>,
    pub(super) rows: usize,
    pub(super) rows_open: usize,
    pub(super) first: Option<Position>,
    pub(super) last: Option<Position>,
    pub(super) last_commit_time: i64,
    pub(super) parts_taken: u32,
}

impl TableBuffer {
    pub(super) fn new(table: &MysqlTable, committed: Option<Position>) -> Self {
        let kinds: Vec<MysqlType> = table.columns.iter().map(|c| c.decoder.clone()).collect();
        Self {
            schema: table.schema.clone(),
            data: kinds
                .iter()
                .map(|k| ColumnBuilder::new(k, 1024).with_times_as_text(table.times_as_text))
                .collect(),
            kinds,
            policies: table.columns.iter().map(|c| c.policy).collect(),
            segments: Vec::new(),
            committed,
            carry: None,
            ops: Vec::new(),
            positions: Vec::new(),
            commit_times: Vec::new(),
            txids: Vec::new(),
            rows: 0,
            rows_open: 0,
            first: None,
            last: None,
            last_commit_time: 0,
            parts_taken: 0,
        }
    }

    pub(super) fn error(&self, message: impl Into<String>) -> MysqlError {
        MysqlError::Table {
            table: self.schema.id.clone(),
            message: message.into(),
        }
    }

    /// Every buffered row's table columns (carry first); the buffer's data is left empty.
    fn drain_data(&mut self) -> Result<RecordBatch, MysqlError> {
        let arrays: Vec<ArrayRef> = self.data.iter_mut().map(ColumnBuilder::finish).collect();
        // The change batch's data fields: nullable, since a delete or TRUNCATE row has NULLs.
        let full = change_schema(&self.schema);
        let schema = Arc::new(arrow_schema::Schema::new(
            full.fields()[inlet_core::CHANGE_META_COLUMNS..].to_vec(),
        ));
        let n = arrays.first().map_or(0, |a| a.len());
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
        let batch = RecordBatch::try_new_with_options(schema.clone(), arrays, &options)
            .map_err(|e| self.error(format!("building a change batch: {e}")))?;
        match self.carry.take() {
            None => Ok(batch),
            Some(carry) => arrow_select::concat::concat_batches(&schema, [&carry, &batch])
                .map_err(|e| self.error(format!("building a change batch: {e}"))),
        }
    }

    /// The first `n` buffered rows as a change batch with these change columns; the rest stays.
    fn split_front(
        &mut self,
        n: usize,
        positions: Vec<i64>,
        commit_times: Vec<i64>,
        txids: Vec<i64>,
    ) -> Result<RecordBatch, MysqlError> {
        let all = self.drain_data()?;
        let n = n.min(all.num_rows());
        if all.num_rows() > n {
            self.carry = Some(all.slice(n, all.num_rows() - n));
        }
        let data = all.slice(0, n);
        let ops: Vec<Op> = self.ops.drain(..n).collect();
        self.rows -= n;
        let mut op = StringBuilder::with_capacity(n, n);
        for o in &ops {
            op.append_value(o.as_str());
        }
        let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        ts.append_slice(&commit_times);
        let mut pos = Int64Builder::with_capacity(n);
        pos.append_slice(&positions);
        let mut txid = Int64Builder::with_capacity(n);
        txid.append_slice(&txids);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(op.finish()),
            Arc::new(ts.finish()),
            Arc::new(pos.finish()),
            Arc::new(txid.finish()),
        ];
        columns.extend(data.columns().iter().cloned());
        RecordBatch::try_new(change_schema(&self.schema), columns)
            .map_err(|e| self.error(format!("building a change batch: {e}")))
    }

    pub(super) fn take_committed(
        &mut self,
        table: usize,
    ) -> Result<Option<TableChanges>, MysqlError> {
        let n = self.rows - self.rows_open;
        if n == 0 {
            return Ok(None);
        }
        let (Some(first), Some(last)) = (self.first.take(), self.last.take()) else {
            return Ok(None);
        };
        let positions = std::mem::take(&mut self.positions);
        let times = std::mem::take(&mut self.commit_times);
        let txids = std::mem::take(&mut self.txids);
        let batch = self.split_front(n, positions, times, txids)?;
        self.committed = self.committed.max(Some(last));
        Ok(Some(TableChanges {
            table,
            schema: self.schema.clone(),
            batch,
            first,
            last,
            commit_time_micros: self.last_commit_time,
            part: None,
        }))
    }

    /// Cuts the oldest `n` rows of the open transaction off as its next part.
    pub(super) fn take_open_part(
        &mut self,
        table: usize,
        n: usize,
        txn: &OpenTxn,
    ) -> Result<TableChanges, MysqlError> {
        let batch = self.split_front(
            n,
            vec![txn.start.0 as i64; n],
            vec![txn.begin_time_micros; n],
            vec![txn.txid; n],
        )?;
        self.rows_open -= n;
        self.parts_taken += 1;
        Ok(TableChanges {
            table,
            schema: self.schema.clone(),
            batch,
            first: txn.start,
            last: txn.start,
            commit_time_micros: txn.begin_time_micros,
            part: Some(self.parts_taken),
        })
    }

    /// Appends the table columns of one row from a decoded image; columns the image lacks
    /// are NULL (a delete under a minimal before image).
    pub(super) fn append_image(&mut self, image: &Image) -> Result<(), MysqlError> {
        for (col, value) in image.iter().enumerate() {
            let policy = self.policies.get(col).copied().unwrap_or_default();
            let result = match value {
                None | Some(BinlogValue::Value(mysql_common::Value::NULL)) => {
                    self.data[col].append_null();
                    Ok(())
                }
                Some(BinlogValue::Value(v)) => self.data[col].append(v, Origin::Binlog, policy),
                Some(BinlogValue::Jsonb(j)) => self.data[col].append_jsonb(j),
                Some(BinlogValue::JsonDiff(_)) => Err(ValueError::Malformed(
                    "a partial JSON update (binlog_row_value_options=PARTIAL_JSON); run \
                     SET GLOBAL binlog_row_value_options = '' so updates carry whole values"
                        .into(),
                )),
            };
            if let Err(e) = result {
                return Err(value_error(&self.schema, col, e));
            }
        }
        Ok(())
    }

    /// Takes the open transaction's rows out of the buffer (data columns and ops).
    pub(super) fn cut_open(&mut self) -> Result<Option<(RecordBatch, Vec<Op>)>, MysqlError> {
        if self.rows_open == 0 {
            return Ok(None);
        }
        let all = self.drain_data()?;
        let keep = self.rows - self.rows_open;
        let open = all.slice(keep, all.num_rows() - keep);
        if keep > 0 {
            self.carry = Some(all.slice(0, keep));
        }
        let ops = self.ops.split_off(keep);
        self.rows = keep;
        self.rows_open = 0;
        Ok(Some((open, ops)))
    }

    /// Appends rows cut off earlier ([`TableBuffer::cut_open`]) as rows of the open transaction.
    pub(super) fn push_open(&mut self, rows: RecordBatch, ops: Vec<Op>) -> Result<(), MysqlError> {
        let before = self.drain_data()?;
        if before.schema() != rows.schema() {
            return Err(self.error(
                "the table changed shape between an XA transaction's PREPARE and its COMMIT; \
                 run a new full load of the table",
            ));
        }
        let all = arrow_select::concat::concat_batches(&before.schema(), [&before, &rows])
            .map_err(|e| self.error(format!("building a change batch: {e}")))?;
        self.carry = Some(all);
        self.rows += ops.len();
        self.rows_open += ops.len();
        self.ops.extend(ops);
        Ok(())
    }

    pub(super) fn push_op(&mut self, op: Op) {
        self.ops.push(op);
        self.rows += 1;
        self.rows_open += 1;
    }
}

fn value_error(schema: &TableSchema, col: usize, e: ValueError) -> MysqlError {
    let column = &schema.columns[col];
    let message = match e {
        ValueError::Malformed(m) => {
            format!(
                "cannot decode a {} value from the binlog: {m}",
                column.source_type
            )
        }
        ValueError::Unrepresentable(what) => format!(
            "{what} has no exact {} equivalent; set [values.columns] \"{}\" = \"null\" or \
             \"text\" in the task file \
             (values.on_unrepresentable sets every column) to load it",
            column.data_type(),
            inlet_core::column_key(&schema.id, &column.name)
        ),
    };
    MysqlError::Value {
        table: schema.id.clone(),
        column: column.name.clone(),
        message,
    }
}
