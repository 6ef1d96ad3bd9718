//! The result of validating one table ([`TableReport`]): its counts and the keys that differ,
//! the summary line printed per table, and the `--json` form of the whole report.

use serde::Serialize;

use crate::JobError;

/// One table's result.
#[derive(Debug, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    /// The key columns compared by (as the target names them); empty: a table without a key,
    /// compared as a multiset of whole rows.
    pub key: Vec<String>,
    pub rows_compared: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub missing_keys: Vec<String>,
    pub extra_keys: Vec<String>,
    pub different_keys: Vec<String>,
    /// Rounds run: 1 when the first found nothing.
    pub rounds: usize,
    /// Why the table was not compared, or what to know about its result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Not compared (see `note`).
    pub skipped: bool,
    /// Key ranges whose row count and hash the source server computed and compared with the
    /// target's (first round).
    pub ranges_compared: u64,
    /// Those of them whose count or hash differed: their rows were read and compared.
    pub ranges_differing: u64,
    /// Rows read from the source, in every round.
    pub rows_read_from_source: u64,
    /// Why the table was compared row by row, without range hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_row_by_row: Option<String>,
}

impl TableReport {
    pub fn differs(&self) -> bool {
        self.missing + self.extra + self.different > 0
    }

    /// The summary line of the table.
    pub fn line(&self) -> String {
        if self.skipped {
            return format!(
                "{}: not compared: {}",
                self.table,
                self.note.as_deref().unwrap_or("")
            );
        }
        let mut s = format!("{}: {} rows compared", self.table, self.rows_compared);
        if !self.differs() {
            s.push_str(", equal");
        } else {
            s.push_str(&format!(
                ", {} missing, {} extra, {} different",
                self.missing, self.extra, self.different
            ));
            let mut named = Vec::new();
            for (what, keys, n) in [
                ("missing", &self.missing_keys, self.missing),
                ("extra", &self.extra_keys, self.extra),
                ("different", &self.different_keys, self.different),
            ] {
                if !keys.is_empty() {
                    let more = if (keys.len() as u64) < n { ", …" } else { "" };
                    named.push(format!("{what}: {}{more}", keys.join("; ")));
                }
            }
            if !named.is_empty() {
                s.push_str(&format!(" [{}]", named.join(" | ")));
            }
        }
        if self.key.is_empty() {
            s.push_str(" (no key: compared as a multiset of whole rows)");
        }
        if let Some(note) = &self.note {
            s.push_str(&format!(" ({note})"));
        }
        s
    }
}

#[derive(Serialize)]
pub(super) struct JsonReport<'a> {
    pub(super) task: &'a str,
    pub(super) equal: bool,
    pub(super) tables: &'a [TableReport],
}

/// Prints the report: a line per table and a summary, or one JSON object with `json`.
pub(super) fn print(
    task: &str,
    reports: &[TableReport],
    equal: bool,
    json: bool,
) -> Result<(), JobError> {
    if json {
        let json = serde_json::to_string_pretty(&JsonReport {
            task,
            equal,
            tables: reports,
        })
        .map_err(JobError::failed)?;
        println!("{json}");
    } else {
        for r in reports {
            println!("{}", r.line());
        }
        let differ = reports.iter().filter(|r| r.differs()).count();
        let skipped = reports.iter().filter(|r| r.skipped).count();
        let tables = match reports.len() {
            1 => "1 table".to_string(),
            n => format!("{n} tables"),
        };
        if equal {
            println!("{tables} compared: the target equals the source");
        } else {
            println!(
                "{tables} compared: {differ} differ{}",
                if skipped > 0 {
                    format!(", {skipped} not compared")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}
