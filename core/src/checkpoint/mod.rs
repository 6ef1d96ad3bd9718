//! The task checkpoint: how far a task has written every table, what it knows of each table, and
//! what its source needs to resume, as one typed value that every sink stores as JSON at
//! `_inlet/<task>/checkpoint` ([`Checkpoint::encode`], [`Checkpoint::decode`]).
//!
//! Earlier versions (every one before the typed checkpoint) stored a text form instead:
//! `position=<hex>` and then one `key=value` line per fact. [`Checkpoint::decode`] reads that
//! form too ([`legacy`]), so a task resumes from such a checkpoint and its next write stores the
//! JSON form.

mod legacy;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Position;

/// The version of the stored JSON form. The text form of earlier versions counts as 1.
pub const CHECKPOINT_VERSION: u32 = 2;

/// How far a task has written every table: the source may be acknowledged up to `position`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(with = "hex")]
    pub position: Position,
    /// What the task knows of each table, by its name as `schema.table` ([`crate::TableId`]'s
    /// display form). A table without anything to record has no entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: TableStates,
    /// What the source needs to resume at `position`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceResume>,
}

/// The per-table part of a checkpoint, by table name (`schema.table`).
pub type TableStates = BTreeMap<String, TableState>;

/// What a checkpoint records of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// The task has loaded the table, or captures it from its start: a table selected later is
    /// recognised as new (not recorded) and loaded before it streams.
    #[serde(default, skip_serializing_if = "is_false")]
    pub captured: bool,
    /// The position up to which the table, loaded beside the stream, holds every transaction.
    /// Kept while the checkpoint is below it.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<Position>,
    /// Which relation of the source the target holds (PostgreSQL: its oid). A name can come to
    /// mean another relation: a table swap by an online schema change tool, or DROP and CREATE.
    /// More than one while a replaced table waits for its load: the old ones, then the new one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Where the source's log showed the name coming to hold another table (MySQL: a `RENAME
    /// TABLE` onto it, `CREATE TABLE` after a DROP). Until a load that began after it
    /// (`loaded_at`), the target holds another table's rows under the name.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub replaced_at: Option<Position>,
    /// A reload of the table asked for when the checkpoint was at this position (`inlet
    /// resync`). Pending until a load beside the stream at or after it (`loaded_at`).
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub resync_at: Option<Position>,
    /// PostgreSQL: where the table's rows are stored and the columns they were written with, as
    /// of its last load or start (a rewrite changes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageRecord>,
    /// PostgreSQL: the table's columns whose older rows read a default the server never wrote
    /// (`atthasmissing`), as of its last load or start. `None`: not recorded yet; an empty set
    /// is a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwritten_defaults: Option<BTreeSet<String>>,
    /// Key ranges a resumed initial load read in a later snapshot than the stream's start: the
    /// stream drops their changes that snapshot holds ([`crate::held_keys`]). Kept while the
    /// checkpoint is at or below one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_loaded_at: Vec<crate::held_keys::KeysLoadedAt>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TableState {
    /// Whether the state records nothing (then the checkpoint keeps no entry for the table).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds what `other` records: flags and positions combine (the latest position wins),
    /// identities are appended after the ones recorded, and a record `other` holds replaces
    /// this one's.
    pub fn merge(&mut self, other: &TableState) {
        self.captured |= other.captured;
        self.loaded_at = self.loaded_at.max(other.loaded_at);
        for identity in &other.identities {
            if !self.identities.contains(identity) {
                self.identities.push(identity.clone());
            }
        }
        self.replaced_at = self.replaced_at.max(other.replaced_at);
        if other.resync_at.is_some() {
            self.resync_at = other.resync_at;
        }
        if other.storage.is_some() {
            self.storage.clone_from(&other.storage);
        }
        if other.unwritten_defaults.is_some() {
            self.unwritten_defaults
                .clone_from(&other.unwritten_defaults);
        }
        if !other.keys_loaded_at.is_empty() {
            self.keys_loaded_at.clone_from(&other.keys_loaded_at);
        }
    }
}

/// Forgets the key ranges of resumed loads ([`TableState::keys_loaded_at`]) that no change
/// after `position` can fall in.
pub fn forget_keys_loaded_before(tables: &mut TableStates, position: Position) {
    for state in tables.values_mut() {
        state.keys_loaded_at.retain(|k| k.at >= position);
    }
}

/// Merges every table of `other` into `tables` ([`TableState::merge`]).
pub fn merge_tables(tables: &mut TableStates, other: &TableStates) {
    for (name, state) in other {
        tables.entry(name.clone()).or_default().merge(state);
    }
}

/// The position a checkpoint records for `id`'s load, if it joined beside an earlier stream
/// ([`TableState::loaded_at`]).
pub fn loaded_at(tables: &TableStates, id: &crate::TableId) -> Option<Position> {
    tables.get(&id.to_string()).and_then(|t| t.loaded_at)
}

/// Records in `tables` (of a checkpoint at `position`) that `id` must be loaded again
/// ([`TableState::resync_at`]). The position is past any load of the table the checkpoint
/// still records, so only a new load counts as the reload.
pub fn request_reload(tables: &mut TableStates, id: &crate::TableId, position: Position) {
    let at = loaded_at(tables, id).map_or(position, |loaded| {
        Position(loaded.0.saturating_add(1)).max(position)
    });
    tables.entry(id.to_string()).or_default().resync_at = Some(at);
}

