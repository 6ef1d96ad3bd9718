//! Catalogs: where a table's current metadata file is recorded, and how a new one is committed
//! atomically. The folder catalog keeps `metadata/vN.metadata.json` plus `version-hint.text` in
//! the table's folder; `vN` is written create-if-absent, so of two writers of a version only
//! one wins, and a crash between the two writes is healed by probing for newer versions.

use bytes::Bytes;
use iceberg::spec::TableMetadata;
use object_store::path::Path;

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

/// A table's metadata as committed, and which version of it this is.
#[derive(Debug, Clone)]
pub(crate) struct CommittedMetadata {
    pub(crate) metadata: TableMetadata,
    pub(crate) version: u64,
    /// URI of the metadata file (the `metadata-log` of the next version points to it).
    pub(crate) uri: String,
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
        let hint = self.warehouse.get(&subject, &self.hint_path(ident)).await?;
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
        let Some(bytes) = self.warehouse.get(&subject, &path).await? else {
            return Err(IcebergError::state(
                ident.to_string(),
                format!(
                    "version-hint.text names version {version} but {} does not exist; restore \
                     it or fix version-hint.text",
                    self.warehouse.uri(&path)
                ),
            ));
        };
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            IcebergError::metadata(
                ident.to_string(),
                format!(
                    "{} is not valid Iceberg table metadata",
                    self.warehouse.uri(&path)
                ),
                e,
            )
        })?;
        Ok(Some(CommittedMetadata {
            metadata,
            version,
            uri: self.warehouse.uri(&path),
        }))
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
