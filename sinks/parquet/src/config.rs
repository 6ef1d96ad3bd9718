//! The `[target]` table of a task file when `kind = "parquet"`.
//!
//! The option names follow the AWS DMS S3 endpoint settings they stand in for
//! (`IncludeOpForFullLoad`, `TimestampColumnName`, `MaxFileSize`, `CompressionType`,
//! `ParquetTimestampInMillisecond`), so a DMS task translates key by key; `dms_compatible` sets
//! DMS's own choices for the keys a task leaves out.

use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use serde::Deserialize;

/// `[target]` table of a task file when kind = "parquet". Unknown keys are rejected, so a typo is
/// an error instead of a silently ignored setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetTargetConfig {
    /// `"file:///abs/path"`, a plain path (relative to the working directory, e.g.
    /// `"./warehouse"`), or `"s3://bucket/prefix"`.
    pub url: String,
    /// Start a new file once the current one reaches this many MiB (DMS `MaxFileSize`).
    #[serde(default = "default_file_size_mb")]
    pub file_size_mb: u64,
    /// Page compression codec (DMS `CompressionType`); unset: zstd, or gzip with
    /// `dms_compatible`.
    #[serde(default)]
    pub compression: Option<ParquetCompression>,
    /// Compression level of zstd (1..=22, default 1) or gzip (0..=9, default 6); the other
    /// codecs have none.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Maximum rows per row group (also bounded to 128 MiB of encoded data, see
    /// [`crate::ROW_GROUP_MAX_BYTES`]).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// DMS `IncludeOpForFullLoad`: write a first column `Op` (Utf8) holding `"I"` on every row.
    #[serde(default)]
    pub include_op_for_full_load: bool,
    /// DMS `TimestampColumnName`: add a column of this name holding, in full-load files, the
    /// time the batch was written and, in change files, the commit time; it comes after `Op` and
    /// before the table's columns. Typed by `timestamp_column_type`.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// How `timestamp_column` is typed: `string` (DMS's: UTF-8 text
    /// `yyyy-MM-dd HH:mm:ss.SSSSSS`, UTC) or `timestamp` (a Parquet TIMESTAMP adjusted to UTC,
    /// in `timestamp_unit`).
    #[serde(default)]
    pub timestamp_column_type: TimestampColumnType,
    /// DMS `ParquetTimestampInMillisecond`: the unit of every TIMESTAMP column written, `us`
    /// (DMS's default) or `ms` (sub-millisecond digits are dropped, rounding toward the past).
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// Write the columns DMS does not write in change files: `_inlet_commit_ts` (unless
    /// `timestamp_column` names the commit time), `_inlet_lsn` and `_inlet_txid`. Unset: true,
    /// or false with `dms_compatible`.
    #[serde(default)]
    pub inlet_columns: Option<bool>,
    /// Shape the files as an AWS DMS task with a Parquet S3 endpoint would: keys left out take
    /// DMS's choices (`compression = "gzip"`, `inlet_columns = false`), and settings DMS cannot
    /// produce are refused.
    #[serde(default)]
    pub dms_compatible: bool,
    /// The name of the operation column (`I`/`U`/`D`/`T`) that change files (and, with
    /// `include_op_for_full_load`, LOAD files) start with. DMS always writes `Op`; set another
    /// name when a table has a column named `Op` (compared case-insensitively).
    #[serde(default = "default_op_column")]
    pub op_column: String,
    /// DMS `CdcInsertsOnly`: change files keep inserts only (no `Op` column is needed to read
    /// them, but it is still written).
    #[serde(default)]
    pub cdc_inserts_only: bool,
    /// DMS `CdcInsertsAndUpdates`: change files keep inserts and updates, not deletes.
    #[serde(default)]
    pub cdc_inserts_and_updates: bool,
    /// `portable` (default): uuid and time columns as text, which every common reader takes;
    /// `exact`: Parquet UUID and TIME(MICROS) (see `inlet_core::TypeForms`).
    #[serde(default)]
    pub types: inlet_core::TypeForms,
}

/// The largest `file_size_mb` (see [`ParquetTargetConfig::validate`]).
const MAX_FILE_SIZE_MB: u64 = 4096;

fn default_file_size_mb() -> u64 {
    128
}

fn default_op_column() -> String {
    crate::OP_COLUMN.to_string()
}

/// zstd level 1: most of zstd's gain at a fraction of its higher levels' CPU.
const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// gzip's own default level.
const DEFAULT_GZIP_LEVEL: i32 = 6;

fn default_row_group_rows() -> usize {
    122_880
}

/// Page compression codec of the Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// Zstandard at `compression_level` (the default: small files, fast to read).
    #[default]
    Zstd,
    Snappy,
    /// LZ4 as the Parquet `LZ4_RAW` codec; the older `LZ4` codec is deprecated by the Parquet
    /// format because its framing differed between writers.
    Lz4,
    /// Gzip (deflate), DMS's `CompressionType = GZIP`, at `compression_level`.
    Gzip,
    /// No compression.
    None,
}

impl ParquetCompression {
    fn key_value(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Gzip => "gzip",
            Self::None => "none",
        }
    }
}

/// How the `timestamp_column` is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampColumnType {
    /// UTF-8 text `yyyy-MM-dd HH:mm:ss.SSSSSS` in UTC: what DMS writes (its documentation of
    /// `TimestampColumnName` says "an additional STRING column").
    #[default]
    String,
    /// A Parquet TIMESTAMP adjusted to UTC, in `timestamp_unit`.
    Timestamp,
}

