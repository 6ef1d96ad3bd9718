//! The PostgreSQL CDC workload shared by the Parquet and Iceberg end-to-end tests: two tables
//! with a `version` column every update increments, and rounds of single-row and multi-table
//! transactions of every kind (key changes and truncates included).

pub const SCHEMA: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, owner text, balance numeric(12,2));
CREATE TABLE events (id bigint PRIMARY KEY, version int NOT NULL, account bigint, note text);
INSERT INTO accounts SELECT g, 0, 'owner ' || g, g * 10 FROM generate_series(1, 2000) g;
INSERT INTO events SELECT g, 0, g % 2000 + 1, repeat('e', g % 50) FROM generate_series(1, 1000) g;
";
pub const ACCOUNT_COLUMNS: &[&str] = &["id", "version", "owner", "balance"];
pub const EVENT_COLUMNS: &[&str] = &["id", "version", "account", "note"];

/// One round of the workload: single-row and multi-table transactions of every kind.
pub async fn workload(client: &tokio_postgres::Client, round: i64) {
    let base = 100_000 + round * 1000;
    client
        .batch_execute(&format!(
            "INSERT INTO accounts SELECT g, 0, 'new ' || g, g FROM generate_series({base}, {base} + 199) g;
             UPDATE accounts SET version = version + 1, balance = balance + 1 WHERE id % 7 = {r};
             DELETE FROM accounts WHERE id % 97 = {r} AND id < 2000;
             BEGIN;
               INSERT INTO events SELECT g, 0, g % 2000 + 1, 'ev ' || g FROM generate_series({base}, {base} + 49) g;
               UPDATE accounts SET version = version + 1, owner = owner || '+' WHERE id = {base};
               DELETE FROM events WHERE id = {base} + 1;
               UPDATE events SET version = version + 1, note = 'changed' WHERE id % 11 = {r};
             COMMIT;
             UPDATE accounts SET version = version + 1, id = id + 500000 WHERE id = {base} + 2;
             {truncate}",
            r = round % 7,
            // Now and then the events table is emptied and refilled in one transaction.
            truncate = if round % 3 == 2 {
                format!(
                    "BEGIN; TRUNCATE events; INSERT INTO events SELECT g, 0, 1, 'after truncate' \
                     FROM generate_series({base} + 500, {base} + 519) g; COMMIT;"
                )
            } else {
                String::new()
            }
        ))
        .await
        .unwrap();
}
