//! The source side of a comparison: the source (PostgreSQL or MySQL/MariaDB) with its tables
//! discovered once, a consistent snapshot per round and its position, and the loop that streams
//! a table's source chunks against the target's rows.

use std::time::{Duration, Instant};

use inlet_core::snapshot::{ChunkBatches, ChunkReader, LoadSource, SnapshotTable};
use inlet_core::{Position, TableSelection, ValuePolicy};

use super::compare::{TablePlan, Tally};
use super::ranges::{RangeSource, RangeSum};
use super::report::TableReport;
use super::{Context, Keys, RoundResult, Span, Spans};
use crate::config::{SourceConfig, TaskConfig};
use crate::load_pool::source_error;
use crate::sink::Target;
use crate::JobError;

/// The source, PostgreSQL or MySQL/MariaDB, with its tables discovered once.
// One value per run: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum SourceSide {
    Postgres {
        connector: inlet_postgres::PgConnector,
        tables: Vec<inlet_postgres::SourceTable>,
        limits: inlet_postgres::BatchLimits,
        chunk_mb: u64,
        round: Option<inlet_postgres::PgLoadSource>,
        /// The round's exported snapshot, which range hashes and range reads import.
        snapshot_id: String,
        /// Connections hashing ranges at once (`full_load.workers`).
        workers: usize,
    },
    Mysql {
        connector: inlet_mysql::MysqlConnector,
        tables: Vec<inlet_mysql::MysqlTable>,
        limits: inlet_mysql::BatchLimits,
        chunk_mb: u64,
        /// The epoch of the task's positions (its failovers so far), from its checkpoint.
        epoch: u8,
        round: Option<inlet_mysql::MysqlLoadSource>,
        /// The round's snapshot for range hashes (MariaDB), taken just after the round's.
        hashing: Option<inlet_mysql::RangeSnapshot>,
    },
}

impl SourceSide {
    pub(super) async fn open(
        config: &TaskConfig,
        selection: &TableSelection,
        policy: &ValuePolicy,
    ) -> Result<Self, JobError> {
        let fl = &config.full_load;
        match &config.source {
            SourceConfig::Postgres(source) => {
                let connector = inlet_postgres::PgConnector::new(source)
                    .map_err(JobError::config)?
                    .with_publication(source.publication_name(&config.task.name));
                let client = connector.connect().await.map_err(JobError::source)?;
                let tables = inlet_postgres::discover(&client, &connector, selection, policy)
                    .await
                    .map_err(JobError::source)?;
                Ok(Self::Postgres {
                    connector,
                    tables,
                    limits: inlet_postgres::BatchLimits {
                        rows: fl.batch_rows,
                        bytes: fl.batch_mb << 20,
                    },
                    chunk_mb: fl.chunk_mb,
                    round: None,
                    snapshot_id: String::new(),
                    workers: fl.workers.max(1),
                })
            }
            SourceConfig::Mysql(source) => {
                let connector =
                    inlet_mysql::MysqlConnector::new(source).map_err(JobError::config)?;
                let mut conn = connector.connect().await.map_err(crate::JobError::source)?;
                let tables = inlet_mysql::discover(&mut conn, &connector, selection, policy)
                    .await
                    .map_err(crate::JobError::source)?;
                drop(conn);
                let target = Target::new(&config.target, &config.task.name)?;
                let epoch = target
                    .read_checkpoint(&config.task.name)
                    .await?
                    .map_or(0, |c| inlet_mysql::position_epoch(c.position));
                Ok(Self::Mysql {
                    connector,
                    tables,
                    limits: inlet_mysql::BatchLimits {
                        rows: fl.batch_rows,
                        bytes: fl.batch_mb << 20,
                    },
                    chunk_mb: fl.chunk_mb,
                    epoch,
                    round: None,
                    hashing: None,
                })
            }
        }
    }

    /// The server's estimate of table `i`'s rows.
    pub(super) fn estimated_rows(&self, i: usize) -> Option<u64> {
        match self {
            Self::Postgres { tables, .. } => tables.get(i).and_then(|t| t.estimated_rows),
            Self::Mysql { tables, .. } => tables.get(i).and_then(|t| t.estimated_rows),
        }
    }

