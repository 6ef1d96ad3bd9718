//! Reading a table back as its current snapshot holds it, for `inlet validate`: its live data
//! files, each read whole with the rows its position-delete files remove left out, and a
//! source batch turned into the form the files hold (uuid and time as text under the portable
//! forms, columns named as the table names them).
//!
//! The files are read with the same pieces the upsert index is rebuilt with (manifests, then
//! `files::read_position_deletes` and `files::read_all`), so no second reader of the table's
//! layout exists to drift from the writer.

use std::collections::HashMap;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use iceberg::spec::{DataContentType, DataFile};
use inlet_core::TableSchema;

use crate::config::TableNames;
use crate::files::{read_all, read_position_deletes};
use crate::schema::file_schema;
use crate::{IcebergError, IcebergTarget};

/// The current snapshot of one table: its live data files and the rows deleted from them.
pub struct LiveTable {
    /// The table as written: columns named and typed as the table holds them.
    pub written: TableSchema,
    /// The upsert key (written names); empty for a table without one (a change log).
    pub key: Vec<String>,
    /// The Arrow schema of the table's data files (Iceberg's types: a smallint is an int).
    pub file_schema: SchemaRef,
    names: TableNames,
    table: String,
    data: Vec<DataFile>,
    deleted: HashMap<String, Vec<u32>>,
}

impl LiveTable {
    /// How many live data files the snapshot has.
    pub fn data_files(&self) -> usize {
        self.data.len()
    }
}

impl IcebergTarget {
    /// The current snapshot of `table` (a source table), or None when the table does not exist
    /// in the catalog. Reads the manifests and every position-delete file; data files are read
    /// one at a time by [`Self::read_live_rows`].
    pub async fn live_table(&self, table: &TableSchema) -> Result<Option<LiveTable>, IcebergError> {
        if self.metadata_location(&table.id).await?.is_none() {
            return Ok(None);
        }
        // Not `replace`: an existing table is only loaded, nothing is created or committed.
        let opened = self.open(table, false).await?;
        let name = opened.catalog.ident.to_string();
        let wh = self.inner.warehouse.clone();
        let mut data = Vec::new();
        let mut deleted: HashMap<String, Vec<u32>> = HashMap::new();
        for manifest in &opened.state.manifests {
            for (file, _seq) in opened.catalog.read_manifest(manifest).await? {
                match file.content_type() {
                    DataContentType::Data => data.push(file),
                    DataContentType::PositionDeletes => {
                        read_position_deletes(&wh, &name, &file, &mut deleted).await?
                    }
                    DataContentType::EqualityDeletes => {
                        return Err(IcebergError::state(
                            &name,
                            format!(
                                "{} is an equality-delete file, written by another tool; inlet \
                                 validates tables with position deletes only",
                                file.file_path()
                            ),
                        ))
                    }
                }
            }
        }
        for positions in deleted.values_mut() {
            positions.sort_unstable();
            positions.dedup();
        }
        Ok(Some(LiveTable {
            written: opened.layout.source.clone(),
            key: opened.layout.key.clone(),
            file_schema: file_schema(&opened.schema),
            names: opened.column_names,
            table: name,
            data,
            deleted,
        }))
    }

    /// The live rows of data file `index` of `live` (its rows minus those deleted).
    pub async fn read_live_rows(
        &self,
        live: &LiveTable,
        index: usize,
    ) -> Result<Vec<RecordBatch>, IcebergError> {
        let Some(file) = live.data.get(index) else {
            return Ok(Vec::new());
        };
        let batches = read_all(
            &self.inner.warehouse,
            &live.table,
            file.file_path(),
            file.file_size_in_bytes(),
        )
        .await?;
        let gone = live
            .deleted
            .get(file.file_path())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if gone.is_empty() {
            return Ok(batches);
        }
        let mut kept = Vec::with_capacity(batches.len());
        let mut first: u64 = 0;
        for batch in batches {
            let rows = batch.num_rows() as u64;
            let mask: BooleanArray = (0..rows)
                .map(|r| {
                    let pos = first + r;
                    Some(u32::try_from(pos).map_or(true, |p| gone.binary_search(&p).is_err()))
                })
                .collect();
            first += rows;
            let filtered =
                arrow_select::filter::filter_record_batch(&batch, &mask).map_err(|e| {
                    IcebergError::state(
                        &live.table,
                        format!("{}: cannot leave out deleted rows: {e}", file.file_path()),
                    )
                })?;
            kept.push(filtered);
        }
        Ok(kept)
    }

    /// `batch` (a source batch of the table, as the full load reads it) in the form the table's
    /// files hold it.
    pub fn written_source_batch(
        &self,
        live: &LiveTable,
        batch: &RecordBatch,
    ) -> Result<RecordBatch, IcebergError> {
        self.written_batch(&live.table, batch, live.names)
    }
}
