//! The consistent full load: one exported snapshot shared by every worker connection, tables cut
//! into ctid-range chunks, and each chunk streamed with COPY binary into record batches.

use std::pin::Pin;

use arrow_array::RecordBatch;
use futures::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use crate::catalog::SourceTable;
use crate::config::PgConnector;
use crate::copy::{CopyDecoder, ValueError};
use crate::error::PgError;
use crate::types::quote_ident;

/// A `REPEATABLE READ` transaction whose snapshot other connections import. It must stay open
/// until every worker has imported the snapshot; dropping it ends the transaction.
pub struct ExportedSnapshot {
    client: Client,
    id: String,
}

impl ExportedSnapshot {
    pub async fn export(connector: &PgConnector) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| connector.query_error("starting the snapshot transaction", &e))?;
        let row = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| connector.query_error("pg_export_snapshot()", &e))?;
        Ok(Self {
            client,
            id: row.get(0),
        })
    }

    /// Joins a snapshot exported elsewhere (a replication slot's, so that the full load and the
    /// change stream meet at the slot's consistent point with no gap and no overlap).
    pub async fn import(connector: &PgConnector, snapshot_id: &str) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        begin_in_snapshot(&client, connector, snapshot_id).await?;
        Ok(Self {
            client,
            id: snapshot_id.to_string(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection holding the snapshot, for catalog reads consistent with it.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Starts a read-only REPEATABLE READ transaction that sees exactly `snapshot_id`'s snapshot.
async fn begin_in_snapshot(
    client: &Client,
    connector: &PgConnector,
    snapshot_id: &str,
) -> Result<(), PgError> {
    // Ids are hex and dashes (pg_export_snapshot, CREATE_REPLICATION_SLOT); quoting keeps any
    // other text a literal.
    let sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot_id.replace('\'', "''")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| connector.query_error("importing the exported snapshot", &e))
}

/// A range of heap pages of one table: `[start_page, end_page)`, open-ended when `end_page` is
/// None so that pages added after discovery are still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub start_page: u64,
    pub end_page: Option<u64>,
}

/// Cuts `pages` into chunks of `chunk_pages`; the last chunk is open-ended.
pub fn plan_chunks(pages: u64, chunk_pages: u64) -> Vec<SnapshotChunk> {
    let chunk_pages = chunk_pages.max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start + chunk_pages < pages {
        chunks.push(SnapshotChunk {
            start_page: start,
            end_page: Some(start + chunk_pages),
        });
        start += chunk_pages;
    }
    chunks.push(SnapshotChunk {
        start_page: start,
        end_page: None,
    });
    chunks
}

/// Limits on one record batch: whichever is reached first closes it.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// A worker connection inside the exported snapshot.
pub struct SnapshotReader {
    client: Client,
    connector: PgConnector,
    snapshot: String,
}

impl SnapshotReader {
    pub async fn open(connector: &PgConnector, snapshot_id: &str) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        Ok(Self {
            client,
            connector: connector.clone(),
            snapshot: snapshot_id.to_string(),
        })
    }

    /// Ends the chunk's transaction, releasing its lock on the table. Call after the chunk's
    /// stream is done.
    pub async fn finish_chunk(&self) -> Result<(), PgError> {
        self.client.batch_execute("COMMIT").await.map_err(|e| {
            self.connector
                .query_error("ending a chunk's transaction", &e)
        })
    }

    /// Starts streaming one chunk of `table`.
    pub async fn read<'t>(
        &self,
        table: &'t SourceTable,
        chunk: SnapshotChunk,
        limits: BatchLimits,
    ) -> Result<ChunkStream<'t>, PgError> {
        // Each chunk in a transaction of its own that imports the snapshot: the lock a COPY
        // takes is held for that chunk only. Locks held for the whole load would make any
        // TRUNCATE or ALTER TABLE of the source queue behind them, and every query of the
        // application behind that, for hours. The id comes from pg_export_snapshot() or
        // CREATE_REPLICATION_SLOT.
        begin_in_snapshot(&self.client, &self.connector, &self.snapshot).await?;
        let sql = copy_query(table, chunk);
        let stream = self.client.copy_out(sql.as_str()).await.map_err(|e| {
            self.connector
                .query_error(&format!("COPY of {}", table.schema.id), &e)
        })?;
        let decoders = table.columns.iter().map(|c| c.decoder.clone()).collect();
        let policies = table.columns.iter().map(|c| c.policy).collect();
        let capacity = limits.rows.min(8192);
        let key = table
            .schema
            .primary_key
            .iter()
            .filter_map(|k| {
                let i = table.schema.columns.iter().position(|c| &c.name == k)?;
                Some((i, k.clone()))
            })
            .collect();
        Ok(ChunkStream {
            table,
            stream: Box::pin(stream),
            decoder: CopyDecoder::new(table.schema.arrow_schema(), decoders, policies, capacity)
                .with_key(key),
            limits,
            pending_bytes: 0,
            ended: false,
            connector: self.connector.clone(),
        })
    }
}