/// Records that `id` came to hold another table at `at` ([`TableState::replaced_at`]).
pub fn record_replaced(tables: &mut TableStates, id: &crate::TableId, at: Position) {
    let state = tables.entry(id.to_string()).or_default();
    state.replaced_at = state.replaced_at.max(Some(at));
}

/// Whether `at`, where `id` came to hold another table, is after `id`'s latest load beside the
/// stream (`tables`' `loaded_at`): a load holds the transactions that start before its
/// position, as the stream's replay guard counts them.
pub fn replaced_after_load(tables: &TableStates, id: &crate::TableId, at: Position) -> bool {
    loaded_at(tables, id).is_none_or(|loaded| at >= loaded)
}

/// A PostgreSQL table's storage: its `pg_class.relfilenode` and the catalog rows of its columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRecord {
    pub filenode: i64,
    pub columns: Vec<ColumnRecord>,
}

/// One column's `pg_attribute` row, as far as a rewrite changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRecord {
    /// `attnum`.
    pub num: i32,
    /// The transaction that last wrote the row.
    pub xmin: i64,
    /// `atttypid`.
    pub type_id: i64,
    /// `atttypmod`.
    pub typmod: i32,
    /// `atthasmissing`: older rows read a default kept in the catalog only.
    pub missing: bool,
}

/// What a source needs to resume, besides the position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceResume {
    Postgres(PostgresResume),
    Mysql(MysqlResume),
}

impl SourceResume {
    pub fn postgres(&self) -> Option<&PostgresResume> {
        match self {
            Self::Postgres(p) => Some(p),
            Self::Mysql(_) => None,
        }
    }

    pub fn mysql(&self) -> Option<&MysqlResume> {
        match self {
            Self::Mysql(m) => Some(m),
            Self::Postgres(_) => None,
        }
    }
}

/// PostgreSQL: the replication slot the checkpoint's position belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresResume {
    pub slot: String,
    /// Only in the slot record (`_inlet/<task>.slot/checkpoint`, position: where the slot was
    /// created): who created the slot, so that a start that finds it without a checkpoint can
    /// prove it is the task's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<SlotCreator>,
}

/// Who created a replication slot (see [`PostgresResume::created_by`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCreator {
    pub task: String,
    pub database: String,
    /// Tells two creations apart.
    pub id: String,
    /// The system identifier of the database cluster (IDENTIFY_SYSTEM); `None` in records of
    /// versions before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Written before the slot was created (the position is the server's WAL then).
    #[serde(default, skip_serializing_if = "is_false")]
    pub creating: bool,
}

/// MySQL and MariaDB: where in whose binlog the checkpoint's position is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlResume {
    /// The binlog file of the last commit (its name gives the position's file number a base
    /// name and width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_file: Option<String>,
    /// The GTID set after the last commit, when the server has GTIDs (MySQL's executed set,
    /// MariaDB's `domain-server-seq` list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<String>,
    /// `mysql` or `mariadb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// The `@@server_id` of the server whose binlog positions the checkpoint holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u64>,
    /// Where the oldest XA transaction prepared but not yet committed or rolled back begins: a
    /// restart reads the binlog from there so the rows of its prepare are at hand when its XA
    /// COMMIT comes.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub xa_prepared_from: Option<Position>,
}

/// The stored JSON: the checkpoint and the version of its form.
#[derive(Serialize)]
struct Stored<'a> {
    version: u32,
    #[serde(flatten)]
    checkpoint: &'a Checkpoint,
}

#[derive(Deserialize)]
struct Version {
    version: u32,
}

impl Checkpoint {
    /// A checkpoint at `position` recording nothing else.
    pub fn at(position: Position) -> Self {
        Self {
            position,
            ..Self::default()
        }
    }

    /// The state of table `name` (`schema.table`), created empty if the checkpoint has none.
    pub fn table(&mut self, name: &str) -> &mut TableState {
        self.tables.entry(name.to_string()).or_default()
    }

    /// The stored form: one JSON object with a `version`, tables without state left out.
    pub fn encode(&self) -> String {
        let mut kept = self.clone();
        kept.tables.retain(|_, t| !t.is_empty());
        let stored = Stored {
            version: CHECKPOINT_VERSION,
            checkpoint: &kept,
        };
        // Serializing plain structs, strings and integers into JSON cannot fail.
        let mut text = serde_json::to_string_pretty(&stored).unwrap_or_default();
        text.push('\n');
        text
    }

    /// A checkpoint from its stored form: the JSON of this version, or the text form of
    /// earlier versions. The error says what is wrong with it.
    pub fn decode(stored: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(stored).map_err(|e| format!("not UTF-8 text: {e}"))?;
        if !text.trim_start().starts_with('{') {
            return legacy::decode(text);
        }
        let version: Version =
            serde_json::from_str(text).map_err(|e| format!("not a checkpoint: {e}"))?;
        if version.version != CHECKPOINT_VERSION {
            return Err(format!(
                "its form is version {}, and this inlet reads version {CHECKPOINT_VERSION} (and \
                 the text form of earlier versions): run the inlet version that wrote it",
                version.version
            ));
        }
        serde_json::from_str(text).map_err(|e| format!("not a checkpoint: {e}"))
    }
}

/// A position as the 16 hex digits it has everywhere else (file names, Iceberg summaries).
pub(crate) mod hex {
    use super::Position;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Position, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Position, D::Error> {
        let text = String::deserialize(d)?;
        Position::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("position {text:?} is not 16 hex digits"))
        })
    }
}

mod hex_opt {
    use super::Position;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<Position>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => super::hex::serialize(p, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Position>, D::Error> {
        super::hex::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests;
