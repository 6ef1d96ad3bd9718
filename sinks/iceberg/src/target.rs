//! The target: the warehouse, its catalog and the encoding settings, plus opening a table for
//! a full load or for upserts (creating it, or evolving its schema, as needed).

use arrow_array::RecordBatch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use iceberg::spec::Schema;
use inlet_core::{Position, TableId, TableSchema};
use object_store::aws::AmazonS3Builder;
use parquet::file::properties::WriterProperties;

use crate::catalog::{
    athena_name, Catalog, FolderCatalog, TableIdent, MAX_NAMESPACE_BYTES, MAX_TABLE_BYTES,
};
use crate::config::{CatalogConfig, IcebergTargetConfig, TableNames};
use crate::files::{writer_properties, FileLocations};
use crate::glue::GlueClient;
use crate::partition::{build_spec, PartitionField, Partitioner};
use crate::rest::RestClient;
use crate::schema::{same_columns, TableLayout};
use crate::snapshot::{TableCatalog, TableState};
use crate::store::Warehouse;
use crate::{IcebergError, LoadTable, UpsertTable};

/// Table property naming the source table an Iceberg table holds.
const SOURCE_TABLE_KEY: &str = "inlet.source-table";
/// Table property saying how the table's columns are named (`athena` or `source`), decided when
/// the table is created; a table without it (created before `names`) has the source's names.
const COLUMN_NAMES_KEY: &str = "inlet.column-names";

/// An Iceberg target. Cheap to clone; shared by every table of a task.
#[derive(Clone)]
pub struct IcebergTarget {
    pub(crate) inner: Arc<TargetInner>,
}

pub(crate) struct TargetInner {
    pub(crate) config: IcebergTargetConfig,
    pub(crate) warehouse: Warehouse,
    pub(crate) catalog: Catalog,
    pub(crate) task: String,
    pub(crate) props: WriterProperties,
    /// The lease epoch under which the task is owned (0: none): see [`crate::lease`].
    pub(crate) owner_epoch: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for IcebergTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergTarget")
            .field("warehouse", &self.describe())
            .field("task", &self.inner.task)
            .finish()
    }
}

/// A table opened for writing: where it is, its layout and committed state, and the schema
/// change (if any) its next commit carries.
pub(crate) struct OpenedTable {
    pub(crate) catalog: TableCatalog,
    pub(crate) state: TableState,
    pub(crate) layout: TableLayout,
    /// The schema files are written with (the table's, or the evolved one).
    pub(crate) schema: Schema,
    pub(crate) schema_changed: bool,
    pub(crate) locations: FileLocations,
    /// Splits rows by the table's partition spec; `None` when unpartitioned.
    pub(crate) partitioner: Option<Arc<Partitioner>>,
    /// How the table's columns are named (its `inlet.column-names`).
    pub(crate) column_names: TableNames,
}

impl IcebergTarget {
    /// Validates the settings and opens the warehouse. The only I/O is creating a local
    /// warehouse folder; S3 is first contacted by [`Self::check`] or the first table.
    pub fn new(config: &IcebergTargetConfig, task: &str) -> Result<Self, IcebergError> {
        Self::with_s3_builder(config, task, AmazonS3Builder::from_env)
    }

    /// [`Self::new`] with S3 settings from `s3` instead of the environment (tests).
    pub fn with_s3_builder(
        config: &IcebergTargetConfig,
        task: &str,
        s3: impl FnOnce() -> AmazonS3Builder,
    ) -> Result<Self, IcebergError> {
        config.validate()?;
        let s3 = s3();
        let warehouse = Warehouse::open(&config.warehouse, || s3.clone())?;
        let folder = FolderCatalog {
            warehouse: warehouse.clone(),
        };
        let catalog = match &config.catalog {
            CatalogConfig::Folder => Catalog::Folder(folder),
            CatalogConfig::Glue {
                catalog_id,
                endpoint,
            } => Catalog::Glue {
                folder,
                glue: GlueClient::new(&s3, endpoint.as_deref(), catalog_id.clone())?,
            },
            rest @ CatalogConfig::Rest { .. } => Catalog::Rest {
                folder,
                rest: RestClient::new(rest, &s3)?,
            },
        };
        Ok(Self {
            inner: Arc::new(TargetInner {
                config: config.clone(),
                catalog,
                warehouse,
                task: task.to_string(),
                props: writer_properties(config.compression_level),
                owner_epoch: Arc::default(),
            }),
        })
    }

    /// Where this target writes, e.g. `s3://bucket/warehouse (folder catalog)`; never
    /// credentials.
    pub fn describe(&self) -> String {
        format!(
            "iceberg {} ({})",
            self.inner.warehouse.describe(),
            self.inner.catalog.describe()
        )
    }