fn copy_query(table: &SourceTable, chunk: SnapshotChunk) -> String {
    let select: Vec<&str> = table.columns.iter().map(|c| c.select.as_str()).collect();
    let mut sql = format!(
        "COPY (SELECT {} FROM {}.{} WHERE ctid >= '({},0)'::tid",
        select.join(", "),
        quote_ident(&table.schema.id.schema),
        quote_ident(&table.schema.id.name),
        chunk.start_page
    );
    if let Some(end) = chunk.end_page {
        sql.push_str(&format!(" AND ctid < '({end},0)'::tid"));
    }
    sql.push_str(") TO STDOUT (FORMAT binary)");
    sql
}

/// The record batches of one chunk, decoded as the server sends them.
pub struct ChunkStream<'t> {
    table: &'t SourceTable,
    stream: Pin<Box<CopyOutStream>>,
    decoder: CopyDecoder,
    limits: BatchLimits,
    pending_bytes: usize,
    /// The server's stream has ended: polling it again would read the next protocol message.
    ended: bool,
    connector: PgConnector,
}

impl ChunkStream<'_> {
    /// The next batch, or None when the chunk is done.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, PgError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if self.decoder.rows() >= self.limits.rows || self.pending_bytes >= self.limits.bytes {
                return self.take().map(Some);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.pending_bytes += chunk.len();
                    self.decoder
                        .feed(&chunk)
                        .map_err(|e| self.value_error(e.column, e.error, e.key))?;
                }
                Some(Err(e)) => {
                    return Err(self
                        .connector
                        .query_error(&format!("COPY of {}", self.table.schema.id), &e))
                }
                None => {
                    self.ended = true;
                    if self.decoder.leftover() != 0 || !self.decoder.is_finished() {
                        return Err(PgError::Protocol {
                            table: self.table.schema.id.clone(),
                            message: "the COPY stream ended inside a row".into(),
                        });
                    }
                    if self.decoder.rows() == 0 {
                        return Ok(None);
                    }
                    return self.take().map(Some);
                }
            }
        }
    }

    fn take(&mut self) -> Result<RecordBatch, PgError> {
        self.pending_bytes = 0;
        self.decoder.take_batch().map_err(|e| PgError::Protocol {
            table: self.table.schema.id.clone(),
            message: format!("building a record batch: {e}"),
        })
    }

    fn value_error(
        &self,
        column: Option<usize>,
        error: ValueError,
        key: Option<String>,
    ) -> PgError {
        let table = self.table.schema.id.clone();
        let Some(i) = column else {
            let (ValueError::Malformed(message) | ValueError::Unrepresentable(message)) = error;
            return PgError::Protocol { table, message };
        };
        let col = &self.table.schema.columns[i];
        let row = key
            .map(|k| format!(" (the row with {k})"))
            .unwrap_or_default();
        let message = match error {
            ValueError::Malformed(m) => {
                format!("cannot decode a {} value{row}: {m}", col.source_type)
            }
            ValueError::Unrepresentable(what) => format!(
                "{what}{row} has no exact {} equivalent; set [values.columns] \"{}\" = \"null\" \
                 or \"text\" in the task file \
                 (values.on_unrepresentable sets every column) to load it",
                col.data_type(),
                inlet_core::column_key(&table, &col.name)
            ),
        };
        PgError::Value {
            table,
            column: col.name.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything() {
        assert_eq!(
            plan_chunks(0, 10),
            vec![SnapshotChunk {
                start_page: 0,
                end_page: None
            }]
        );
        assert_eq!(
            plan_chunks(10, 10),
            vec![SnapshotChunk {
                start_page: 0,
                end_page: None
            }]
        );
        assert_eq!(
            plan_chunks(25, 10),
            vec![
                SnapshotChunk {
                    start_page: 0,
                    end_page: Some(10)
                },
                SnapshotChunk {
                    start_page: 10,
                    end_page: Some(20)
                },
                SnapshotChunk {
                    start_page: 20,
                    end_page: None
                },
            ]
        );
    }
}