/// The unit of the TIMESTAMP columns written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Microseconds, the precision PostgreSQL and MySQL keep (DMS's default).
    #[default]
    Us,
    /// Milliseconds (DMS `ParquetTimestampInMillisecond = true`).
    Ms,
}

impl ParquetTargetConfig {
    /// A target at `url` with every other setting at its default.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            file_size_mb: default_file_size_mb(),
            compression: None,
            compression_level: None,
            row_group_rows: default_row_group_rows(),
            include_op_for_full_load: false,
            timestamp_column: None,
            timestamp_column_type: TimestampColumnType::default(),
            timestamp_unit: TimestampUnit::default(),
            inlet_columns: None,
            dms_compatible: false,
            op_column: default_op_column(),
            cdc_inserts_only: false,
            cdc_inserts_and_updates: false,
            types: inlet_core::TypeForms::default(),
        }
    }

    /// The codec: `compression`, or its default (zstd; gzip with `dms_compatible`).
    pub fn compression(&self) -> ParquetCompression {
        match self.compression {
            Some(c) => c,
            None if self.dms_compatible => ParquetCompression::Gzip,
            None => ParquetCompression::Zstd,
        }
    }

    /// Whether change files carry `_inlet_commit_ts`, `_inlet_lsn` and `_inlet_txid`.
    pub fn inlet_columns(&self) -> bool {
        self.inlet_columns.unwrap_or(!self.dms_compatible)
    }

    /// The parquet codec for these settings, or a message saying which value is wrong.
    pub(crate) fn codec(&self) -> Result<Compression, String> {
        let compression = self.compression();
        let level_error = |range: &str| {
            format!(
                "compression_level = {} is not a valid {} level; use {range}",
                self.compression_level.unwrap_or_default(),
                compression.key_value()
            )
        };
        Ok(match compression {
            ParquetCompression::Zstd => {
                let level = self.compression_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
                let level = ZstdLevel::try_new(level)
                    .map_err(|_| level_error("1 (fast) to 22 (smallest)"))?;
                Compression::ZSTD(level)
            }
            ParquetCompression::Gzip => {
                let level = self.compression_level.unwrap_or(DEFAULT_GZIP_LEVEL);
                let level = u32::try_from(level)
                    .ok()
                    .and_then(|l| GzipLevel::try_new(l).ok())
                    .ok_or_else(|| level_error("0 (none) to 9 (smallest)"))?;
                Compression::GZIP(level)
            }
            // These codecs have no level; a level set for them is ignored, as it always was.
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Lz4 => Compression::LZ4_RAW,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        })
    }

    /// Checks the settings that do not depend on the URL; the message names the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.file_size_mb == 0 {
            return Err("file_size_mb must be at least 1".into());
        }
        // A full load's files are moved from the staging folder into the table's once the load
        // is complete (crate::load), and S3 copies (moves) objects of at most 5 GiB in one
        // request. A file ends after the row group that reaches the size, so it can exceed it
        // by one row group (at most ROW_GROUP_MAX_BYTES, 128 MiB): 4096 leaves room.
        if self.file_size_mb > MAX_FILE_SIZE_MB {
            return Err(format!(
                "file_size_mb = {} is too large; at most {MAX_FILE_SIZE_MB}: a full load's files \
                 are moved into the table's folder once the load is complete, and S3 moves \
                 objects of at most 5 GiB (files of 128 to 1024 MiB read best)",
                self.file_size_mb
            ));
        }
        if self.row_group_rows == 0 {
            return Err("row_group_rows must be at least 1".into());
        }
        self.codec()?;
        if self.cdc_inserts_only && self.cdc_inserts_and_updates {
            return Err(
                "cdc_inserts_only and cdc_inserts_and_updates exclude each other; set one".into(),
            );
        }
        if self.dms_compatible {
            self.check_dms_compatible()?;
        }
        if self.op_column.is_empty() {
            return Err("op_column must not be empty; leave it out to write `Op`".into());
        }
        if let Some(name) = &self.timestamp_column {
            if name.is_empty() {
                return Err(
                    "timestamp_column must not be empty; leave it out to write no \
                            timestamp column"
                        .into(),
                );
            }
            if name.eq_ignore_ascii_case(&self.op_column) {
                return Err(format!(
                    "timestamp_column = {name:?} collides with the operation column {:?} \
                     (op_column); choose another name",
                    self.op_column
                ));
            }
        }
        Ok(())
    }

    /// Refuses the settings an AWS DMS task cannot produce, naming the key.
    fn check_dms_compatible(&self) -> Result<(), String> {
        let compression = self.compression();
        if !matches!(
            compression,
            ParquetCompression::Gzip | ParquetCompression::None
        ) {
            return Err(format!(
                "compression = {:?} is not one of DMS's (CompressionType GZIP or NONE) and \
                 dms_compatible = true; set compression = \"gzip\" (or leave it out) or \
                 \"none\", or remove dms_compatible",
                compression.key_value()
            ));
        }
        if self.inlet_columns == Some(true) {
            return Err(
                "inlet_columns = true adds columns DMS does not write, and dms_compatible = \
                 true; remove one of the two"
                    .into(),
            );
        }
        if self.timestamp_column_type == TimestampColumnType::Timestamp {
            return Err(
                "timestamp_column_type = \"timestamp\" is not how DMS types its timestamp \
                 column (a string), and dms_compatible = true; remove one of the two"
                    .into(),
            );
        }
        Ok(())
    }
}