    pub(super) fn table_ids(&self) -> Vec<String> {
        match self {
            Self::Postgres { tables, .. } => {
                tables.iter().map(|t| t.schema.id.to_string()).collect()
            }
            Self::Mysql { tables, .. } => tables.iter().map(|t| t.schema.id.to_string()).collect(),
        }
    }

    /// Opens a new consistent snapshot of every table and returns its source position: every
    /// change the snapshot holds is at or before it.
    pub(super) async fn open_round(&mut self) -> Result<Position, JobError> {
        match self {
            Self::Postgres {
                connector,
                tables,
                limits,
                chunk_mb,
                round,
                snapshot_id,
                ..
            } => {
                *round = None;
                let snapshot = inlet_postgres::ExportedSnapshot::export(connector)
                    .await
                    .map_err(JobError::source)?;
                *snapshot_id = snapshot.id().to_string();
                let position = inlet_postgres::snapshot_position(&snapshot, connector)
                    .await
                    .map_err(JobError::source)?;
                let source = inlet_postgres::PgLoadSource::new(
                    connector,
                    snapshot,
                    tables.clone(),
                    *chunk_mb,
                    *limits,
                )
                .await
                .map_err(JobError::source)?;
                *round = Some(source);
                Ok(position)
            }
            Self::Mysql {
                connector,
                tables,
                limits,
                chunk_mb,
                epoch,
                round,
                hashing,
            } => {
                *round = None;
                *hashing = None;
                let snapshot = inlet_mysql::ConsistentSnapshot::open(connector, 1)
                    .await
                    .map_err(crate::JobError::source)?;
                let mut position = snapshot
                    .point
                    .binlog
                    .to_position(*epoch)
                    .map_err(crate::JobError::source)?;
                // Range hashes are read in a snapshot of their own, taken after the round's:
                // the task is waited for up to the later of the two.
                if let Some(h) = inlet_mysql::RangeSnapshot::open(connector)
                    .await
                    .map_err(crate::JobError::source)?
                {
                    let at = h
                        .position
                        .to_position(*epoch)
                        .map_err(crate::JobError::source)?;
                    position = position.max(at);
                    *hashing = Some(h);
                }
                *round = Some(inlet_mysql::MysqlLoadSource::new(
                    snapshot,
                    tables.clone(),
                    *chunk_mb,
                    *limits,
                ));
                Ok(position)
            }
        }
    }

    /// Compares tables `which` (indexes into the discovered tables) in the open snapshot,
    /// each restricted to its suspects when it has some (`keys`), and to the key ranges that
    /// held them (`spans`) when known.
    pub(super) async fn compare(
        &mut self,
        ctx: &Context<'_>,
        which: &[usize],
        keys: &[Keys],
        spans: &[Option<Spans>],
    ) -> Result<Vec<RoundResult>, JobError> {
        match self {
            Self::Postgres {
                round,
                connector,
                tables,
                limits,
                chunk_mb,
                snapshot_id,
                workers,
            } => {
                let source = round
                    .take()
                    .ok_or_else(|| JobError::Failed("no snapshot is open (a bug)".into()))?;
                let reader = inlet_postgres::RangeReader::open(connector, snapshot_id)
                    .await
                    .map_err(JobError::source)?;
                let utf8 = reader.utf8().await.map_err(JobError::source)?;
                let mut hashers = Vec::new();
                for _ in 1..*workers {
                    hashers.push(
                        inlet_postgres::RangeReader::open(connector, snapshot_id)
                            .await
                            .map_err(JobError::source)?,
                    );
                }
                let ranged = RangeSource::Postgres {
                    reader,
                    hashers,
                    tables: tables.clone(),
                    limits: *limits,
                    chunk_mb: *chunk_mb,
                    utf8,
                };
                compare_in(source, Some(&ranged), ctx, which, keys, spans).await
            }
            Self::Mysql {
                round,
                hashing,
                tables,
                limits,
                chunk_mb,
                ..
            } => {
                let source = round
                    .take()
                    .ok_or_else(|| JobError::Failed("no snapshot is open (a bug)".into()))?;
                let ranged = hashing.take().map(|snapshot| RangeSource::Mysql {
                    snapshot: tokio::sync::Mutex::new(snapshot),
                    tables: tables.clone(),
                    limits: *limits,
                    chunk_mb: *chunk_mb,
                });
                compare_in(source, ranged.as_ref(), ctx, which, keys, spans).await
            }
        }
    }
}

