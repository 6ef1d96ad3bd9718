//! MySQL 8 (and one MariaDB) binlog files written by real servers, decoded offline through
//! the same capture path as a live stream. Files: tests/fixtures (MIT, see its README).

mod common;

use arrow_schema::DataType;
use inlet_core::{
    CaptureEvent, Position, SchemaChanges, TableId, TableSelection, TableSelectionConfig,
    Unrepresentable,
};
use inlet_mysql::{events_of_file, BinlogCapture, CaptureOptions, Flavor, MysqlTable};

fn options(policy: Unrepresentable) -> CaptureOptions {
    CaptureOptions {
        selection: TableSelection::new(&TableSelectionConfig::default()).unwrap(),
        policy,
        schema_changes: SchemaChanges::Fail,
        part_rows: 10_000,
    }
}

/// Runs a fixture through a capture of `tables`; returns the commit events and every table's
/// changes (op + values).
async fn capture(
    file: &str,
    flavor: Flavor,
    tables: &[MysqlTable],
    policy: Unrepresentable,
) -> Result<(Vec<CaptureEvent>, Vec<Vec<Vec<String>>>), inlet_mysql::MysqlError> {
    let bytes = std::fs::read(format!("tests/fixtures/{file}")).unwrap();
    let events = events_of_file(&bytes)?;
    let committed = vec![None; tables.len()];
    let mut c =
        BinlogCapture::from_events(events, file, flavor, tables, &committed, options(policy));
    let mut seen = Vec::new();
    while let Some(e) = c.next().await? {
        seen.push(e);
    }
    let mut out = Vec::new();
    for t in 0..c.table_count() {
        let mut rows = Vec::new();
        for ch in c.take(t)? {
            rows.extend(common::ops_and_values(&ch.batch));
        }
        out.push(rows);
    }
    Ok((seen, out))
}

fn strs(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[tokio::test]
async fn compressed_transaction() {
    let t = MysqlTable::from_columns(
        TableId::new("test", "tb1"),
        &[("a", "int", None, true)],
        &[],
        Unrepresentable::Fail,
    );
    let (events, rows) = capture(
        "transaction_compression.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap();
    // The transaction commits where the TRANSACTION_PAYLOAD event ends (offset 431).
    assert_eq!(
        events,
        vec![CaptureEvent::Committed {
            end: Position((1 << 32) | 431),
            commit_time_micros: match events[0] {
                CaptureEvent::Committed {
                    commit_time_micros, ..
                } => commit_time_micros,
                _ => 0,
            }
        }]
    );
    assert_eq!(rows[0], strs(&[&["I", "1"]]));
}

#[tokio::test]
async fn enum_set_char_and_text() {
    let t = MysqlTable::from_columns(
        TableId::new("mysql", "t"),
        &[
            ("f1", "char(128)", Some("utf8mb4"), true),
            ("f2", "varchar(300)", Some("utf8mb4"), true),
            ("f3", "enum('var1','variant2','foo')", Some("utf8mb4"), true),
            (
                "f4",
                "set('one','two','three','four')",
                Some("utf8mb4"),
                true,
            ),
            ("f5", "text", Some("utf8mb4"), true),
        ],
        &[],
        Unrepresentable::Fail,
    );
    assert_eq!(
        t.schema.columns[3].data_type(),
        &DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
            "item",
            DataType::Utf8,
            false
        )))
    );
    let (events, rows) = capture(
        "mysql-enum-string-set.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap();
    // ALTER USER and CREATE TABLE are transactions too (no rows for this table), then I, U, D.
    assert_eq!(events.len(), 5, "{events:?}");
    let long = rows[0][0][1].clone();
    assert!(long.starts_with("0123456789"), "{long}");
    // No primary key: an update is a U row with the new values.
    assert_eq!(rows[0].len(), 3);
    assert_eq!(
        rows[0][0][3..5],
        ["var1".to_string(), "[one, three]".to_string()]
    );
    assert_eq!(rows[0][0][5], "0123456789");
    // The update also rewrote f5 to a long text; the delete's before image holds the same.
    let text = rows[0][1][5].clone();
    assert_eq!(text.len(), 298, "{text}");
    assert!(text.starts_with("01234567890123456789"));
    assert_eq!(
        rows[0][1],
        strs(&[&["U", "field1", "field_2", "variant2", "[two, four]", &text]])[0]
    );
    assert_eq!(
        rows[0][2],
        strs(&[&["D", "field1", "field_2", "variant2", "[two, four]", &text]])[0]
    );
}