    /// Writes, reads back, lists and deletes a probe object in the warehouse, and checks that
    /// create-if-absent writes (the folder catalog's commit) are refused on an existing object.
    /// With the Glue catalog, also lists Glue databases (endpoint and credentials); with the
    /// REST catalog, reads its config (URI and credentials).
    pub async fn check(&self) -> Result<(), IcebergError> {
        match &self.inner.catalog {
            Catalog::Glue { glue, .. } => glue.check().await?,
            Catalog::Rest { rest, .. } => rest.check().await?,
            Catalog::Folder(_) => {}
        }
        let wh = &self.inner.warehouse;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let probe = wh
            .prefix
            .clone()
            .join(format!("inlet-check-{}-{nanos}.tmp", std::process::id()));
        let subject = format!("iceberg warehouse {}", wh.describe());
        let payload = Bytes::from_static(b"inlet check: safe to delete\n");
        wh.put_if_absent(&subject, &probe, payload.clone()).await?;
        let refused = !wh.put_if_absent(&subject, &probe, payload).await?;
        wh.list(&subject, &wh.prefix).await?;
        wh.delete(&subject, vec![probe.clone()]).await?;
        if !refused {
            return Err(IcebergError::OpenStore {
                warehouse: wh.describe(),
                message: "the store accepted a create-if-absent write over an existing object"
                    .into(),
                hint: "the folder catalog needs conditional writes (If-None-Match) to commit \
                       safely; use AWS S3 or MinIO 2024+"
                    .into(),
            });
        }
        Ok(())
    }

    /// The Iceberg name a new table of a source table gets (`names`): Athena's form of the
    /// namespace and table name, or the source's own.
    pub fn ident(&self, table: &TableId) -> TableIdent {
        let source = self.source_ident(table);
        match self.inner.config.names {
            TableNames::Source => source,
            TableNames::Athena => TableIdent {
                // A `.` separates a REST catalog's namespace levels: each level is named alone.
                namespace: source
                    .namespace
                    .split('.')
                    .map(|level| athena_name(level, MAX_NAMESPACE_BYTES))
                    .collect::<Vec<_>>()
                    .join("."),
                name: athena_name(&source.name, MAX_TABLE_BYTES),
            },
        }
    }

    /// The name as the source spells it (what every table was called before `names`).
    fn source_ident(&self, table: &TableId) -> TableIdent {
        TableIdent {
            namespace: self
                .inner
                .config
                .namespace
                .clone()
                .unwrap_or_else(|| table.schema.clone()),
            name: table.name.clone(),
        }
    }

    /// The committed position of a table (`inlet.position` of the newest snapshot this task
    /// wrote, behind any of other engines; see `TableState::position`), or `None` if the table
    /// does not exist or has none. The daemon resumes the source from the
    /// smallest of these.
    pub async fn committed_position(
        &self,
        table: &TableId,
    ) -> Result<Option<Position>, IcebergError> {
        let catalog = self.table_catalog(table).await?;
        Ok(catalog.catalog.load(&catalog.ident).await?.and_then(|c| {
            TableState {
                committed: c,
                manifests: Vec::new(),
            }
            .position(&self.inner.task)
        }))
    }

    /// The URI of a table's current metadata file (what readers such as DuckDB's
    /// `iceberg_scan` open), or `None` if the table does not exist.
    pub async fn metadata_location(&self, table: &TableId) -> Result<Option<String>, IcebergError> {
        let catalog = self.table_catalog(table).await?;
        Ok(catalog.catalog.load(&catalog.ident).await?.map(|c| c.uri))
    }

    /// Starts the full load of a table: creates it if absent, or prepares to replace its
    /// contents. Parallel writers share the returned [`LoadTable`].
    pub async fn full_load(&self, table: &TableSchema) -> Result<LoadTable, IcebergError> {
        let opened = self.open(table, true).await?;
        Ok(LoadTable::new(self.clone(), opened))
    }

    /// Opens a table for CDC upserts: loads it (creating it if absent) and rebuilds the
    /// primary-key index from its files.
    pub async fn upsert_table(&self, table: &TableSchema) -> Result<UpsertTable, IcebergError> {
        let opened = self.open(table, false).await?;
        UpsertTable::open(self.clone(), opened).await
    }

