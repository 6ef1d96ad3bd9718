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
        policy: policy.into(),
        schema_changes: SchemaChanges::Fail,
        part_rows: 10_000,

        position_epoch: 0,
        gtid_at_start: None,
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
    // ALTER USER and CREATE TABLE are transactions too (no rows for this table), then I, U, D;
    // the CREATE of a captured table's name also says the tables changed (the name now holds
    // another table, which the task loads again).
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, CaptureEvent::TablesChanged))
            .count(),
        1,
        "{events:?}"
    );
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
        std::slice::from_ref(&t),
        Unrepresentable::Fail,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("binlog_row_image = FULL"), "{err}");
    // The same change logged (by NDB) as a write whose image holds columns a and c only
    // (bitmap 0xfd over three columns, decoded by hand: a = 4, c = 40): b's value is unknown,
    // so the insert is refused too, rather than loaded with a NULL b.
    let err = capture(
        "write-partial-row.binlog",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "test.ba: a row image lacks columns (binlog_row_image is not FULL); run SET GLOBAL \
         binlog_row_image = FULL"
    );
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
    let resume = c.resume();
    assert!(resume.flavor.as_deref() == Some("mariadb"), "{resume:?}");
    assert!(
        resume.gtid_set.as_ref().is_some_and(|v| v
            .split(',')
            .any(|g| g.ends_with(&format!("-{}", v.rsplit('-').next().unwrap())))),
        "{resume:?}"
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

/// What a capture of a whole file saw: each commit with the checkpoint facts right after it,
/// every table's changes (op + values) up to the end or the first error, and that error.
struct Run {
    commits: Vec<(Position, Option<String>)>,
    rows: Vec<Vec<Vec<String>>>,
    error: Option<inlet_mysql::MysqlError>,
}

async fn run(file: &str, flavor: Flavor, tables: &[MysqlTable], policy: Unrepresentable) -> Run {
    run_with(file, flavor, tables, options(policy)).await
}

async fn run_with(
    file: &str,
    flavor: Flavor,
    tables: &[MysqlTable],
    options: CaptureOptions,
) -> Run {
    let bytes = std::fs::read(format!("tests/fixtures/{file}")).unwrap();
    let events = events_of_file(&bytes).unwrap();
    let committed = vec![None; tables.len()];
    let mut c = BinlogCapture::from_events(events, file, flavor, tables, &committed, options);
    let mut commits = Vec::new();
    let error = loop {
        match c.next().await {
            Ok(None) => break None,
            Ok(Some(CaptureEvent::Committed { end, .. })) => {
                let gtid = c.resume().gtid_set;
                commits.push((end, gtid));
            }
            // TablesChanged after a CREATE/DROP, Idle: not what these tests look at.
            Ok(Some(_)) => {}
            Err(e) => break Some(e),
        }
    };
    let mut rows = Vec::new();
    for t in 0..c.table_count() {
        let mut r = Vec::new();
        for ch in c.take(t).unwrap() {
            r.extend(common::ops_and_values(&ch.batch));
        }
        rows.push(r);
    }
    Run {
        commits,
        rows,
        error,
    }
}

fn json(text: &str) -> mysql_common::serde_json::Value {
    mysql_common::serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// json.binlog.000001 (MySQL 8.0.22): `mysql.t(id INT PRIMARY KEY AUTO_INCREMENT, json_col
/// JSON, name VARCHAR(100) AS (json_col->>'$.name'), age INT AS (json_col->'$.age'))`, its
/// CREATE TABLE in the file. binlog_row_metadata is MINIMAL (no column names).
///
/// Where the expectations come from (not from inlet's decoder): the row events were decoded
/// by hand from the binary JSON format (MySQL's json_binary.h) with a throwaway script. Each
/// JSON value is a small object whose keys are stored sorted by length, then bytes: `age`
/// (int16, inlined in the value entry), `data` and `name` (strings); e.g. row 1's value is
/// `00 | 03 00 33 00 | 19 00 03 00 1c 00 04 00 20 00 04 00 | 05 18 00 0c 24 00 0c 2f 00 |
/// "agedataname" | 0a "xxxxxxxxxx" 03 "Joe"` (small object: count 3, size 51; key entries
/// offset+length; value entries type+offset, `05 18 00` = int16 24 inlined, `0c` = string). The generated columns agree with the JSON
/// (name = `$.name`, age = `$.age`), which cross-checks the reading. The statements were: three
/// single-row INSERTs, one three-row INSERT (the same three documents), an UPDATE of every row
/// that rewrote `$.age` + 1 (full images), then an UPDATE logged as a partial JSON update
/// (PARTIAL_UPDATE_ROWS_EVENT, `binlog_row_value_options = PARTIAL_JSON`, before images with
/// the key only): `REPLACE $.age` with 26, 34, 42.
///
/// MySQL prints a JSON value with `": "` and `", "` and keys in stored order, so besides
/// comparing parsed values the exact text is checked against that form.
#[tokio::test]
async fn json_binary_values_and_partial_json_refused() {
    let t = MysqlTable::from_columns(
        TableId::new("mysql", "t"),
        &[
            ("id", "int", None, false),
            ("json_col", "json", None, true),
            ("name", "varchar(100)", Some("utf8mb4"), true),
            ("age", "int", None, true),
        ],
        &["id"],
        Unrepresentable::Fail,
    );
    let r = run(
        "json.binlog.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await;
    let doc = |age: u32, data: &str, name: &str| {
        format!(r#"{{"age": {age}, "data": "{data}", "name": "{name}"}}"#)
    };
    let people = [
        ("xxxxxxxxxx", "Joe", 24),
        ("yyyyyyyyyy", "Sue", 32),
        ("zzzzzzzzzz", "Pete", 40),
    ];
    let mut expected: Vec<Vec<String>> = Vec::new();
    for id in 1..=6 {
        let (data, name, age) = people[(id - 1) % 3];
        expected.push(vec![
            "I".into(),
            id.to_string(),
            doc(age, data, name),
            name.into(),
            age.to_string(),
        ]);
    }
    for id in 1..=6 {
        let (data, name, age) = people[(id - 1) % 3];
        expected.push(vec![
            "U".into(),
            id.to_string(),
            doc(age + 1, data, name),
            name.into(),
            (age + 1).to_string(),
        ]);
    }
    let got = &r.rows[0];
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(json(&g[2]), json(&e[2]), "{g:?}");
    }
    assert_eq!(got, &expected);
    // Five transactions commit (plus the two statements before them); the sixth is refused.
    let ends: Vec<u64> = r.commits.iter().map(|(p, _)| p.0 & 0xffff_ffff).collect();
    assert_eq!(ends, [491, 845, 1195, 1545, 1897, 2389, 3527]);
    let err = r
        .error
        .expect("the partial JSON update must be refused")
        .to_string();
    assert_eq!(
        err,
        "mysql.t: the binlog holds partial JSON updates; run SET GLOBAL \
         binlog_row_value_options = '' so updates carry whole values"
    );
}

/// json-opaque.binlog (MySQL 9.0.1): `foo.test(a JSON)`, eight single-row INSERTs in one
/// transaction, each an object of one key holding an "opaque" value (a MySQL type inside
/// JSON), an array or null.
///
/// Expectations: mysql_common's own test of this file (binlog/mod.rs, `json-opaque.binlog`)
/// lists the eight values; its serde conversion writes a DECIMAL as a string (`"123.456"`),
/// where MySQL prints a number, so those two are taken as numbers here. Each was also decoded
/// by hand from the row events: opaque = `0f`, the MySQL field type, a length, the bytes:
/// - `0f 0f 01 55`: VARCHAR (binary) 'U' → MySQL prints `"base64:type15:VQ=="`;
/// - `0f 0a 08 0000000000e48b19`: DATE, packed ((2012*13+3)<<5|18)<<41 → `"2012-03-18"`;
/// - `0f 0c 08 000000adb7e48b19`: DATETIME, same date, hms 11:30:45, no fraction → MySQL
///   prints datetimes in JSON with six digits, `"2012-03-18 11:30:45.000000"`;
/// - `0f 0b 08 f1fb09ee77050000`: TIME, (87<<12|31<<6|46)<<24 | 654321 → `"87:31:46.654321"`;
/// - `0f f6 06 06 03 80 7b 01 c8`: DECIMAL(6,3), 123 and .456 → `123.456`;
/// - `0f f6 07 0b 02 80 00 00 09 00`: DECIMAL(11,2), 9 and .00 → `9.00`;
/// - an array of int16 0, int16 1, true, false; and the null literal.
#[tokio::test]
async fn json_opaque_values() {
    let t = MysqlTable::from_columns(
        TableId::new("foo", "test"),
        &[("a", "json", None, true)],
        &[],
        Unrepresentable::Fail,
    );
    let r = run(
        "json-opaque.binlog",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await;
    assert!(r.error.is_none(), "{:?}", r.error);
    let expected = [
        r#"{"a": "base64:type15:VQ=="}"#,
        r#"{"b": "2012-03-18"}"#,
        r#"{"c": "2012-03-18 11:30:45.000000"}"#,
        r#"{"c": "87:31:46.654321"}"#,
        r#"{"d": 123.456}"#,
        r#"{"e": 9.00}"#,
        r#"{"e": [0, 1, true, false]}"#,
        r#"{"e": null}"#,
    ];
    let got = &r.rows[0];
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g[0], "I");
        assert_eq!(json(&g[1]), json(e), "{g:?}");
        // MySQL's own text: a DECIMAL keeps its scale (9.00, not 9 or 9.0).
        assert_eq!(g[1], e);
    }
    // One transaction (after CREATE DATABASE and CREATE TABLE), committed at its XID.
    let ends: Vec<u64> = r.commits.iter().map(|(p, _)| p.0 & 0xffff_ffff).collect();
    assert_eq!(ends, [340, 529, 1635]);
}

/// binlog_transaction_with_GTID.000001 (MySQL 5.6.24, gtid_mode=ON, statement format): three
/// transactions, each after a GTID event (type 33) whose body, decoded by hand, is flags `01`,
/// the source uuid `006c2cf2-b1ea-11e4-9057-8c705a3d3e78` and the numbers 1, 2, 3:
/// `CREATE TABLE t1` (ends at 297), `BEGIN; INSERT INTO t1 VALUES (1); COMMIT` (ends at 603)
/// and `DROP TABLE t1` (ends at 766). The previous-GTIDs event is empty. (MariaDB's
/// mysqlbinlog shows the same event boundaries.)
#[tokio::test]
async fn mysql_gtids_follow_each_commit() {
    let r = run(
        "binlog_transaction_with_GTID.000001",
        Flavor::Mysql,
        &[],
        Unrepresentable::Fail,
    )
    .await;
    assert!(r.error.is_none(), "{:?}", r.error);
    let uuid = "006c2cf2-b1ea-11e4-9057-8c705a3d3e78";
    assert_eq!(
        r.commits,
        vec![
            (Position((1 << 32) | 297), Some(format!("{uuid}:1"))),
            (Position((1 << 32) | 603), Some(format!("{uuid}:1-2"))),
            (Position((1 << 32) | 766), Some(format!("{uuid}:1-3"))),
        ]
    );
}

/// binlog_transaction_with_GTID_TAG.000001 (MySQL 9.6.0): the previous-GTIDs event (tagged
/// format) holds `55778904-0299-11f1-b1b8-4ef0c4956feb:1-13` and `…:mytag:1-2`; then one
/// transaction with a GTID_TAGGED_LOG_EVENT (type 42) inserting (3, 100, 250.00) into
/// test.orders, ending at 541. The tagged event's body (MySQL's serialization format,
/// variable-length integers) decodes by hand to uuid 55 77 89 04 02 99 11 f1 b1 b8 4e f0 c4 95
/// 6f eb, gno 3 (zigzag `0c`) and tag `mytag`; mysql_common's test of this file asserts the
/// same. The checkpoint's GTID set must name the tag (`uuid:mytag:3`), not the untagged `uuid:3`
/// (a different transaction).
#[tokio::test]
async fn tagged_gtids_are_recorded_with_their_tag() {
    let r = run(
        "binlog_transaction_with_GTID_TAG.000001",
        Flavor::Mysql,
        &[],
        Unrepresentable::Fail,
    )
    .await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        r.commits,
        vec![(
            Position((1 << 32) | 541),
            Some("55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3".to_string())
        )]
    );
}

/// minimal_row_metadata.000001 (MySQL 8.0.40, binlog_row_metadata = MINIMAL, binlog_row_image
/// = MINIMAL): `noria.t1` with five unnamed columns, INT NOT NULL, BLOB (collation 63),
/// CHAR(2) utf8mb4 (collation 255, 8 bytes), INT, INT UNSIGNED (the signedness bits `0x20`
/// mark the third numeric column). One INSERT whose after image holds only columns 1, 3 and 5
/// (bitmap `0x15`): 1, 'a', 3230202323 (decoded by hand; mysql_common's test asserts the
/// unsigned value and the utf8mb4 collation). The other two columns got values the binlog
/// does not carry, so the row cannot be loaded exactly: the capture must refuse it naming the
/// table and the fix, not invent NULLs.
#[tokio::test]
async fn minimal_row_metadata_and_minimal_image() {
    let t = MysqlTable::from_columns(
        TableId::new("noria", "t1"),
        &[
            ("c1", "int", None, false),
            ("c2", "blob", Some("binary"), true),
            ("c3", "char(2)", Some("utf8mb4"), true),
            ("c4", "int", None, true),
            ("c5", "int unsigned", None, true),
        ],
        &[],
        Unrepresentable::Fail,
    );
    let r = run(
        "minimal_row_metadata.000001",
        Flavor::Mysql,
        &[t],
        Unrepresentable::Fail,
    )
    .await;
    assert_eq!(r.commits, vec![]);
    assert_eq!(r.rows[0], Vec::<Vec<String>>::new());
    let err = r
        .error
        .expect("a minimal image must be refused")
        .to_string();
    assert_eq!(
        err,
        "noria.t1: a row image lacks columns (binlog_row_image is not FULL); run SET GLOBAL \
         binlog_row_image = FULL"
    );
}

/// vector.binlog (MySQL 9.0.1): `dtb.foo(id SERIAL, vector_column VECTOR(3) NOT NULL)` and
/// `dtb.bar(id SERIAL, vector_column VECTOR(2) NOT NULL, foo TEXT, vector_column2 VECTOR(4)
/// NOT NULL)` (their CREATE TABLEs are in the file), field type 242, values little-endian
/// float32s. Decoded by hand: foo gets [1.1, 2.2, 3.3] (`cdcc8c3f cdcc0c40 33335340`) and
/// [1, -1, 0]; bar's first row is [1.1, 2.2] (`cdcc8c3f cdcc0c40`), NULL,
/// [1.1, 2.2, 3.3, 4.4]. mysql_common's test of this file asserts foo's bytes.
///
/// inlet has no mapping for VECTOR yet. Read as text, a vector whose float bytes happen to be
/// valid UTF-8 (bar's second row [42, 43, 44, 45] = `00002842 00002c42 …`) would load as
/// garbage, so the capture refuses the column at its table map, naming table, column, type
/// and the setting that leaves it out, before any row is decoded.
#[tokio::test]
async fn vector_columns_stop_the_capture() {
    let foo = MysqlTable::from_columns(
        TableId::new("dtb", "foo"),
        &[
            ("id", "bigint unsigned", None, false),
            ("vector_column", "vector(3)", None, false),
        ],
        &["id"],
        Unrepresentable::Fail,
    );
    let r = run(
        "vector.binlog",
        Flavor::Mysql,
        &[foo],
        Unrepresentable::Fail,
    )
    .await;
    assert_eq!(r.rows[0], Vec::<Vec<String>>::new());
    let err = r
        .error
        .expect("a VECTOR value must stop the capture")
        .to_string();
    assert_eq!(
        err,
        "dtb.foo: column vector_column is vector, which inlet does not replicate yet; exclude \
         it: [tables.exclude_columns] \"dtb.foo\" = [\"vector_column\"]"
    );
}

/// vector.binlog again, capturing `dtb.bar` with its two VECTOR columns excluded
/// (`exclude_columns`), the way to load such a table today. Expected, from the rows decoded by
/// hand: (1, NULL), (2, 'bar') inserted twice (the file drops and recreates the database in
/// between), then row 2 deleted and (3, NULL) inserted.
///
/// The TABLE_MAP's DEFAULT_CHARSET metadata (`3f 01 fcff00`: default 63 = binary, character
/// column #1 → 255 = utf8mb4_0900_ai_ci) counts the VECTOR columns among the character
/// columns, as MySQL 9 does, so column #1 is `foo`: counting only mysql_common's
/// `is_character_type()` columns gave `foo` the binary default and read it as a BLOB.
#[tokio::test]
async fn vector_columns_excluded_leave_the_rest_exact() {
    let bar = MysqlTable::from_columns(
        TableId::new("dtb", "bar"),
        &[
            ("id", "bigint unsigned", None, false),
            ("foo", "text", Some("utf8mb4"), true),
        ],
        &["id"],
        Unrepresentable::Fail,
    );
    let mut config = TableSelectionConfig::default();
    config.exclude_columns.insert(
        "dtb.bar".into(),
        vec!["vector_column".into(), "vector_column2".into()],
    );
    let options = CaptureOptions {
        selection: TableSelection::new(&config).unwrap(),
        ..options(Unrepresentable::Fail)
    };
    let r = run_with("vector.binlog", Flavor::Mysql, &[bar], options).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        r.rows[0],
        strs(&[
            &["I", "1", "∅"],
            &["I", "2", "bar"],
            &["I", "1", "∅"],
            &["I", "2", "bar"],
            &["D", "2", "bar"],
            &["I", "3", "∅"],
        ])
    );
}