/// Compares tables `which` of `source`'s snapshot with the target, one table at a time: the
/// target's rows into a map, then the source's chunks streamed against it.
pub(super) async fn compare_in<S: LoadSource>(
    mut source: S,
    ranged: Option<&RangeSource>,
    ctx: &Context<'_>,
    which: &[usize],
    keys: &[Keys],
    spans: &[Option<Spans>],
) -> Result<Vec<RoundResult>, JobError> {
    let tables = source.tables();
    // Planned before the readers are taken: a source may plan on a reader's connection
    // (MySQL's key ranges, read in the snapshot).
    let mut planned = Vec::with_capacity(which.len());
    for &t in which {
        planned.push(source.chunks(t).await.map_err(source_error)?);
    }
    let mut readers = source.readers(1).await.map_err(source_error)?;
    let Some(mut reader) = readers.pop() else {
        return Err(JobError::Failed(
            "the source opened no reader in its snapshot".into(),
        ));
    };
    let mut results = Vec::with_capacity(which.len());
    for (((&t, only), chunks), known) in which.iter().zip(keys).zip(planned).zip(spans) {
        let Some(table) = tables.get(t) else {
            results.push(RoundResult::default());
            continue;
        };
        let schema = table.schema().clone();
        let skipped = |key: Vec<String>, why: String| RoundResult {
            report: TableReport {
                table: schema.id.to_string(),
                key,
                skipped: true,
                note: Some(why),
                ..TableReport::default()
            },
            ..RoundResult::default()
        };
        let mut plan = match TablePlan::new(ctx, &schema).await? {
            Ok(plan) => plan,
            Err(why) => {
                results.push(skipped(Vec::new(), why));
                continue;
            }
        };
        // Range hashes first, in a round over all the keys (or a pass's part of them); a
        // recheck reads the ranges that held its keys; else every chunk, row by row.
        let mut row_by_row = None;
        let mut range_plan = None;
        match (ranged, only, known) {
            (Some(ranged), Keys::All | Keys::Part { .. }, _) => match plan.canonical_types() {
                Ok(types) => match ranged.plan(t, &types).await? {
                    Ok(p) => range_plan = Some(p),
                    Err(why) => row_by_row = Some(why),
                },
                Err(why) => row_by_row = Some(why),
            },
            (None, _, _) => {
                row_by_row = Some(
                    "MySQL reports no binlog position of a consistent snapshot without a global \
                     read lock: range hashes are computed on PostgreSQL and MariaDB"
                        .into(),
                );
            }
            _ => {}
        }
        plan.ranges = range_plan.as_ref().map(|p| p.ranges.clone());
        let estimate = table.estimated_rows();
        let sums = range_plan.as_ref().map(|p| p.ranges.len());
        let mut state = match plan.read_target(ctx, only, estimate, sums).await? {
            Ok(state) => state,
            Err(why) => {
                results.push(skipped(plan.key_names.clone(), why));
                continue;
            }
        };
        let mut tally = Tally::new(ctx.max_keys);
        let started = Instant::now();
        let mut shown = Instant::now();
        let mut progress = |rows: u64| {
            if ctx.progress && shown.elapsed() > Duration::from_millis(500) {
                shown = Instant::now();
                eprint!(
                    "\r{}: {} rows compared ({:.0} s)\x1b[K",
                    schema.id,
                    rows,
                    started.elapsed().as_secs_f64()
                );
            }
        };
        let mut agreeing_rows = 0;
        // Rows read from the source, compared or not (a recheck keeps only its keys).
        let mut read: u64 = 0;
        let mut ranges_compared = 0;
        let mut differing_spans = None;
        match (ranged, &range_plan, known) {
            (Some(ranged), Some(rp), _) => {
                let in_pass: Vec<usize> = (0..rp.ranges.len())
                    .filter(|&r| only.keeps(0, Some(r as u32)))
                    .collect();
                let sums = ranged.hashes(t, rp, &in_pass).await?;
                let summed = state.sums.take();
                let target = summed.clone().unwrap_or_else(|| {
                    let mut target = vec![RangeSum::default(); rp.ranges.len()];
                    for e in state.rows.values() {
                        if let Some(s) = target.get_mut(e.range as usize) {
                            s.add(e.row, e.count);
                        }
                    }
                    target
                });
                let mut differ = vec![false; rp.ranges.len()];
                for (&r, source_sum) in in_pass.iter().zip(&sums) {
                    if target[r] == *source_sum {
                        agreeing_rows += source_sum.rows;
                    } else {
                        differ[r] = true;
                    }
                }
                ranges_compared = in_pass.len() as u64;
                // The rows of agreeing ranges are equal: only the others are compared. A
                // target read into sums is read again, into a map of those ranges' rows.
                if summed.is_none() {
                    state
                        .rows
                        .retain(|_, e| differ.get(e.range as usize).copied().unwrap_or(true));
                } else if differ.contains(&true) {
                    let ranges = Keys::Ranges(std::sync::Arc::new(differ.clone()));
                    state = match plan.read_target(ctx, &ranges, estimate, None).await? {
                        Ok(state) => state,
                        Err(why) => {
                            results.push(skipped(plan.key_names.clone(), why));
                            continue;
                        }
                    };
                }
                let spans: Vec<Span> = (0..rp.ranges.len())
                    .filter(|&r| differ[r])
                    .map(|r| rp.ranges.span(r))
                    .collect();
                for span in &spans {
                    ranged
                        .read(t, rp.ranges.key.as_deref(), *span, |batch| {
                            read += batch.num_rows() as u64;
                            plan.compare_source(ctx, &batch, &mut state, only, &mut tally)?;
                            progress(agreeing_rows + tally.source_rows);
                            Ok(())
                        })
                        .await?;
                }
                differing_spans = Some(Spans {
                    key: rp.ranges.key.clone(),
                    spans,
                });
            }
            (Some(ranged), None, Some(known)) => {
                for span in &known.spans {
                    ranged
                        .read(t, known.key.as_deref(), *span, |batch| {
                            read += batch.num_rows() as u64;
                            plan.compare_source(ctx, &batch, &mut state, only, &mut tally)?;
                            progress(tally.source_rows);
                            Ok(())
                        })
                        .await?;
                }
                differing_spans = Some(known.clone());
            }
            _ => {
                for chunk in chunks {
                    let mut batches = reader.read(table, chunk).await.map_err(source_error)?;
                    while let Some(batch) = batches.next_batch().await.map_err(source_error)? {
                        read += batch.num_rows() as u64;
                        plan.compare_source(ctx, &batch, &mut state, only, &mut tally)?;
                        progress(tally.source_rows);
                    }
                    drop(batches);
                    reader.finish_chunk().await.map_err(source_error)?;
                }
            }
        }
        if ctx.progress {
            eprint!("\r\x1b[K");
        }
        tally.extras(&state);
        let ranges_differing = differing_spans
            .as_ref()
            .filter(|_| range_plan.is_some())
            .map_or(0, |s| s.spans.len() as u64);
        results.push(RoundResult {
            report: TableReport {
                table: schema.id.to_string(),
                key: plan.key_names.clone(),
                rows_compared: agreeing_rows + tally.source_rows,
                missing: tally.missing,
                extra: tally.extra,
                different: tally.different,
                missing_keys: tally.missing_keys,
                extra_keys: tally.extra_keys,
                different_keys: tally.different_keys,
                ranges_compared,
                ranges_differing,
                rows_read_from_source: read,
                compared_row_by_row: row_by_row,
                ..TableReport::default()
            },
            source_rows: agreeing_rows + tally.source_rows,
            differing: tally.differing,
            differing_source_rows: tally.differing_source_rows,
            spans: differing_spans,
        });
    }
    drop(reader);
    drop(source);
    Ok(results)
}