    /// The table as its files hold it: uuid and time columns as text unless `types = "exact"`;
    /// columns named as Athena accepts them when `names` says so, the source's name then kept in
    /// the column's doc (Glue: its comment) where it differs.
    pub(crate) fn written_table(
        &self,
        table: &TableSchema,
        names: TableNames,
    ) -> Result<TableSchema, IcebergError> {
        let mut table = match self.inner.config.types {
            inlet_core::TypeForms::Portable => inlet_core::portable_table(table),
            inlet_core::TypeForms::Exact => table.clone(),
        };
        if names == TableNames::Athena {
            let mut seen: HashMap<String, String> = HashMap::new();
            for c in &mut table.columns {
                let name = athena_name(&c.name, MAX_TABLE_BYTES);
                if let Some(other) = seen.insert(name.clone(), c.name.clone()) {
                    return Err(IcebergError::schema(
                        table.id.to_string(),
                        format!(
                            "columns {other:?} and {:?} are both named {name} under \
                             target.names = \"athena\"; exclude one of them \
                             (tables.exclude_columns) or set target.names = \"source\" and \
                             reload the table",
                            c.name
                        ),
                    ));
                }
                if name != c.name {
                    c.source_type = format!("{} (source column {:?})", c.source_type, c.name);
                    c.field = c.field.clone().with_name(name.clone());
                    c.name = name;
                }
            }
            for k in &mut table.primary_key {
                *k = athena_name(k, MAX_TABLE_BYTES);
            }
        }
        Ok(table)
    }

