//! `inlet check`: is this task ready to run? Validates the file, connects to source and target,
//! lists the selected tables with row estimates, and reports each prerequisite with its fix.

use std::path::Path;

use inlet_core::{CheckStatus, Prerequisite};

use crate::config;
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
    let target = Target::new(&config.target, &config.task.name)?;
    let state = crate::state::TaskState::detached(&config.task.name);
    let source = crate::engine::check(&config, &state, &target).await?;
    if let Some(tables) = &source.tables {
        println!("\nselected tables ({}):", tables.len());
        for t in tables {
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
                t.bytes as f64 / 1e6,
                t.schema.columns.len()
            );
        }
    }
    let mut report = source.prerequisites;
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
