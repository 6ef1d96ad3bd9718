//! Live against MariaDB 10.11 (the harness starts it in a temp folder with the binlog on):
//! type zoo, multi-chunk full load, binlog workload replay, restart without duplicates.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use inlet_core::{
    CaptureEvent, Position, SchemaChanges, TableSelection, TableSelectionConfig, Unrepresentable,
};
use inlet_mysql::{
    discover, BatchLimits, BinlogCapture, BinlogPosition, CaptureOptions, ConsistentSnapshot,
    MysqlConnector, MysqlSourceConfig, MysqlTable, StartFrom, TlsMode,
};
use inlet_testkit::MariaDbServer;
use mysql_async::prelude::Queryable;

fn connector(server: &MariaDbServer, db: &str) -> MysqlConnector {
    MysqlConnector::new(&MysqlSourceConfig {
        url: server.url(db),
        password_file: None,
        tls: TlsMode::Prefer,
        ca_file: None,
        server_id: None,
        heartbeat_seconds: Some(1),
        read_timeout_s: None,
    })
    .unwrap()
}

fn selection(include: &str) -> TableSelection {
    TableSelection::new(&TableSelectionConfig {
        include: vec![include.into()],
        ..Default::default()
    })
    .unwrap()
}

fn options(include: &str, policy: Unrepresentable, part_rows: usize) -> CaptureOptions {
    CaptureOptions {
        selection: selection(include),
        policy: policy.into(),
        schema_changes: SchemaChanges::Evolve,
        part_rows,

        position_epoch: 0,
        gtid_at_start: None,
    }
}

async fn tables(c: &MysqlConnector, include: &str, policy: Unrepresentable) -> Vec<MysqlTable> {
    let mut conn = c.connect().await.unwrap();
    discover(&mut conn, c, &selection(include), &policy.into())
        .await
        .unwrap()
}

fn master_position(server: &MariaDbServer) -> BinlogPosition {
    let out = server.admin("SHOW MASTER STATUS");
    let mut f = out.split('\t');
    let file = f.next().unwrap().to_string();
    let pos = f.next().unwrap().trim().parse().unwrap();
    BinlogPosition::new(file, pos)
}

/// Every row of every table in one consistent snapshot, as display strings (under the value
/// policy the tables were discovered with).
async fn snapshot_rows(c: &MysqlConnector, tables: &[MysqlTable]) -> Vec<Vec<Vec<String>>> {
    let mut snap = ConsistentSnapshot::open(c, 1).await.unwrap();
    let reader = &mut snap.readers[0];
    let mut out = Vec::new();
    for t in tables {
        let mut rows = Vec::new();
        for range in reader.plan_chunks(t, 1_000_000).await.unwrap() {
            let limits = BatchLimits {
                rows: 1000,
                bytes: 1 << 20,
            };
            let mut s = reader.read(t, range, limits).await.unwrap();
            while let Some(b) = s.next_batch().await.unwrap() {
                assert_eq!(b.schema(), t.schema.arrow_schema());
                rows.extend(common::rows(&b));
            }
        }
        rows.sort();
        out.push(rows);
    }
    out
}

/// Reads events until `commits` transactions committed; returns the commit positions.
async fn read_commits(c: &mut BinlogCapture, commits: usize) -> Vec<Position> {
    let mut ends = Vec::new();
    while ends.len() < commits {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), c.next())
            .await
            .expect("binlog event within 30 s")
            .unwrap()
            .expect("stream open");
        match e {
            CaptureEvent::Committed { end, .. } => ends.push(end),
            CaptureEvent::Idle { .. } | CaptureEvent::TablesChanged => {}
            CaptureEvent::Large { table } => {
                let _ = table;
            }
        }
    }
    ends
}

const ZOO: &str = "CREATE TABLE zoo.z (
    id INT PRIMARY KEY, b TINYINT(1), ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT,
    siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
    bi BIGINT, biu BIGINT UNSIGNED, f FLOAT, d DOUBLE, dec12 DECIMAL(12,2), dec50 DECIMAL(50,10),
    c CHAR(5), vc VARCHAR(20), lat VARCHAR(20) CHARACTER SET latin1, bin4 BINARY(4),
    vb VARBINARY(8), bl BLOB, dt DATE, yr YEAR, tm TIME(3), dtm DATETIME(6),
    ts TIMESTAMP(6) NULL DEFAULT NULL, js JSON, en ENUM('a','b c'), st SET('x','y','z'),
    b1 BIT(1), b5 BIT(5))";

