//! The `[target]` table of a task file when `kind = "parquet"`.
//!
//! The option names follow the AWS DMS S3 endpoint settings they stand in for
//! (`IncludeOpForFullLoad`, `TimestampColumnName`, `MaxFileSize`), so a DMS task translates key by
//! key.

use parquet::basic::{Compression, ZstdLevel};
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
    /// Page compression codec.
    #[serde(default)]
    pub compression: ParquetCompression,
    /// Compression level; used by zstd (1..=22), ignored by the other codecs.
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// Maximum rows per row group (also bounded to 128 MiB of encoded data, see
    /// [`crate::ROW_GROUP_MAX_BYTES`]).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// DMS `IncludeOpForFullLoad`: write a first column `Op` (Utf8) holding `"I"` on every row.
    #[serde(default)]
    pub include_op_for_full_load: bool,
    /// DMS `TimestampColumnName`: add a `Timestamp(µs, "UTC")` column of this name holding the
    /// time the batch was written; it comes after `Op` and before the table's columns.
    #[serde(default)]
    pub timestamp_column: Option<String>,
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

fn default_file_size_mb() -> u64 {
    128
}

fn default_op_column() -> String {
    crate::OP_COLUMN.to_string()
}

fn default_compression_level() -> i32 {
    1
}

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
    /// No compression.
    None,
}

impl ParquetTargetConfig {
    /// A target at `url` with every other setting at its default.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            file_size_mb: default_file_size_mb(),
            compression: ParquetCompression::default(),
            compression_level: default_compression_level(),
            row_group_rows: default_row_group_rows(),
            include_op_for_full_load: false,
            timestamp_column: None,
            op_column: default_op_column(),
            cdc_inserts_only: false,
            cdc_inserts_and_updates: false,
            types: inlet_core::TypeForms::default(),
        }
    }

    /// The parquet codec for these settings, or a message saying which value is wrong.
    pub(crate) fn codec(&self) -> Result<Compression, String> {
        Ok(match self.compression {
            ParquetCompression::Zstd => {
                let level = ZstdLevel::try_new(self.compression_level).map_err(|_| {
                    format!(
                        "compression_level = {} is not a valid zstd level; use 1 (fast) to 22 \
                         (smallest)",
                        self.compression_level
                    )
                })?;
                Compression::ZSTD(level)
            }
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
        // Shifting by 20 must not overflow: 2^44 MiB is far beyond any object store's limit.
        if self.file_size_mb > (1 << 24) {
            return Err(format!(
                "file_size_mb = {} is too large; S3 objects are at most 5 TiB, and files of \
                 128 to 1024 MiB read best",
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
}
