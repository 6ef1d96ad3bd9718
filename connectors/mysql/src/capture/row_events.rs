//! Row events (WRITE, UPDATE, DELETE rows) decoded through the table's mapping into its buffer
//! as insert, update and delete rows, and TRUNCATE as a `T` row; rows the target already holds
//! are skipped.

use inlet_core::{CaptureEvent, Op};
use mysql_common::binlog::events::RowsEventData;

use super::BinlogCapture;
use crate::error::MysqlError;
use crate::rows::read_image;

impl BinlogCapture {
    /// A rows event: each row into its table's buffer. Reports [`CaptureEvent::Large`] when the
    /// open transaction's rows for the table are due as a part.
    pub(super) fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
    ) -> Result<Option<CaptureEvent>, MysqlError> {
        let Some(Some(mapping)) = self.maps.get(&rows.table_id()) else {
            return Ok(None);
        };
        let mapping = mapping.clone();
        let table = mapping.table;
        let Some(txn) = &self.txn else {
            return Err(self.error("a row event outside a transaction"));
        };
        // An XA transaction's rows are kept whatever the table holds: its XA COMMIT, later, is
        // the transaction the target may hold or not.
        let xa = txn.xa;
        if !xa && self.tables[table].committed.is_some_and(|c| txn.start < c) {
            return Ok(None); // the target holds this transaction already
        }
        let (op_kind, before_bits, after_bits) = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                (Op::Insert, None, rows.columns_after_image())
            }
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => (
                Op::Update,
                rows.columns_before_image(),
                rows.columns_after_image(),
            ),
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                (Op::Delete, rows.columns_before_image(), None)
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(MysqlError::Table {
                    table: self.tables[table].schema.id.clone(),
                    message: "the binlog holds partial JSON updates; run SET GLOBAL \
                              binlog_row_value_options = '' so updates carry whole values"
                        .into(),
                })
            }
        };
        let n = mapping.columns.len();
        let before_present: Option<Vec<bool>> =
            before_bits.map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
        let after_present: Option<Vec<bool>> =
            after_bits.map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
        let data = rows.rows_data();
        let width = self.tables[table].schema.columns.len();
        let mut at = 0usize;
        let mut before = std::mem::take(&mut self.before);
        let mut after = std::mem::take(&mut self.after);
        let result = (|| -> Result<(), MysqlError> {
            while at < data.len() {
                let t = &mut self.tables[table];
                let id = t.schema.id.clone();
                let bad = |m: String| MysqlError::Table {
                    table: id.clone(),
                    message: format!("cannot decode a row event: {m}"),
                };
                if let Some(present) = &before_present {
                    at += read_image(&data[at..], &mapping, present, width, &mut before)
                        .map_err(bad)?;
                }
                if let Some(present) = &after_present {
                    at += read_image(&data[at..], &mapping, present, width, &mut after)
                        .map_err(bad)?;
                    if after.iter().any(Option::is_none) {
                        return Err(t.error(
                            "a row image lacks columns (binlog_row_image is not FULL); run SET \
                             GLOBAL binlog_row_image = FULL",
                        ));
                    }
                }
                let key: Vec<usize> = t
                    .schema
                    .primary_key
                    .iter()
                    .filter_map(|k| t.schema.columns.iter().position(|c| &c.name == k))
                    .collect();
                match op_kind {
                    Op::Insert => {
                        t.append_image(&after)?;
                        t.push_op(Op::Insert);
                    }
                    Op::Delete => {
                        if before.iter().any(Option::is_none)
                            && (key.is_empty() || key.iter().any(|&k| before[k].is_none()))
                        {
                            return Err(t.error(
                                "a deleted row's image lacks its key (binlog_row_image is not \
                                 FULL); run SET GLOBAL binlog_row_image = FULL",
                            ));
                        }
                        t.append_image(&before)?;
                        t.push_op(Op::Delete);
                    }
                    _ => {
                        // A changed key is a delete of the old row and an insert of the new.
                        let key_changed =
                            !key.is_empty() && key.iter().any(|&k| before.get(k) != after.get(k));
                        if key_changed {
                            t.append_image(&before)?;
                            t.push_op(Op::Delete);
                            t.append_image(&after)?;
                            t.push_op(Op::Insert);
                        } else {
                            t.append_image(&after)?;
                            t.push_op(Op::Update);
                        }
                    }
                }
            }
            Ok(())
        })();
        self.before = before;
        self.after = after;
        result?;
        // An XA transaction may yet be rolled back: none of it is written before its commit.
        Ok((!xa && self.tables[table].rows_open >= 2 * self.part_rows)
            .then_some(CaptureEvent::Large { table }))
    }

    /// TRUNCATE as a `T` row (every column NULL), unless the target holds the transaction.
    pub(super) fn truncate_row(&mut self, table: usize) -> Result<(), MysqlError> {
        let Some(txn) = &self.txn else {
            return Err(self.error("TRUNCATE outside a transaction"));
        };
        let t = &mut self.tables[table];
        if t.committed.is_some_and(|c| txn.start < c) {
            return Ok(());
        }
        for col in &mut t.data {
            col.append_null();
        }
        t.push_op(Op::Truncate);
        Ok(())
    }
}
