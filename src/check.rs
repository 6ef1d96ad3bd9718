//! `inlet check`: is this task ready to run? Validates the file, connects to source and target,
//! lists the selected tables with row estimates, and reports each prerequisite with its fix.

use std::path::Path;

use inlet_core::{CheckStatus, Prerequisite, TableSelection};
use inlet_postgres::{discover, prerequisites, PgConnector};

use crate::config::{self, SourceConfig};
use crate::sink::Target;
use crate::JobError;

pub async fn run(path: &Path) -> Result<(), JobError> {
    let config = config::load(path).map_err(JobError::config)?;
    println!(
        "task file {}: ok (task {:?}, mode {:?})",
        path.display(),
        config.task.name,
        config.task.mode
    );
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let target = Target::new(&config.target, &config.task.name)?;
    let mut report = match &config.source {
        SourceConfig::Postgres(source) => postgres(&config, source, &selection).await?,
        SourceConfig::Mysql(source) => mysql(&config, source, &selection).await?,
    };
    report.push(match target.check().await {
        Ok(()) => Prerequisite::ok("target", format!("{} is writable", target.describe())),
        Err(e) => Prerequisite::missing("target", e.message().to_string(), "see the message above"),
    });

    println!();
    for p in &report {
        println!("{p}");
    }
    let missing = report
        .iter()
        .filter(|p| p.status == CheckStatus::Missing)
        .count();
    if missing > 0 {
        return Err(JobError::Failed(format!(
            "{missing} prerequisite(s) missing"
        )));
    }
    // The command that does what the task's mode says: a CDC task started with `full-load`
    // would copy the tables once and never stream.
    let command = match config.task.mode {
        config::Mode::FullLoad => "full-load",
        config::Mode::Cdc | config::Mode::FullLoadAndCdc => "run",
    };
    println!("\nready: `inlet {command} -c {}` will run", path.display());
    Ok(())
}

/// Source side of the report for PostgreSQL: the selected tables and the prerequisites.
async fn postgres(
    config: &config::TaskConfig,
    source: &inlet_postgres::PostgresSourceConfig,
    selection: &TableSelection,
) -> Result<Vec<Prerequisite>, JobError> {
    let connector = PgConnector::new(source)
        .map_err(JobError::config)?
        .with_publication(source.publication_name(&config.task.name));
    let mut report: Vec<Prerequisite> = Vec::new();
    match connector.connect().await {
        Err(e) => report.push(Prerequisite::missing(
            "source connection",
            e.to_string(),
            "check that the server is running and reachable, and source.url (host, port, user, database)",
        )),
        Ok(client) => {
            let tables = match discover(&client, &connector, selection, &config.values.policy()).await {
                Err(inlet_postgres::PgError::Selection(e)) => {
                    report.extend(exclusion_problems(&e));
                    return Ok(report);
                }
                other => other.map_err(JobError::failed)?,
            };
            println!("\nselected tables ({}):", tables.len());
            for t in &tables {
                let rows = t.estimated_rows.map_or("unknown".to_string(), |r| r.to_string());
                let key = if t.schema.primary_key.is_empty() {
                    "no primary key".to_string()
                } else {
                    format!("key ({})", t.schema.primary_key.join(", "))
                };
                println!(
                    "  {:<40} ~{rows:>12} rows  {:>6.1} MB  {:>3} columns  {key}",
                    t.schema.id.to_string(),
                    (t.pages * 8192) as f64 / 1e6,
                    t.schema.columns.len()
                );
            }
            let capture = config.task.mode != config::Mode::FullLoad;
            report.extend(prerequisites(&client, &connector, &tables, capture).await.map_err(JobError::failed)?);
            if capture && !tables.is_empty() {
                // What `inlet run` checks before it writes anything: the slot, the checkpoint,
                // the publication.
                report.extend(crate::cdc::check(config, source, &client, &connector, &tables).await?);
            }
        }
    }
    Ok(report)
}

/// Source side of the report for MySQL/MariaDB.
async fn mysql(
    config: &config::TaskConfig,
    source: &inlet_mysql::MysqlSourceConfig,
    selection: &TableSelection,
) -> Result<Vec<Prerequisite>, JobError> {
    let connector = inlet_mysql::MysqlConnector::new(source).map_err(JobError::config)?;
    let mut report: Vec<Prerequisite> = Vec::new();
    let mut conn = match connector.connect().await {
        Ok(c) => c,
        Err(e) => {
            report.push(Prerequisite::missing(
                "source connection",
                e.to_string(),
                "check that the server is running and reachable, and source.url (host, port, user, database)",
            ));
            return Ok(report);
        }
    };
    let tables = match inlet_mysql::discover(
        &mut conn,
        &connector,
        selection,
        &config.values.policy(),
    )
    .await
    {
        Err(inlet_mysql::MysqlError::Selection(e)) => {
            report.extend(exclusion_problems(&e));
            return Ok(report);
        }
        other => other.map_err(JobError::failed)?,
    };
    println!("\nselected tables ({}):", tables.len());
    for t in &tables {
        let rows = t
            .estimated_rows
            .map_or("unknown".to_string(), |r| r.to_string());
        let key = if t.schema.primary_key.is_empty() {
            "no primary key".to_string()
        } else {
            format!("key ({})", t.schema.primary_key.join(", "))
        };
        println!(
            "  {:<40} ~{rows:>12} rows  {:>6.1} MB  {:>3} columns  {key}",
            t.schema.id.to_string(),
            t.data_bytes as f64 / 1e6,
            t.schema.columns.len()
        );
    }
    let capture = config.task.mode != config::Mode::FullLoad;
    report.extend(
        inlet_mysql::prerequisites(
            &mut conn,
            &connector,
            &tables,
            capture,
            source.server_id(&config.task.name),
        )
        .await
        .map_err(JobError::failed)?,
    );
    Ok(report)
}

/// One MISSING line per `exclude_columns` entry that matches nothing.
fn exclusion_problems(e: &inlet_core::ExclusionError) -> Vec<Prerequisite> {
    e.problems
        .iter()
        .map(|p| Prerequisite::missing(e.setting, p.clone(), e.fix))
        .collect()
}