    /// A batch as its files hold it (see [`Self::written_table`]; a change batch's own columns
    /// are Athena names already).
    pub(crate) fn written_batch(
        &self,
        table: &str,
        batch: &RecordBatch,
        names: TableNames,
    ) -> Result<RecordBatch, IcebergError> {
        let batch = match self.inner.config.types {
            inlet_core::TypeForms::Portable => inlet_core::portable_batch(batch).map_err(|e| {
                IcebergError::schema(
                    table,
                    format!("cannot write a uuid or time column as text: {e}"),
                )
            })?,
            inlet_core::TypeForms::Exact => batch.clone(),
        };
        if names == TableNames::Source
            || batch
                .schema()
                .fields()
                .iter()
                .all(|f| athena_name(f.name(), MAX_TABLE_BYTES) == *f.name())
        {
            return Ok(batch);
        }
        let schema = batch.schema();
        let fields: Vec<arrow_schema::Field> = schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_name(athena_name(f.name(), MAX_TABLE_BYTES))
            })
            .collect();
        let renamed = Arc::new(arrow_schema::Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        ));
        RecordBatch::try_new(renamed, batch.columns().to_vec()).map_err(|e| {
            IcebergError::schema(table, format!("cannot rename the batch's columns: {e}"))
        })
    }

    /// Where a source table is in the catalog: under [`Self::ident`], unless no table has that
    /// name and one has the source's own, created before `names` existed (or under
    /// `names = "source"`). That one keeps its name: an upgrade goes on writing the table it
    /// wrote, from its committed position, instead of loading a new one beside it.
    async fn table_catalog(&self, table: &TableId) -> Result<TableCatalog, IcebergError> {
        let catalog = &self.inner.catalog;
        let ident = self.ident(table);
        let source = self.source_ident(table);
        if ident != source
            && catalog.load(&ident).await?.is_none()
            && catalog.load(&source).await?.is_some()
        {
            tracing::warn!(
                table = %table,
                kept = %source,
                athena_name = %ident,
                "the table exists under its source name (written before target.names): it keeps \
                 that name; to move it to the Athena name, drop it and let a full load create it"
            );
            return Ok(TableCatalog {
                catalog: catalog.clone(),
                ident: source,
                owner_epoch: self.inner.owner_epoch.clone(),
            });
        }
        Ok(TableCatalog {
            catalog: catalog.clone(),
            ident,
            owner_epoch: self.inner.owner_epoch.clone(),
        })
    }

    /// The table properties that record which source table an Iceberg table holds: always
    /// `inlet.source-table` (`"schema"."table"`, quoted as SQL quotes names), and `comment` (Glue:
    /// the description) when the table's name is not the source's.
    fn source_properties(table: &TableId, ident: &TableIdent) -> Vec<(String, String)> {
        let quoted = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
        let source = format!("{}.{}", quoted(&table.schema), quoted(&table.name));
        let mut properties = vec![(SOURCE_TABLE_KEY.to_string(), source.clone())];
        if ident.namespace != table.schema || ident.name != table.name {
            properties.push(("comment".to_string(), format!("source table {source}")));
        }
        properties
    }

    /// The upsert key of a table (as [`Self::written_table`] names it): its primary key, else
    /// the configured key columns (source names, named as the table's columns are).
    pub(crate) fn layout(
        &self,
        table: &TableSchema,
        names: TableNames,
    ) -> Result<TableLayout, IcebergError> {
        let configured = self.inner.config.key_columns.get(&table.id.to_string());
        let key = if !table.primary_key.is_empty() {
            table.primary_key.clone()
        } else {
            configured
                .map(|keys| {
                    keys.iter()
                        .map(|k| match names {
                            TableNames::Athena => athena_name(k, MAX_TABLE_BYTES),
                            TableNames::Source => k.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        for k in &key {
            if table.column(k).is_none() {
                return Err(IcebergError::Config {
                    key: format!("key_columns.\"{}\"", table.id),
                    message: format!(
                        "column {k} is not a column of {} (or is excluded); name existing columns",
                        table.id
                    ),
                });
            }
        }
        Ok(TableLayout {
            source: table.clone(),
            key,
        })
    }

    /// Loads or creates the table and works out the schema to write with.
    pub(crate) async fn open(
        &self,
        table: &TableSchema,
        replace: bool,
    ) -> Result<OpenedTable, IcebergError> {
        let catalog = self.table_catalog(&table.id).await?;
        let table_dir = self.inner.catalog.table_dir(&catalog.ident);
        let mut properties = Self::source_properties(&table.id, &catalog.ident);
        let loaded = catalog.load().await?;
        let column_names = match &loaded {
            Some(state) => match state.metadata().properties().get(COLUMN_NAMES_KEY) {
                Some(n) if n == "athena" => TableNames::Athena,
                _ => TableNames::Source,
            },
            None => self.inner.config.names,
        };
        let names_text = match column_names {
            TableNames::Athena => "athena",
            TableNames::Source => "source",
        };
        properties.push((COLUMN_NAMES_KEY.to_string(), names_text.to_string()));
        let table = &self.written_table(table, column_names)?;
        let layout = self.layout(table, column_names)?;
        let state = match loaded {
            Some(state) => {
                // Two source tables whose names differ only where Athena's form drops the
                // difference (`Orders`, `orders`) would write one Iceberg table.
                let held = state.metadata().properties().get(SOURCE_TABLE_KEY);
                if let Some(held) = held.filter(|h| **h != properties[0].1) {
                    return Err(IcebergError::state(
                        catalog.ident.to_string(),
                        format!(
                            "this Iceberg table holds source table {held}, and source table \
                             {} has the same name under target.names = \"athena\"; exclude \
                             one of them, give them separate tasks with their own `namespace`, \
                             or set target.names = \"source\"",
                            properties[0].1
                        ),
                    ));
                }
                state
            }
            None => {
                let schema = layout.iceberg_schema(None, replace)?;
                let spec = self.partition_spec(&table.id, &schema, column_names)?;
                let location = self.inner.warehouse.uri(&table_dir);
                match catalog
                    .create(schema, spec, location, &self.inner.task, properties)
                    .await
                {
                    Ok(state) => state,
                    // Created by someone else meanwhile: use theirs.
                    Err(IcebergError::CommitConflict { .. }) => {
                        catalog.load().await?.ok_or_else(|| {
                            IcebergError::state(
                                catalog.ident.to_string(),
                                "the table was created and vanished again; retry",
                            )
                        })?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let locations = FileLocations {
            warehouse: self.inner.warehouse.clone(),
            table_dir: self
                .inner
                .catalog
                .files_dir(&catalog.ident, state.metadata())?,
            table: catalog.ident.to_string(),
        };
        let current = state.metadata().current_schema().clone();
        let wanted =
            layout.iceberg_schema(Some((&current, state.metadata().last_column_id())), replace)?;
        let (schema, schema_changed) = if same_columns(&wanted, &current) {
            (current.as_ref().clone(), false)
        } else {
            (wanted, true)
        };
        let spec = state.metadata().default_partition_spec().clone();
        let configured = self.partition_spec(&table.id, &schema, column_names)?;
        if configured.fields() != spec.fields() {
            tracing::warn!(
                table = %catalog.ident,
                "the table's partition spec differs from `partition` in the config; the table \
                 keeps its spec (drop the table and reload it to repartition)"
            );
        }
        let partitioner = Partitioner::new(&catalog.ident.to_string(), &spec, &schema)?;
        Ok(OpenedTable {
            catalog,
            state,
            layout,
            schema,
            schema_changed,
            locations,
            partitioner,
            column_names,
        })
    }

    /// The configured partition spec of a table (unpartitioned if none is configured).
    fn partition_spec(
        &self,
        table: &TableId,
        schema: &Schema,
        names: TableNames,
    ) -> Result<iceberg::spec::PartitionSpec, IcebergError> {
        let name = table.to_string();
        let fields = match self.inner.config.partition.get(&name) {
            Some(f) => f
                .iter()
                .map(|t| {
                    let mut field = PartitionField::parse(t)?;
                    if names == TableNames::Athena {
                        field.column = athena_name(&field.column, MAX_TABLE_BYTES);
                    }
                    Ok(field)
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(|message| IcebergError::Config {
                    key: format!("partition.{name:?}"),
                    message,
                })?,
            None => Vec::new(),
        };
        build_spec(&format!("partition.{name:?}"), &fields, schema)
    }
}