const ZOO_ROWS: &str = "INSERT INTO zoo.z VALUES
    (1, 1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
     -9223372036854775808, 18446744073709551615, 1.5, -2.25, -1234567890.12,
     '1234567890123456789012345678901234567890.0123456789', 'ab', 'héllo wörld', 'café €',
     x'0102', x'00ff', x'deadbeef', '2024-02-29', 2155, '23:59:58.999', '9999-12-31 23:59:59.999999',
     '2038-01-19 03:14:07.123456', '{\"a\": [1, 2.5, \"x\"], \"b\": null}', 'b c', 'x,z', b'1', b'10101'),
    (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '', '', '', '', '', '', '1000-01-01', 1901,
     '00:00:00.000', '1000-01-01 00:00:00', '1970-01-01 00:00:01', '[]', 'a', '', b'0', b'0'),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_zoo_full_load_and_binlog_agree_value_by_value() {
    let server = MariaDbServer::start();
    server.admin("CREATE DATABASE zoo");
    server.admin(ZOO);
    let c = connector(&server, "zoo");
    let tables = tables(&c, "zoo.*", Unrepresentable::Fail).await;
    assert_eq!(tables.len(), 1);
    let types: Vec<String> = tables[0]
        .schema
        .columns
        .iter()
        .map(|c| format!("{} {} {}", c.name, c.source_type, c.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            "id int Int32",
            "b tinyint(1) Boolean",
            "ti tinyint Int16",
            "tiu tinyint unsigned Int16",
            "si smallint Int16",
            "siu smallint unsigned Int32",
            "mi mediumint Int32",
            "miu mediumint unsigned Int32",
            "i int Int32",
            "iu int unsigned Int64",
            "bi bigint Int64",
            "biu bigint unsigned Decimal128(20, 0)",
            "f float Float32",
            "d double Float64",
            "dec12 decimal(12,2) Decimal128(12, 2)",
            "dec50 decimal(50,10) Utf8",
            "c char(5) Utf8",
            "vc varchar(20) Utf8",
            "lat varchar(20) Utf8",
            "bin4 binary(4) Binary",
            "vb varbinary(8) Binary",
            "bl blob Binary",
            "dt date Date32",
            "yr year(4) Int16",
            "tm time(3) Time64(µs)",
            "dtm datetime(6) Timestamp(µs)",
            "ts timestamp(6) Timestamp(µs, \"UTC\")",
            "js json Utf8",
            "en enum('a','b c') Utf8",
            "st set('x','y','z') List(non-null Utf8)",
            "b1 bit(1) Boolean",
            "b5 bit(5) Utf8",
        ]
    );
    assert_eq!(tables[0].schema.primary_key, ["id"]);

    let start = master_position(&server);
    server.admin(ZOO_ROWS);
    let expected: Vec<Vec<&str>> = vec![
        vec![
            "1",
            "true",
            "-128",
            "255",
            "-32768",
            "65535",
            "-8388608",
            "16777215",
            "-2147483648",
            "4294967295",
            "-9223372036854775808",
            "18446744073709551615",
            "1.5",
            "-2.25",
            "-1234567890.12",
            "1234567890123456789012345678901234567890.0123456789",
            "ab",
            "héllo wörld",
            "café €",
            "01020000",
            "00ff",
            "deadbeef",
            "2024-02-29",
            "2155",
            "23:59:58.999",
            "9999-12-31T23:59:59.999999",
            "2038-01-19T03:14:07.123456",
            "{\"a\": [1, 2.5, \"x\"], \"b\": null}",
            "b c",
            "[x, z]",
            "true",
            "10101",
        ],
        vec![
            "2",
            "false",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0.0",
            "0.0",
            "0.00",
            "0.0000000000",
            "",
            "",
            "",
            "00000000",
            "",
            "",
            "1000-01-01",
            "1901",
            "00:00:00",
            "1000-01-01T00:00:00",
            "1970-01-01T00:00:01",
            "[]",
            "a",
            "[]",
            "false",
            "00000",
        ],
        vec!["3"; 1]
            .into_iter()
            .chain(std::iter::repeat_n("∅", 31))
            .collect(),
    ];
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
    let loaded = snapshot_rows(&c, &tables).await;
    assert_eq!(loaded[0], expected);

    // The binlog carries the same values: the insert, then the update of row 1.
    let mut capture = BinlogCapture::start(
        &c,
        4242,
        &StartFrom::Position(start),
        &tables,
        &[None],
        options("zoo.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    read_commits(&mut capture, 1).await;
    let changes = capture.take(0).unwrap();
    let rows: Vec<Vec<String>> = changes
        .iter()
        .flat_map(|c| common::ops_and_values(&c.batch))
        .collect();
    let want: Vec<Vec<String>> = expected
        .iter()
        .map(|r| {
            std::iter::once("I".to_string())
                .chain(r.iter().cloned())
                .collect()
        })
        .collect();
    assert_eq!(rows, want);
    capture.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentable_values_follow_the_policy() {
    let server = MariaDbServer::start();
    server.admin("CREATE DATABASE zd");
    server.admin("CREATE TABLE zd.t (id INT PRIMARY KEY, d DATE, dt DATETIME(2), tm TIME)");
    server.admin(
        "SET SESSION sql_mode = ''; INSERT INTO zd.t VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '-01:00:00')",
    );
    let c = connector(&server, "zd");
    for (policy, want) in [
        (Unrepresentable::Null, vec!["1", "∅", "∅", "∅"]),
        (
            Unrepresentable::Text,
            vec!["1", "0000-00-00", "0000-00-00 00:00:00.00", "-01:00:00"],
        ),
    ] {
        let tables = tables(&c, "zd.*", policy).await;
        let mut snap = ConsistentSnapshot::open(&c, 1).await.unwrap();
        let limits = BatchLimits {
            rows: 10,
            bytes: 1 << 20,
        };
        let t = &tables[0];
        let mut s = snap.readers[0]
            .read(
                t,
                inlet_mysql::KeyRange {
                    start: None,
                    end: None,
                },
                limits,
            )
            .await
            .unwrap();
        let b = s.next_batch().await.unwrap().unwrap();
        assert_eq!(
            common::rows(&b),
            vec![want.iter().map(|s| s.to_string()).collect::<Vec<_>>()]
        );
    }
    let tables = tables(&c, "zd.*", Unrepresentable::Fail).await;
    let mut snap = ConsistentSnapshot::open(&c, 1).await.unwrap();
    let limits = BatchLimits {
        rows: 10,
        bytes: 1 << 20,
    };
    let mut s = snap.readers[0]
        .read(
            &tables[0],
            inlet_mysql::KeyRange {
                start: None,
                end: None,
            },
            limits,
        )
        .await
        .unwrap();
    let err = s.next_batch().await.unwrap_err().to_string();
    assert!(
        err.starts_with("zd.t column d: the zero date 0000-00-00 has no exact Date32"),
        "{err}"
    );
}

/// Reads every range of `table` round-robin over the snapshot's workers; returns each row as
/// text, failing on a row read twice.
async fn read_ranges(
    snap: &mut ConsistentSnapshot,
    table: &MysqlTable,
    ranges: &[inlet_mysql::KeyRange],
) -> BTreeSet<Vec<String>> {
    let mut seen = BTreeSet::new();
    let workers = snap.readers.len();
    for (i, range) in ranges.iter().enumerate() {
        let limits = BatchLimits {
            rows: 1000,
            bytes: 1 << 20,
        };
        let mut s = snap.readers[i % workers]
            .read(table, range.clone(), limits)
            .await
            .unwrap();
        while let Some(b) = s.next_batch().await.unwrap() {
            assert!(b.num_rows() <= 1000);
            for r in common::rows(&b) {
                assert!(
                    seen.insert(r.clone()),
                    "{}: {r:?} read twice",
                    table.schema.id
                );
            }
        }
    }
    seen
}

fn source_set(server: &MariaDbServer, sql: &str) -> BTreeSet<Vec<String>> {
    server
        .admin(sql)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Integer keys are cut by arithmetic, other keys (a case- and accent-insensitive string, and
/// a composite key whose first column repeats) by walking the key's order; every range is read
/// by one of three snapshot workers, and together they hold each row of the snapshot once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_load_in_key_ranges_by_parallel_snapshot_workers() {
    let server = MariaDbServer::start();
    server.admin(
        "CREATE DATABASE big; USE big;
         CREATE TABLE big.t (id BIGINT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO big.t SELECT seq * 3, CONCAT('v', seq) FROM seq_1_to_20000;
         CREATE TABLE big.s (k VARCHAR(40) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT);
         INSERT INTO big.s SELECT CONCAT(ELT(1 + seq % 6, 'a', 'B', 'é', 'E', 'z', 'Z'), ' ', seq), seq FROM seq_1_to_9000;
         CREATE TABLE big.c (region VARCHAR(10), id INT, v INT, PRIMARY KEY (region, id));
         INSERT INTO big.c SELECT ELT(1 + seq % 5, 'north', 'south', 'east', 'west', 'mid'), seq, seq FROM seq_1_to_10000;
         ANALYZE TABLE big.t, big.s, big.c;",
    );
    let c = connector(&server, "big");
    let tables = tables(&c, "big.*", Unrepresentable::Fail).await;
    let names: Vec<String> = tables.iter().map(|t| t.schema.id.to_string()).collect();
    assert_eq!(names, ["big.c", "big.s", "big.t"]);
    let want = [
        source_set(&server, "SELECT region, id, v FROM big.c"),
        source_set(&server, "SELECT k, v FROM big.s"),
        source_set(&server, "SELECT id, v FROM big.t"),
    ];
    let mut snap = ConsistentSnapshot::open(&c, 3).await.unwrap();
    assert_eq!(snap.readers.len(), 3);
    // Writes after the snapshot opened are seen by no worker.
    server.admin("INSERT INTO big.t VALUES (1, 'late'); INSERT INTO big.s VALUES ('aa', 0); DELETE FROM big.c WHERE id < 100;");
    for (table, want) in tables.iter().zip(&want) {
        let ranges = snap.readers[0].plan_chunks(table, 1500).await.unwrap();
        assert!(ranges.len() >= 5, "{}: {ranges:?}", table.schema.id);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        let got = read_ranges(&mut snap, table, &ranges).await;
        assert_eq!(got.len(), want.len(), "{}", table.schema.id);
        assert!(
            &got == want,
            "{}: rows differ from the source",
            table.schema.id
        );
    }
}

/// Applies change rows (by column name) to a table state keyed by `id`.
fn replay(
    state: &mut BTreeMap<String, BTreeMap<String, String>>,
    changes: &[inlet_core::TableChanges],
) {
    for ch in changes {
        let names: Vec<String> = ch
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for r in common::rows(&ch.batch) {
            let row: BTreeMap<String, String> = names[4..]
                .iter()
                .cloned()
                .zip(r[4..].iter().cloned())
                .collect();
            let id = row.get("id").cloned().unwrap_or_default();
            match r[0].as_str() {
                "I" | "U" => {
                    state.insert(id, row);
                }
                "D" => {
                    assert!(state.remove(&id).is_some(), "delete of a missing row {id}");
                }
                "T" => state.clear(),
                other => panic!("op {other}"),
            }
        }
    }
}

fn source_state(
    rows: &[Vec<String>],
    names: &[String],
) -> BTreeMap<String, BTreeMap<String, String>> {
    rows.iter()
        .map(|r| {
            let row: BTreeMap<String, String> =
                names.iter().cloned().zip(r.iter().cloned()).collect();
            (row["id"].clone(), row)
        })
        .collect()
}

const WORKLOAD: &[&str] = &[
    "INSERT INTO w.a VALUES (1, 'one', 10), (2, 'two', 20), (3, 'three', 30)",
    "INSERT INTO w.b VALUES (1, 'x')",
    "UPDATE w.a SET v = 'uno' WHERE id = 1",
    "UPDATE w.a SET id = 30 WHERE id = 3",
    "START TRANSACTION; INSERT INTO w.a VALUES (4, 'four', 40); UPDATE w.b SET v = 'y' WHERE id = 1; DELETE FROM w.a WHERE id = 2; COMMIT",
    "TRUNCATE TABLE w.b",
    "INSERT INTO w.b VALUES (2, 'after truncate')",
    "ALTER TABLE w.a ADD COLUMN extra VARCHAR(10) CHARACTER SET latin1",
    "INSERT INTO w.a VALUES (5, 'five', 50, 'ümlaut')",
    "UPDATE w.a SET extra = 'e1' WHERE id = 1",
    "ALTER TABLE w.a DROP COLUMN n",
    "INSERT INTO w.a VALUES (6, 'six', 'x6')",
    "DELETE FROM w.a WHERE id = 4",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_workload_replays_to_the_source_and_restarts_without_duplicates() {
    let server = MariaDbServer::start();
    server.admin("CREATE DATABASE w");
    server.admin("CREATE TABLE w.a (id INT PRIMARY KEY, v VARCHAR(20), n INT)");
    server.admin("CREATE TABLE w.b (id INT PRIMARY KEY, v VARCHAR(20))");
    let c = connector(&server, "w");
    let tables = tables(&c, "w.*", Unrepresentable::Fail).await;
    let start = master_position(&server);
    for sql in WORKLOAD {
        server.admin(sql);
    }
    // Every statement is one transaction (DDL included).
    let mut capture = BinlogCapture::start(
        &c,
        4343,
        &StartFrom::Position(start.clone()),
        &tables,
        &[None, None],
        options("w.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    let ends = read_commits(&mut capture, WORKLOAD.len()).await;
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    let a_changes = capture.take(0).unwrap();
    let b_changes = capture.take(1).unwrap();
    // The two DDL statements cut table a's changes into three shapes.
    assert_eq!(a_changes.len(), 3);
    assert_eq!(
        capture
            .schema(0)
            .unwrap()
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "v", "extra"]
    );
    let resume = capture.resume();
    assert!(
        resume
            .gtid_set
            .as_ref()
            .is_some_and(|v| v.starts_with("0-1-")),
        "{resume:?}"
    );
    capture.finish().await.unwrap();

    let mut a = BTreeMap::new();
    replay(&mut a, &a_changes);
    let mut b = BTreeMap::new();
    replay(&mut b, &b_changes);
    let now = tables_now(&c).await;
    let names_a: Vec<String> = now[0]
        .schema
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let names_b: Vec<String> = now[1]
        .schema
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let source = snapshot_rows(&c, &now).await;
    // Rows written before a column was added lack it; dropped columns are not in the table.
    let project = |state: BTreeMap<String, BTreeMap<String, String>>, names: &[String]| {
        state
            .into_iter()
            .map(|(k, row)| {
                let row = names
                    .iter()
                    .map(|n| (n.clone(), row.get(n).cloned().unwrap_or_else(|| "∅".into())))
                    .collect::<BTreeMap<_, _>>();
                (k, row)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let a = project(a, &names_a);
    let b = project(b, &names_b);
    assert_eq!(a, source_state(&source[0], &names_a));
    assert_eq!(b, source_state(&source[1], &names_b));
    assert_eq!(a.len(), 4);
    // The key change is a delete of 3 and an insert of 30.
    let a_ops: Vec<String> = a_changes
        .iter()
        .flat_map(|c| common::rows(&c.batch))
        .map(|r| format!("{}{}", r[0], r[4]))
        .collect();
    assert_eq!(a_ops[..7], ["I1", "I2", "I3", "U1", "D3", "I30", "I4"]);
    let b_ops: Vec<String> = b_changes
        .iter()
        .flat_map(|c| common::rows(&c.batch))
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(b_ops, ["I", "U", "T", "I"]);

    // Restart: table a holds everything up to the 5th commit, table b up to the 6th. The
    // stream is re-read from the start; nothing they hold comes again.
    let held = [Some(ends[4]), Some(ends[5])];
    let mut again = BinlogCapture::start(
        &c,
        4343,
        &StartFrom::Position(start),
        &tables,
        &held,
        options("w.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    let ends2 = read_commits(&mut again, WORKLOAD.len()).await;
    assert_eq!(ends2, ends);
    let a2: Vec<String> = again
        .take(0)
        .unwrap()
        .iter()
        .flat_map(|c| common::rows(&c.batch))
        .map(|r| format!("{}{}", r[0], r[4]))
        .collect();
    let b2: Vec<String> = again
        .take(1)
        .unwrap()
        .iter()
        .flat_map(|c| common::rows(&c.batch))
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(a2, a_ops[8..]);
    assert_eq!(b2, ["I"]);

    // Resuming by position from the 5th commit, and by MariaDB GTID, gives the same rest.
    let from_pos = BinlogPosition::from_position(ends[4], "mariadb-bin.000001");
    let mut resumed = BinlogCapture::start(
        &c,
        4343,
        &StartFrom::Position(from_pos),
        &tables,
        &[None, None],
        options("w.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    assert_eq!(
        read_commits(&mut resumed, WORKLOAD.len() - 5).await,
        ends[5..]
    );
}

async fn tables_now(c: &MysqlConnector) -> Vec<MysqlTable> {
    tables(c, "w.*", Unrepresentable::Fail).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transaction_in_parts_and_idle_heartbeats() {
    let server = MariaDbServer::start();
    server.admin("CREATE DATABASE l");
    server.admin("CREATE TABLE l.t (id INT PRIMARY KEY, v INT)");
    let c = connector(&server, "l");
    let tables = tables(&c, "l.*", Unrepresentable::Fail).await;
    let start = master_position(&server);
    server.admin("INSERT INTO l.t SELECT seq, seq FROM l.seq_1_to_5000");
    let mut capture = BinlogCapture::start(
        &c,
        4444,
        &StartFrom::Position(start.clone()),
        &tables,
        &[None],
        options("l.*", Unrepresentable::Fail, 1000),
    )
    .await
    .unwrap();
    let mut parts = Vec::new();
    let end = loop {
        match capture.next().await.unwrap().unwrap() {
            CaptureEvent::Large { table } => {
                assert!(capture.take(table).unwrap().is_empty());
                parts.push(capture.take_part(table).unwrap().unwrap());
            }
            CaptureEvent::Committed { end, .. } => break end,
            CaptureEvent::Idle { .. } | CaptureEvent::TablesChanged => {}
        }
    };
    let rest = capture.take(0).unwrap();
    // A part of 1000 rows each time 2000 are open (checked after each rows event); at least
    // 1000 rows are left for the commit.
    let rest_rows: usize = capture_rows(&rest);
    assert!(
        parts.len() >= 2 && (1000..4000).contains(&rest_rows),
        "{} {rest_rows}",
        parts.len()
    );
    assert_eq!(parts.len() * 1000 + rest_rows, 5000);
    let start_position = start.to_position(0).unwrap();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.part, Some(i as u32 + 1));
        assert_eq!(p.batch.num_rows(), 1000);
        assert_eq!((p.first, p.last), (start_position, start_position));
    }
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].first, rest[0].last), (end, end));
    let ids: Vec<i64> = parts
        .iter()
        .chain(&rest)
        .flat_map(|c| common::rows(&c.batch))
        .map(|r| r[4].parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=5000).collect::<Vec<_>>());
    // Nothing more happens: a heartbeat reports the server's position so an idle task advances.
    let idle = tokio::time::timeout(std::time::Duration::from_secs(10), capture.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(idle, Some(CaptureEvent::Idle { wal_end: end }));
    // Reconnected with the table holding the parts only (a crash before the commit): the
    // transaction comes again whole, in the same parts.
    let mut again = BinlogCapture::start(
        &c,
        4444,
        &StartFrom::Position(start),
        &tables,
        &[Some(start_position)],
        options("l.*", Unrepresentable::Fail, 1000),
    )
    .await
    .unwrap();
    let mut n = 0;
    loop {
        match again.next().await.unwrap().unwrap() {
            CaptureEvent::Large { table } => {
                let p = again.take_part(table).unwrap().unwrap();
                assert_eq!(common::rows(&p.batch), common::rows(&parts[n].batch));
                n += 1;
            }
            CaptureEvent::Committed { .. } => break,
            CaptureEvent::Idle { .. } | CaptureEvent::TablesChanged => {}
        }
    }
    assert_eq!(n, parts.len());
}

fn capture_rows(changes: &[inlet_core::TableChanges]) -> usize {
    changes.iter().map(|c| c.batch.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_settings_and_privileges() {
    let server = MariaDbServer::start_with(&["--binlog-row-image=MINIMAL"]);
    server.admin("CREATE DATABASE k; CREATE TABLE k.t (id INT PRIMARY KEY)");
    server.admin("CREATE USER 'weak'@'127.0.0.1'; GRANT SELECT ON k.* TO 'weak'@'127.0.0.1'");
    let c = MysqlConnector::new(&MysqlSourceConfig {
        url: format!("mysql://weak@127.0.0.1:{}/k", server.port),
        password_file: None,
        tls: TlsMode::Disable,
        ca_file: None,
        server_id: None,
        heartbeat_seconds: None,
        read_timeout_s: None,
    })
    .unwrap();
    let mut conn = c.connect().await.unwrap();
    let tables = discover(&mut conn, &c, &selection("k.*"), &Default::default())
        .await
        .unwrap();
    let checks = inlet_mysql::prerequisites(&mut conn, &c, &tables, true, 1)
        .await
        .unwrap();
    let text: Vec<String> = checks.iter().map(|p| p.to_string()).collect();
    let find = |name: &str| {
        checks
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name}: {text:#?}"))
    };
    assert_eq!(find("binlog_format").status, inlet_core::CheckStatus::Ok);
    let image = find("binlog_row_image");
    assert_eq!(image.status, inlet_core::CheckStatus::Missing);
    assert!(image
        .fix
        .as_deref()
        .unwrap()
        .starts_with("SET GLOBAL binlog_row_image = 'FULL'"));
    assert_eq!(
        find("REPLICATION SLAVE").status,
        inlet_core::CheckStatus::Missing
    );
    assert_eq!(
        find("REPLICATION SLAVE").fix.as_deref(),
        Some("GRANT REPLICATION SLAVE ON *.* TO <inlet user>;")
    );
    assert_eq!(find("SELECT privilege").status, inlet_core::CheckStatus::Ok);
    // server_id 1 is the server's own.
    assert_eq!(find("server_id").status, inlet_core::CheckStatus::Missing);
    let _ = conn.query_drop("SELECT 1").await;
}

/// A session that overrides binlog_format to STATEMENT writes its change to a captured table as
/// a statement, with no rows to read: the capture stops, naming the table, rather than skip it.
/// The same statement on a table the task does not capture passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_format_change_to_a_captured_table_stops_the_capture() {
    let server = MariaDbServer::start();
    server.admin(
        "CREATE DATABASE sf; CREATE TABLE sf.kept (id INT PRIMARY KEY, v INT);
         CREATE TABLE sf.other (id INT PRIMARY KEY, v INT);",
    );
    let c = connector(&server, "sf");
    let tables = tables(&c, "sf.kept", Unrepresentable::Fail).await;
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4201,
        &StartFrom::Position(start),
        &tables,
        &[None],
        options("sf.kept", Unrepresentable::Fail, 1000),
    )
    .await
    .unwrap();
    server.admin(
        "SET SESSION binlog_format = 'STATEMENT';
         INSERT INTO sf.other VALUES (1, 1);
         INSERT INTO sf.kept VALUES (1, 1);",
    );
    let err = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), capture.next())
            .await
            .expect("binlog event within 30 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        err.contains("sf.kept: a change was logged as a statement, not as rows"),
        "{err}"
    );
    // The statement kind, never its text: values stay out of logs and /status.
    assert!(err.contains("an INSERT statement"), "{err}");
    assert!(!err.contains("VALUES") && !err.contains("(1, 1)"), "{err}");
}

/// Reads until `commits` transactions committed, keeping the rows of `table` taken after each
/// commit (as op + values) and the commit positions.
async fn read_rows(
    c: &mut BinlogCapture,
    table: usize,
    commits: usize,
) -> (Vec<Position>, Vec<Vec<String>>) {
    let mut ends = Vec::new();
    let mut rows = Vec::new();
    while ends.len() < commits {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), c.next())
            .await
            .expect("binlog event within 30 s")
            .unwrap()
            .expect("stream open");
        if let CaptureEvent::Committed { end, .. } = e {
            ends.push(end);
            for ch in c.take(table).unwrap() {
                rows.extend(common::ops_and_values(&ch.batch));
            }
        }
    }
    (ends, rows)
}

/// Binlog rotation (FLUSH BINARY LOGS, and files cut at max_binlog_size) while the capture
/// streams: every commit after a rotation carries the new file's number, positions keep
/// growing, the checkpoint names the real file, and a resume from a position in a later file
/// (the replay guard of a table holding everything before it) gets exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_rotations_keep_file_numbers_and_positions() {
    let server = MariaDbServer::start_with(&["--max-binlog-size=4096"]);
    server.admin("CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY, v VARCHAR(200))");
    let c = connector(&server, "r");
    let tables = tables(&c, "r.*", Unrepresentable::Fail).await;
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4501,
        &StartFrom::Position(start.clone()),
        &tables,
        &[None],
        options("r.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    // 60 transactions of ~300 bytes each: a 4 KiB file holds a dozen; some FLUSHes as well.
    for i in 1..=60 {
        let mut sql = format!("INSERT INTO r.t VALUES ({i}, REPEAT('x', 200))");
        if i % 20 == 0 && i < 60 {
            sql.push_str("; FLUSH BINARY LOGS");
        }
        server.admin(&sql);
    }
    let (ends, rows) = read_rows(&mut capture, 0, 60).await;
    let ids: Vec<String> = rows.iter().map(|r| r[1].clone()).collect();
    assert_eq!(ids, (1..=60).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    let last_file = master_position(&server).file;
    let last_seq = u64::from(inlet_mysql::file_sequence(&last_file).unwrap());
    let first_seq = u64::from(inlet_mysql::file_sequence(&start.file).unwrap());
    assert!(last_seq >= first_seq + 5, "{last_file}: too few rotations");
    // The last commit is in the last file, or the one before when the server rotated after it;
    // the checkpoint names the file of that commit.
    let commit_seq = ends[59].0 >> 32;
    assert!(
        commit_seq == last_seq || commit_seq + 1 == last_seq,
        "{:x} (binlog now in {last_file})",
        ends[59].0
    );
    let resume = capture.resume();
    let commit_file = BinlogPosition::from_position(ends[59], &last_file).file;
    assert!(
        resume.binlog_file.as_ref() == Some(&commit_file),
        "{resume:?} (last commit in {commit_file})"
    );
    capture.finish().await.unwrap();

    // Resumed from the checkpoint's file and the 30th commit's position; the table holds the
    // first 30 commits: the other 30 come, once each.
    let at = BinlogPosition::from_position(ends[29], &last_file);
    let mut again = BinlogCapture::start(
        &c,
        4501,
        &StartFrom::Position(at),
        &tables,
        &[Some(ends[29])],
        options("r.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    let (ends2, rows2) = read_rows(&mut again, 0, 30).await;
    assert_eq!(ends2, ends[30..]);
    let ids: Vec<String> = rows2.iter().map(|r| r[1].clone()).collect();
    assert_eq!(ids, (31..=60).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// Character columns after a GEOMETRY column: the binlog's charset list covers the character
/// columns only, so each keeps its own charset (utf8mb4 text, latin1 text, a binary string),
/// and the TABLE_MAP matches the discovered table (no schema change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn character_columns_after_a_geometry_column_keep_their_charsets() {
    let server = MariaDbServer::start();
    server.admin(
        "CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY, g GEOMETRY,
         s VARCHAR(20) CHARACTER SET utf8mb4, l VARCHAR(20) CHARACTER SET latin1, b VARBINARY(8),
         tx TEXT CHARACTER SET latin1, e ENUM('é', 'ü') CHARACTER SET utf8mb4)",
    );
    let c = connector(&server, "g");
    let tables = tables(&c, "g.*", Unrepresentable::Fail).await;
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4502,
        &StartFrom::Position(start),
        &tables,
        &[None],
        options("g.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    server.admin(
        "SET NAMES utf8mb4;
         INSERT INTO g.t VALUES (1, ST_GeomFromText('POINT(1 2)'), 'é😀', 'café', x'00ff', 'Grüße', 'ü');
         UPDATE g.t SET s = 'ñ漢字', l = 'über' WHERE id = 1;",
    );
    let (_, rows) = read_rows(&mut capture, 0, 2).await;
    // The full load reads the same values (the geometry as the server stores it).
    let loaded = snapshot_rows(&c, &tables).await;
    let point = loaded[0][0][1].clone();
    assert_eq!(
        loaded[0],
        [["1", point.as_str(), "ñ漢字", "über", "00ff", "Grüße", "ü"]]
    );
    assert_eq!(
        rows,
        [
            [
                "I",
                "1",
                point.as_str(),
                "é😀",
                "café",
                "00ff",
                "Grüße",
                "ü"
            ],
            [
                "U",
                "1",
                point.as_str(),
                "ñ漢字",
                "über",
                "00ff",
                "Grüße",
                "ü"
            ],
        ]
    );
    let types: Vec<String> = capture
        .schema(0)
        .unwrap()
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.data_type()))
        .collect();
    assert_eq!(
        types,
        ["id Int32", "g Binary", "s Utf8", "l Utf8", "b Binary", "tx Utf8", "e Utf8"]
    );
}

/// MariaDB's uuid, inet6 and inet4 columns: the binlog carries their stored bytes, the full
/// load their text; the change rows hold the same text as the load, and the TABLE_MAP matches
/// the discovered table (no schema change from string to binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_and_inet_columns_read_the_same_in_the_load_and_the_binlog() {
    let server = MariaDbServer::start();
    server.admin(
        "CREATE DATABASE u; CREATE TABLE u.t (id INT PRIMARY KEY, u UUID, i6 INET6, i4 INET4, s VARCHAR(10))",
    );
    let rows =
        "(1, '6ccd780c-baba-1026-9564-5b8c656024db', '2001:db8::ff00:42:8329', '192.0.2.1', 'a'),
        (2, '0192b1a0-0000-7000-8000-000000000001', '::ffff:192.0.2.128', '0.0.0.0', 'b'),
        (3, '00000000-0000-0000-0000-000000000000', '::1', '255.255.255.255', 'c'),
        (4, 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'fe80::1:0:0:0', '10.0.0.1', 'd'),
        (5, '123e4567-e89b-42d3-a456-426614174000', '::', '127.0.0.1', 'e'),
        (6, NULL, NULL, NULL, 'f')";
    let c = connector(&server, "u");
    let tables = tables(&c, "u.*", Unrepresentable::Fail).await;
    let types: Vec<String> = tables[0]
        .schema
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.data_type()))
        .collect();
    assert_eq!(
        types,
        ["id Int32", "u Utf8", "i6 Utf8", "i4 Utf8", "s Utf8"]
    );
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4503,
        &StartFrom::Position(start),
        &tables,
        &[None],
        options("u.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    server.admin(&format!("INSERT INTO u.t VALUES {rows}"));
    let (_, changes) = read_rows(&mut capture, 0, 1).await;
    let loaded = snapshot_rows(&c, &tables).await;
    assert_eq!(loaded[0][0][1], "6ccd780c-baba-1026-9564-5b8c656024db");
    let from_binlog: Vec<Vec<String>> = changes
        .iter()
        .map(|r| {
            assert_eq!(r[0], "I");
            r[1..].to_vec()
        })
        .collect();
    assert_eq!(from_binlog, loaded[0]);
    assert_eq!(capture.schema(0).unwrap(), &tables[0].schema);
}

/// A `tinyint(1)` column added while the capture runs is Boolean, as discovery (after a
/// restart) and the full load plan it; a value other than 0 or 1 in it follows the value
/// policy (NULL under "null") like in the load, instead of stopping the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tinyint1_column_added_during_capture_is_boolean_on_every_path() {
    let server = MariaDbServer::start();
    server.admin("CREATE DATABASE b; CREATE TABLE b.t (id INT PRIMARY KEY, v INT)");
    let c = connector(&server, "b");
    let at_start = tables(&c, "b.*", Unrepresentable::Null).await;
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4504,
        &StartFrom::Position(start),
        &at_start,
        &[None],
        options("b.*", Unrepresentable::Null, 10_000),
    )
    .await
    .unwrap();
    server.admin(
        "INSERT INTO b.t VALUES (1, 1);
         ALTER TABLE b.t ADD COLUMN f TINYINT(1);
         INSERT INTO b.t VALUES (2, 2, 0), (3, 3, 1), (4, 4, 7);
         UPDATE b.t SET f = 1 WHERE id = 1;",
    );
    let (_, rows) = read_rows(&mut capture, 0, 4).await;
    let after: Vec<Vec<String>> = rows.iter().skip(1).map(|r| r.to_vec()).collect();
    assert_eq!(
        after,
        [
            ["I", "2", "2", "false"],
            ["I", "3", "3", "true"],
            ["I", "4", "4", "∅"],
            ["U", "1", "1", "true"],
        ]
    );
    let described = |s: &inlet_core::TableSchema| -> Vec<String> {
        s.columns
            .iter()
            .map(|c| format!("{} {} {}", c.name, c.source_type, c.data_type()))
            .collect()
    };
    let now = tables(&c, "b.*", Unrepresentable::Null).await;
    assert_eq!(
        described(&now[0].schema),
        ["id int Int32", "v int Int32", "f tinyint(1) Boolean"]
    );
    assert_eq!(
        described(capture.schema(0).unwrap()),
        described(&now[0].schema)
    );
    // The load reads the same values.
    let loaded = snapshot_rows(&c, &now).await;
    assert_eq!(
        loaded[0],
        [
            ["1", "1", "true"],
            ["2", "2", "false"],
            ["3", "3", "true"],
            ["4", "4", "∅"]
        ]
    );
}

/// cp1251's unassigned byte 0x98: the server sends it as '?' to a utf8mb4 client (the full
/// load); the binlog carries the raw byte, which must read the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp1251_unassigned_byte_reads_the_same_in_the_load_and_the_binlog() {
    let server = MariaDbServer::start();
    server.admin(
        "CREATE DATABASE w1; CREATE TABLE w1.t (id INT PRIMARY KEY, c VARCHAR(20) CHARACTER SET cp1251)",
    );
    let c = connector(&server, "w1");
    let tables = tables(&c, "w1.*", Unrepresentable::Fail).await;
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4505,
        &StartFrom::Position(start),
        &tables,
        &[None],
        options("w1.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    server.admin("INSERT INTO w1.t VALUES (1, x'98'), (2, x'cff0e8e2e5f2'), (3, x'41984299')");
    let (_, changes) = read_rows(&mut capture, 0, 1).await;
    let loaded = snapshot_rows(&c, &tables).await;
    assert_eq!(loaded[0], [["1", "?"], ["2", "Привет"], ["3", "A?B™"]]);
    let from_binlog: Vec<Vec<String>> = changes.iter().map(|r| r[1..].to_vec()).collect();
    assert_eq!(from_binlog, loaded[0]);
}

/// Enum and set labels with characters outside utf8mb3 (emoji): the catalog shows them as '?',
/// the binlog whole. No schema change is taken for it, and the change rows hold the labels as
/// the full load reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emoji_enum_and_set_labels_read_the_same_in_the_load_and_the_binlog() {
    let server = MariaDbServer::start();
    server.admin(
        "SET NAMES utf8mb4; CREATE DATABASE em; CREATE TABLE em.t (id INT PRIMARY KEY,
         e ENUM('😀', 'b') CHARACTER SET utf8mb4, s SET('é', '🎉x') CHARACTER SET utf8mb4)",
    );
    let c = connector(&server, "em");
    let tables = tables(&c, "em.*", Unrepresentable::Fail).await;
    let start = master_position(&server);
    let mut capture = BinlogCapture::start(
        &c,
        4506,
        &StartFrom::Position(start),
        &tables,
        &[None],
        options("em.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    server.admin(
        "SET NAMES utf8mb4; INSERT INTO em.t VALUES (1, '😀', 'é,🎉x'), (2, 'b', '🎉x'), (3, NULL, '')",
    );
    let (_, changes) = read_rows(&mut capture, 0, 1).await;
    let loaded = snapshot_rows(&c, &tables).await;
    assert_eq!(
        loaded[0],
        [
            ["1", "😀", "[é, 🎉x]"],
            ["2", "b", "[🎉x]"],
            ["3", "∅", "[]"]
        ]
    );
    let from_binlog: Vec<Vec<String>> = changes.iter().map(|r| r[1..].to_vec()).collect();
    assert_eq!(from_binlog, loaded[0]);
    assert_eq!(
        capture.schema(0).unwrap(),
        &tables[0].schema,
        "a schema change that never happened"
    );
}

/// The snapshot's binlog point is inside its file even right after a rotation that DDL caused
/// with no commit since: MariaDB was seen to report the new file's name with the old file's
/// end offset there (the stream then failed as an impossible position, or would read from the
/// middle of an event once the file grew), and inlet then takes the snapshot under a read lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_right_after_a_ddl_rotation_points_inside_its_file() {
    let server = MariaDbServer::start_with(&["--max-binlog-size=4096"]);
    server.admin("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT); INSERT INTO d.t VALUES (1, 1)");
    let files = |s: &MariaDbServer| s.admin("SHOW BINARY LOGS").lines().count();
    let before = files(&server);
    let mut n = 0;
    while files(&server) == before {
        n += 1;
        assert!(n < 200, "no rotation after {n} triggers");
        server.admin(&format!(
            "CREATE TRIGGER d.tr{n} BEFORE UPDATE ON d.t FOR EACH ROW SET NEW.v = NEW.v + {n}"
        ));
    }
    let raw = server.admin(
        "START TRANSACTION WITH CONSISTENT SNAPSHOT; SHOW STATUS LIKE 'binlog_snapshot%'; \
         SHOW BINARY LOGS; COMMIT",
    );
    eprintln!("after {n} triggers:\n{raw}");
    let c = connector(&server, "d");
    let snap = ConsistentSnapshot::open(&c, 2).await.unwrap();
    let point = snap.point.binlog.clone();
    let size: u64 = server
        .admin("SHOW BINARY LOGS")
        .lines()
        .find_map(|l| {
            let mut cols = l.split('\t');
            (cols.next()? == point.file).then(|| cols.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{} not in SHOW BINARY LOGS", point.file));
    assert!(
        point.offset <= size,
        "snapshot point {point:?} is past the end of its file ({size} bytes)"
    );
    drop(snap);
    // A change after the snapshot is read from its point.
    let tables = tables(&c, "d.*", Unrepresentable::Fail).await;
    let mut capture = BinlogCapture::start(
        &c,
        4502,
        &StartFrom::Position(point),
        &tables,
        &[None],
        options("d.*", Unrepresentable::Fail, 10_000),
    )
    .await
    .unwrap();
    server.admin("INSERT INTO d.t VALUES (2, 2)");
    let (_, rows) = read_rows(&mut capture, 0, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
}
