//! The source side of a comparison: the loop that compares a round's snapshot of the source
//! ([`inlet_core::validation`], built in [`crate::engine::validate`]) with the target's rows,
//! by range hashes, then row by row.

use std::time::{Duration, Instant};

use inlet_core::snapshot::{ChunkBatches, ChunkReader, LoadSource, SnapshotTable};
use inlet_core::validation::{RangeHashes, Round};

use super::compare::{TablePlan, Tally};
use super::ranges::{self, RangeSum};
use super::report::TableReport;
use super::{Context, Keys, RoundResult, Span, Spans};
use crate::load_pool::source_error;
use crate::JobError;

/// Compares tables `which` of the round's snapshot with the target, one table at a time: the
/// target's rows into a map or its ranges' sums, then the source's range hashes, ranges or
/// chunks against them. Each table restricted to its suspects when it has some (`keys`), and to
/// the key ranges that held them (`spans`) when known.
pub(super) async fn compare_in<S: LoadSource, R: RangeHashes>(
    round: Round<S, R>,
    ctx: &Context<'_>,
    which: &[usize],
    keys: &[Keys],
    spans: &[Option<Spans>],
) -> Result<Vec<RoundResult>, JobError> {
    let Round {
        load: mut source,
        ranges: ranged,
        ..
    } = round;
    // Why the source computes no range hashes, if it does not.
    let (ranged, unranged) = match ranged {
        Ok(r) => (Some(r), None),
        Err(why) => (None, Some(why)),
    };
    let ranged = ranged.as_ref();
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
        let estimate = table.estimated_rows();
        match (ranged, only) {
            (Some(ranged), Keys::All | Keys::Part { .. }) => match plan.canonical_types() {
                Ok(types) => match ranges::plan(ranged, t, &types, estimate).await? {
                    Ok(p) => range_plan = Some(p),
                    Err(why) => row_by_row = Some(why),
                },
                Err(why) => row_by_row = Some(why),
            },
            (None, _) => row_by_row = unranged.clone(),
            _ => {}
        }
        plan.ranges = range_plan.as_ref().map(|p| p.ranges.clone());
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
                let sums = ranges::hashes(ranged, t, rp, &in_pass).await?;
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
                    ranges::read(ranged, t, rp.ranges.key.as_deref(), *span, |batch| {
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
                    ranges::read(ranged, t, known.key.as_deref(), *span, |batch| {
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