#[tokio::test]
async fn bits() {
    let t = MysqlTable::from_columns(
        TableId::new("mysql", "foo"),
        &[
            ("a", "bit(3)", None, true),
            ("b", "text", Some("utf8mb4"), true),
            ("c", "bit(8)", None, true),
        ],
        &[],
        Unrepresentable::Fail,
    );
    let (_, rows) = capture(
        "mysql_type_bit.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap();
    assert_eq!(rows[0], strs(&[&["I", "100", "foo", "00100000"]]));
}

#[tokio::test]
async fn time_outside_a_day_follows_the_policy() {
    let cols: &[(&str, &str, Option<&str>, bool)] = &[("a", "time", None, true)];
    let t = MysqlTable::from_columns(TableId::new("noria", "t"), cols, &[], Unrepresentable::Fail);
    let err = capture(
        "time_issue.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("noria.t column a: the time -507:48:27"),
        "{err}"
    );
    let t = MysqlTable::from_columns(TableId::new("noria", "t"), cols, &[], Unrepresentable::Text);
    let (_, rows) = capture(
        "time_issue.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Text,
    )
    .await
    .unwrap();
    assert_eq!(rows[0], strs(&[&["I", "-507:48:27"]]));
    let t = MysqlTable::from_columns(TableId::new("noria", "t"), cols, &[], Unrepresentable::Null);
    let (_, rows) = capture(
        "time_issue.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Null,
    )
    .await
    .unwrap();
    assert_eq!(rows[0], strs(&[&["I", "∅"]]));
}

#[tokio::test]
async fn invisible_columns_and_unsigned() {
    let t = MysqlTable::from_columns(
        TableId::new("mysql", "t1"),
        &[
            ("f1", "int unsigned", None, true),
            ("f2", "int unsigned", None, true),
            ("f3", "int", None, true),
            ("f4", "text", Some("utf8mb4"), true),
            ("f5", "blob", Some("binary"), true),
            ("f6", "bigint unsigned", None, true),
        ],
        &[],
        Unrepresentable::Fail,
    );
    let (_, rows) = capture(
        "binlog-invisible-columns.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap();
    assert_eq!(
        rows[0],
        strs(&[
            &["I", "1", "2", "-3", "4", "05", "6000000000"],
            &["I", "∅", "∅", "-33", "44", "55", "∅"],
            &["U", "111", "222", "-333", "444", "55", "∅"],
        ])
    );
}

#[tokio::test]
async fn full_and_partial_row_images() {
    let cols: &[(&str, &str, Option<&str>, bool)] = &[
        ("a", "int", None, false),
        ("b", "int", None, true),
        ("c", "int", None, true),
    ];
    let t = MysqlTable::from_columns(
        TableId::new("test", "ba"),
        cols,
        &["a"],
        Unrepresentable::Fail,
    );
    let (_, rows) = capture(
        "update-full-row.binlog",
        Flavor::Mysql,
        std::slice::from_ref(&t),
        Unrepresentable::Fail,
    )
    .await
    .unwrap();
    assert_eq!(
        rows[0],
        strs(&[
            &["I", "3", "3", "3"],
            &["I", "1", "1", "1"],
            &["I", "2", "2", "2"],
            &["I", "4", "4", "4"],
            &["U", "4", "4", "40"],
            &["D", "2", "∅", "∅"],
        ])
    );
    // binlog_row_image=MINIMAL: the update's after image lacks column b.
    let err = capture(
        "update-partial-row.binlog",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("binlog_row_image = FULL"), "{err}");
}

#[tokio::test]
async fn mariadb_gtid_events_enum_and_timestamp() {
    let t = MysqlTable::from_columns(
        TableId::new("toddy_test", "outbox"),
        &[
            ("id", "int", None, false),
            ("topic", "varchar(255)", Some("utf8mb4"), true),
            (
                "event_type",
                "enum('BLOB','JSON','PROTOBUF')",
                Some("utf8mb4"),
                true,
            ),
            ("event", "longblob", Some("binary"), true),
            ("created", "timestamp", None, true),
        ],
        &["id"],
        Unrepresentable::Fail,
    );
    let bytes = std::fs::read("tests/fixtures/mariadb-bin.000001").unwrap();
    let events = events_of_file(&bytes).unwrap();
    let committed = vec![None];
    let mut c = BinlogCapture::from_events(
        events,
        "mariadb-bin.000001",
        Flavor::MariaDb,
        &[t],
        &committed,
        options(Unrepresentable::Fail),
    );
    let first = c.next().await.unwrap();
    assert!(
        matches!(first, Some(CaptureEvent::Committed { end, .. }) if end == Position((1 << 32) | 702)),
        "{first:?}"
    );
    let facts = c.checkpoint_facts();
    assert!(
        facts.contains(&("mysql.flavor".to_string(), "mariadb".to_string())),
        "{facts:?}"
    );
    assert!(
        facts.iter().any(|(k, v)| k == "mysql.gtid_set"
            && v.split(',')
                .any(|g| g.ends_with(&format!("-{}", v.rsplit('-').next().unwrap())))),
        "{facts:?}"
    );
    let batch = c.take(0).unwrap();
    let r = common::ops_and_values(&batch[0].batch);
    assert_eq!(
        r[0][0..4],
        ["I".to_string(), "62".into(), "foo".into(), "JSON".into()]
    );
    let event = batch[0]
        .batch
        .column(7)
        .as_any()
        .downcast_ref::<arrow_array::BinaryArray>()
        .unwrap();
    assert!(event.value(0).starts_with(b"{\"foo\":1"), "{r:?}");
    assert!(r[0][5].starts_with("2022-"), "{r:?}");
}
