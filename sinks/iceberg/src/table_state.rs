//! Reading a table back as its current snapshot holds it, for `inlet validate`: its live data
//! files, each read whole with the rows its position-delete files remove left out, and a
//! source batch turned into the form the files hold (uuid and time as text under the portable
//! forms, columns named as the table names them).
//!
//! The files are found with the same pieces the upsert index is rebuilt with (manifests, then
//! `files::read_position_deletes`), so no second reader of the table's layout exists to drift
//! from the writer; data files are streamed batch by batch.

use std::collections::HashMap;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use futures::TryStreamExt;
use iceberg::spec::{DataContentType, DataFile};
use inlet_core::sink::TargetError;
use inlet_core::validation::{ReadBackStep, TableReadBack};
use inlet_core::TableSchema;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::config::TableNames;
use crate::files::read_position_deletes;
use crate::schema::file_schema;
use crate::store::ObjectReader;
use crate::{IcebergError, IcebergTarget};

/// The current snapshot of one table: its live data files and the rows deleted from them.
struct LiveTable {
    /// The upsert key (written names); empty for a table without one (a change log).
    key: Vec<String>,
    /// The Arrow schema of the table's data files (Iceberg's types: a smallint is an int).
    file_schema: SchemaRef,
    names: TableNames,
    table: String,
    data: Vec<DataFile>,
    deleted: HashMap<String, Vec<u32>>,
}

impl LiveTable {
    /// How many rows the snapshot holds: its data files' rows minus those deleted.
    fn live_rows(&self) -> u64 {
        let written: u64 = self.data.iter().map(|f| f.record_count()).sum();
        let deleted: usize = self.deleted.values().map(Vec::len).sum();
        written.saturating_sub(deleted as u64)
    }
}

impl IcebergTarget {
    /// The current snapshot of `table` (a source table), or None when the table does not exist
    /// in the catalog. Reads the manifests and every position-delete file; data files are read
    /// one at a time by [`Self::read_live_rows`].
    async fn live_table(&self, table: &TableSchema) -> Result<Option<LiveTable>, IcebergError> {
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
            key: opened.layout.key.clone(),
            file_schema: file_schema(&opened.schema),
            names: opened.column_names,
            table: name,
            data,
            deleted,
        }))
    }

    /// Gives `visit` the live rows of data file `index` of `live` (its rows minus those
    /// deleted), batch by batch as they are decoded: one batch of the file is in memory at a
    /// time. Stops at the first error of `visit`, which is returned as `Ok(Err(_))`.
    async fn read_live_rows(
        &self,
        live: &LiveTable,
        index: usize,
        mut visit: impl FnMut(RecordBatch) -> Result<(), String>,
    ) -> Result<Result<(), String>, IcebergError> {
        let Some(file) = live.data.get(index) else {
            return Ok(Ok(()));
        };
        let uri = file.file_path();
        let wh = &self.inner.warehouse;
        let path = wh
            .path_of(uri)
            .map_err(|m| IcebergError::state(&live.table, m))?;
        let parquet_error = |e| IcebergError::Parquet {
            table: live.table.clone(),
            action: "reading",
            location: uri.to_string(),
            hint: wh.hint(None),
            source: Box::new(e),
        };
        let reader = ObjectReader::new(wh.store.clone(), path, file.file_size_in_bytes());
        let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(parquet_error)?
            .with_batch_size(65_536)
            .build()
            .map_err(parquet_error)?;
        let gone = live.deleted.get(uri).map(Vec::as_slice).unwrap_or(&[]);
        let mut first: u64 = 0;
        while let Some(batch) = stream.try_next().await.map_err(parquet_error)? {
            let rows = batch.num_rows() as u64;
            let batch = if gone.is_empty() {
                batch
            } else {
                let mask: BooleanArray = (0..rows)
                    .map(|r| {
                        // A position past u32 cannot be in a delete file inlet reads.
                        let kept = u32::try_from(first + r)
                            .map_or(true, |p| gone.binary_search(&p).is_err());
                        Some(kept)
                    })
                    .collect();
                arrow_select::filter::filter_record_batch(&batch, &mask).map_err(|e| {
                    IcebergError::state(
                        &live.table,
                        format!("{uri}: cannot leave out deleted rows: {e}"),
                    )
                })?
            };
            first += rows;
            if let Err(e) = visit(batch) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

/// A table read back as its current snapshot holds it (see [`TableReadBack`]); a table that
/// does not exist in the catalog reads empty, in the source's form.
pub struct LiveRows {
    target: IcebergTarget,
    source: TableSchema,
    live: Option<LiveTable>,
}

impl IcebergTarget {
    /// The current snapshot of `table` (a source table) to read back, or why it cannot be
    /// compared.
    pub(crate) async fn live_rows(
        &self,
        table: &TableSchema,
    ) -> Result<Result<LiveRows, String>, IcebergError> {
        let live = self.live_table(table).await?;
        if live.as_ref().is_some_and(|l| l.key.is_empty()) {
            return Ok(Err(
                "a table without a key is written to Iceberg as an append-only \
                           change log, which validate does not replay yet"
                    .into(),
            ));
        }
        Ok(Ok(LiveRows {
            target: self.clone(),
            source: table.clone(),
            live,
        }))
    }
}

#[async_trait::async_trait]
impl TableReadBack for LiveRows {
    fn columns(&self) -> SchemaRef {
        match &self.live {
            Some(live) => live.file_schema.clone(),
            None => self.source.arrow_schema(),
        }
    }

    fn key(&self) -> Vec<String> {
        match &self.live {
            Some(live) => live.key.clone(),
            None => self.source.primary_key.clone(),
        }
    }

    fn written_source_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, TargetError> {
        match &self.live {
            Some(live) => Ok(self.target.written_batch(&live.table, batch, live.names)?),
            None => Ok(batch.clone()),
        }
    }

    async fn read(
        &mut self,
        visit: &mut (dyn for<'b> FnMut(ReadBackStep<'b>) -> Result<(), String> + Send),
    ) -> Result<Result<(), String>, TargetError> {
        let Some(live) = &self.live else {
            return Ok(Ok(()));
        };
        let begin = ReadBackStep::Begin {
            inserts_only: true,
            rows: Some(live.live_rows()),
        };
        if let Err(e) = visit(begin) {
            return Ok(Err(e));
        }
        for f in 0..live.data.len() {
            let read = self
                .target
                .read_live_rows(live, f, |batch| {
                    visit(ReadBackStep::Rows {
                        batch: &batch,
                        ops: None,
                    })
                })
                .await?;
            if let Err(why) = read {
                return Ok(Err(format!("{}: {why}", self.source.id)));
            }
        }
        Ok(Ok(()))
    }
}
