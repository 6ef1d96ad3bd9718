//! Catalogs: where a table's current metadata file is recorded, and how a new one is committed
//! atomically. The folder catalog keeps `metadata/vN.metadata.json` plus `version-hint.text` in
//! the table's folder; `vN` is written create-if-absent, so of two writers of a version only
//! one wins, and a crash between the two writes is healed by probing for newer versions. The
//! Glue catalog ([`crate::glue`]) writes `metadata/NNNNN-<uuid>.metadata.json` and swaps the
//! Glue table's `metadata_location` conditionally. The REST catalog ([`crate::rest`]) is sent
//! the metadata builder's changes and writes the metadata file itself.

use bytes::Bytes;
use iceberg::spec::TableMetadata;
use iceberg::TableUpdate;
use object_store::path::Path;

use crate::glue::{GlueClient, TableInput};
use crate::rest::RestClient;
use crate::store::Warehouse;
use crate::IcebergError;

/// A table's name in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableIdent {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for TableIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// Longest Glue database and table names Iceberg's GlueCatalog accepts (bytes).
pub(crate) const MAX_NAMESPACE_BYTES: usize = 252;
pub(crate) const MAX_TABLE_BYTES: usize = 255;

/// `name` as Athena, Glue and Iceberg's GlueCatalog accept it (`target.names = "athena"`):
/// lowercase; every character but ASCII letters, digits and `_` becomes `_` (`Zoo Schema` →
/// `zoo_schema`, `café` → `caf_`); cut to `max_bytes`; `_` for an empty name. A namespace is
/// named level by level (a `.` separates a REST catalog's levels and is kept).
///
/// Why this rule: Athena lowercases every name and wants Glue names in lowercase, 1–255 bytes;
/// Iceberg's GlueCatalog (Spark, Trino and Flink through Glue) refuses to load a table whose
/// database or table name is not `[a-z0-9_]{1,252}` / `{1,255}`. The source's name is kept in
/// the table's `comment` property (Glue: its description) whenever the two differ.
pub fn athena_name(name: &str, max_bytes: usize) -> String {
    let mut out: String = name
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // ASCII only now: every byte is a char boundary.
    out.truncate(max_bytes);
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// A table's metadata as committed, and which version of it this is.
#[derive(Debug, Clone)]
pub(crate) struct CommittedMetadata {
    pub(crate) metadata: TableMetadata,
    pub(crate) version: u64,
    /// URI of the metadata file (the `metadata-log` of the next version points to it).
    pub(crate) uri: String,
}

/// Where tables are registered.
#[derive(Debug, Clone)]
pub(crate) enum Catalog {
    Folder(FolderCatalog),
    Glue {
        folder: FolderCatalog,
        glue: GlueClient,
    },
    Rest {
        folder: FolderCatalog,
        rest: RestClient,
    },
}

impl Catalog {
    fn folder(&self) -> &FolderCatalog {
        match self {
            Catalog::Folder(f)
            | Catalog::Glue { folder: f, .. }
            | Catalog::Rest { folder: f, .. } => f,
        }
    }

    pub(crate) fn warehouse(&self) -> &Warehouse {
        &self.folder().warehouse
    }

    /// Key of a table's folder: `<warehouse>/<namespace>/<name>` (where a new table is
    /// created).
    pub(crate) fn table_dir(&self, ident: &TableIdent) -> Path {
        self.folder().table_dir(ident)
    }

    /// Key of the folder an existing table's files are written to. A REST catalog may have
    /// placed the table elsewhere in the warehouse: there, its own location; otherwise
    /// [`Self::table_dir`].
    pub(crate) fn files_dir(
        &self,
        ident: &TableIdent,
        metadata: &TableMetadata,
    ) -> Result<Path, IcebergError> {
        match self {
            Catalog::Rest { folder, .. } => {
                let location = metadata.location().trim_end_matches('/');
                folder.warehouse.path_of(location).map_err(|m| {
                    IcebergError::state(
                        ident.to_string(),
                        format!(
                            "the table's location is not in the warehouse inlet writes to \
                             ({m}); set `warehouse` to the catalog's warehouse location"
                        ),
                    )
                })
            }
            Catalog::Folder(_) | Catalog::Glue { .. } => Ok(self.table_dir(ident)),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Catalog::Folder(_) => "folder catalog".into(),
            Catalog::Glue { glue, .. } => format!("{} catalog", glue.describe()),
            Catalog::Rest { rest, .. } => rest.describe(),
        }
    }

    /// The table's current metadata, or `None` if the table does not exist.
    pub(crate) async fn load(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<CommittedMetadata>, IcebergError> {
        match self {
            Catalog::Folder(f) => f.load(ident).await,
            Catalog::Glue { folder, glue } => {
                let Some(table) = glue.get_table(&ident.namespace, &ident.name).await? else {
                    return Ok(None);
                };
                let Some(location) = table.metadata_location else {
                    return Err(IcebergError::catalog(
                        glue.describe(),
                        format!(
                            "Glue table {ident} has no metadata_location parameter; drop it                              or restore the parameter"
                        ),
                        false,
                    ));
                };
                folder.read_metadata(ident, &location).await.map(Some)
            }
            Catalog::Rest { rest, .. } => {
                Ok(rest.load_table(ident).await?.map(|t| CommittedMetadata {
                    version: version_of(&t.metadata_location).unwrap_or(0),
                    metadata: t.metadata,
                    uri: t.metadata_location,
                }))
            }
        }
    }

    /// Commits `metadata` as the version after `previous` (or as a new table): fails with
    /// [`IcebergError::CommitConflict`] if another writer committed (or created the table)
    /// first. `changes` are the metadata builder's record of how `metadata` differs from
    /// `previous`; the REST catalog is sent those (and, for a new table, `metadata`'s schema,
    /// spec and location), and answers with the metadata it committed.
    pub(crate) async fn commit(
        &self,
        ident: &TableIdent,
        metadata: TableMetadata,
        changes: Vec<TableUpdate>,
        previous: Option<&CommittedMetadata>,
    ) -> Result<CommittedMetadata, IcebergError> {
        let version = previous.map_or(1, |p| p.version + 1);
        let (folder, glue) = match self {
            Catalog::Folder(f) => return f.commit(ident, metadata, version).await,
            Catalog::Glue { folder, glue } => (folder, glue),
            Catalog::Rest { folder, rest } => {
                return rest_commit(folder, rest, ident, metadata, changes, previous).await
            }
        };
        let wh = &folder.warehouse;
        let subject = format!("table {ident}");
        let conflict = || IcebergError::CommitConflict {
            table: ident.to_string(),
            version,
        };
        let json = serde_json::to_vec(&metadata).map_err(|e| {
            IcebergError::metadata(ident.to_string(), "cannot serialize table metadata", e)
        })?;
        let path = folder.table_dir(ident).join("metadata").join(format!(
            "{version:05}-{}.metadata.json",
            uuid::Uuid::new_v4()
        ));
        let uri = wh.uri(&path);
        wh.put_if_absent(&subject, &path, Bytes::from(json)).await?;
        let input = TableInput {
            location: metadata.location(),
            metadata_location: &uri,
            previous_metadata_location: previous.map(|p| p.uri.as_str()),
            schema: metadata.current_schema(),
            description: metadata.properties().get("comment").map(String::as_str),
        };
        let won = match previous {
            None => {
                glue.ensure_database(&ident.namespace).await?;
                glue.create_table(&ident.namespace, &ident.name, input)
                    .await?
            }
            Some(previous) => {
                // The VersionId read with the expected location makes the update conditional
                // (Glue refuses it if the table changed since); the location check also catches
                // a writer that won before this read.
                let current = glue.get_table(&ident.namespace, &ident.name).await?;
                match current {
                    Some(t) if t.metadata_location.as_deref() == Some(previous.uri.as_str()) => {
                        glue.update_table(
                            &ident.namespace,
                            &ident.name,
                            t.version_id.as_deref(),
                            input,
                        )
                        .await?
                    }
                    _ => false,
                }
            }
        };
        if !won {
            // Nobody references the file; remove it (best effort: maintenance removes it too).
            if let Err(e) = wh.delete(&subject, vec![path]).await {
                tracing::warn!(table = %ident, error = %e, "could not remove an unused metadata file");
            }
            return Err(conflict());
        }
        Ok(CommittedMetadata {
            metadata,
            version,
            uri,
        })
    }
}

/// A commit through the REST catalog: create the table, or send the changes.
async fn rest_commit(
    folder: &FolderCatalog,
    rest: &RestClient,
    ident: &TableIdent,
    metadata: TableMetadata,
    changes: Vec<TableUpdate>,
    previous: Option<&CommittedMetadata>,
) -> Result<CommittedMetadata, IcebergError> {
    let version = previous.map_or(1, |p| p.version + 1);
    let conflict = || IcebergError::CommitConflict {
        table: ident.to_string(),
        version,
    };
    let committed = match previous {
        None => {
            rest.ensure_namespace(&ident.namespace).await?;
            let created = rest
                .create_table(ident, &metadata)
                .await?
                .ok_or_else(conflict)?;
            let requested = metadata.location().trim_end_matches('/');
            let placed = created.metadata.location().trim_end_matches('/');
            if placed != requested {
                // inlet writes the table's files under its location: fine anywhere the
                // warehouse's store reaches.
                if let Err(m) = folder.warehouse.path_of(placed) {
                    return Err(IcebergError::catalog(
                        rest.name(),
                        format!(
                            "creating table {ident}: inlet asked for location {requested} but the \
                             catalog placed the table at {placed}, which inlet cannot write \
                             ({m}); set `warehouse` to the catalog's warehouse location (then \
                             drop the table in the catalog and restart)"
                        ),
                        false,
                    ));
                }
                tracing::info!(table = %ident, location = placed, "the catalog chose the table's location");
            }
            created
        }
        Some(previous) => rest
            .commit_table(ident, &previous.metadata, changes)
            .await?
            .ok_or_else(conflict)?,
    };
    Ok(CommittedMetadata {
        version: version_of(&committed.metadata_location).unwrap_or(version),
        metadata: committed.metadata,
        uri: committed.metadata_location,
    })
}

/// The version a metadata file's name starts with (`vN.metadata.json`,
/// `NNNNN-<uuid>.metadata.json`).
fn version_of(uri: &str) -> Option<u64> {
    let name = uri.rsplit('/').next()?.trim_start_matches('v');
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().ok()
}

/// The embedded catalog: metadata files in the table folder.
#[derive(Debug, Clone)]
pub(crate) struct FolderCatalog {
    pub(crate) warehouse: Warehouse,
}

impl FolderCatalog {
    /// Key of a table's folder: `<warehouse>/<namespace>/<name>`.
    pub(crate) fn table_dir(&self, ident: &TableIdent) -> Path {
        self.warehouse
            .prefix
            .clone()
            .join(ident.namespace.as_str())
            .join(ident.name.as_str())
    }

    fn metadata_path(&self, ident: &TableIdent, version: u64) -> Path {
        self.table_dir(ident)
            .join("metadata")
            .join(format!("v{version}.metadata.json"))
    }

    fn hint_path(&self, ident: &TableIdent) -> Path {
        self.table_dir(ident)
            .join("metadata")
            .join("version-hint.text")
    }

    /// The table's current metadata, or `None` if the table does not exist.
    pub(crate) async fn load(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<CommittedMetadata>, IcebergError> {
        let subject = format!("table {ident}");
        // The hint only saves a listing. A hint that cannot be read is passed over, as
        // Iceberg's HadoopCatalog does: another writer of the folder catalog may be rewriting
        // it in place at this moment (a short read), and that is no reason to fail.
        let hint = match self.warehouse.get(&subject, &self.hint_path(ident)).await {
            Ok(hint) => hint,
            Err(e) => {
                tracing::info!(table = %ident, error = %e, "version-hint.text could not be read; finding the newest metadata version by listing");
                None
            }
        };
        let mut version = match hint {
            Some(bytes) => String::from_utf8_lossy(&bytes).trim().parse::<u64>().ok(),
            None => None,
        };
        if version.is_none() {
            // No (readable) hint: the first commit may have died before writing it; find the
            // highest version by listing.
            let dir = self.table_dir(ident).join("metadata");
            version = self
                .warehouse
                .list(&subject, &dir)
                .await?
                .iter()
                .filter_map(|o| {
                    o.location
                        .filename()?
                        .strip_prefix('v')?
                        .strip_suffix(".metadata.json")?
                        .parse::<u64>()
                        .ok()
                })
                .max();
        }
        let Some(mut version) = version else {
            return Ok(None);
        };
        // The hint is written after the metadata file, so it may lag by a version or more.
        while self
            .warehouse
            .exists(&subject, &self.metadata_path(ident, version + 1))
            .await?
        {
            version += 1;
        }
        let path = self.metadata_path(ident, version);
        let mut committed = self
            .read_metadata(ident, &self.warehouse.uri(&path))
            .await?;
        committed.version = version;
        Ok(Some(committed))
    }

    /// Reads a metadata file; its version is the number its name starts with
    /// (`vN.metadata.json`, `NNNNN-<uuid>.metadata.json`), else 0.
    pub(crate) async fn read_metadata(
        &self,
        ident: &TableIdent,
        uri: &str,
    ) -> Result<CommittedMetadata, IcebergError> {
        let subject = format!("table {ident}");
        let path = self
            .warehouse
            .path_of(uri)
            .map_err(|m| IcebergError::state(ident.to_string(), m))?;
        let Some(bytes) = self.warehouse.get(&subject, &path).await? else {
            return Err(IcebergError::state(
                ident.to_string(),
                format!(
                    "the catalog names {uri} as the current metadata but it does not exist; \
                     restore it, or point the catalog at the newest metadata file"
                ),
            ));
        };
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            IcebergError::metadata(
                ident.to_string(),
                format!("{uri} is not valid Iceberg table metadata"),
                e,
            )
        })?;
        let version = path.filename().and_then(version_of).unwrap_or(0);
        Ok(CommittedMetadata {
            metadata,
            version,
            uri: uri.to_string(),
        })
    }

    /// Commits `metadata` as version `version` (the previous one + 1, or 1 for a new table).
    pub(crate) async fn commit(
        &self,
        ident: &TableIdent,
        metadata: TableMetadata,
        version: u64,
    ) -> Result<CommittedMetadata, IcebergError> {
        let subject = format!("table {ident}");
        let json = serde_json::to_vec(&metadata).map_err(|e| {
            IcebergError::metadata(ident.to_string(), "cannot serialize table metadata", e)
        })?;
        let path = self.metadata_path(ident, version);
        if !self
            .warehouse
            .put_if_absent(&subject, &path, Bytes::from(json))
            .await?
        {
            return Err(IcebergError::CommitConflict {
                table: ident.to_string(),
                version,
            });
        }
        // The commit is durable now; the hint only saves readers a probe. A failure to write it
        // is healed by the next commit and by load()'s probing.
        if let Err(e) = self
            .warehouse
            .put(
                &subject,
                &self.hint_path(ident),
                Bytes::from(version.to_string()),
            )
            .await
        {
            tracing::warn!(table = %ident, error = %e, "could not update version-hint.text");
        }
        Ok(CommittedMetadata {
            metadata,
            version,
            uri: self.warehouse.uri(&path),
        })
    }
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    #[test]
    fn athena_names_are_lowercase_letters_digits_and_underscores() {
        assert_eq!(athena_name("Zoo Schema", 255), "zoo_schema");
        assert_eq!(athena_name("Edge-Types.v2", 255), "edge_types_v2");
        assert_eq!(athena_name("orders", 255), "orders");
        assert_eq!(athena_name("_Ünïcode", 255), "__n_code");
        assert_eq!(athena_name("", 255), "_");
        assert_eq!(athena_name(&"A".repeat(300), 255), "a".repeat(255));
    }
}
