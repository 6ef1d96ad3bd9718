use super::*;

fn p(hex: u64) -> Position {
    Position(hex)
}

fn names(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// A PostgreSQL task's checkpoint as commit 6164e41 wrote it (sinks/parquet/src/changes.rs
/// `Checkpoint::encode`: `position=` then the facts in order), after a table joined beside the
/// stream:
/// - `position=`: the stream's flush (src/stream.rs `Stream::flush`), `Position`'s 16 hex digits;
/// - `slot=`: src/cdc.rs `bootstrap` (`SLOT_FACT`), carried in `Outputs::facts`;
/// - `table="public.orders"`, `table="public.line items"`: `bootstrap`'s `table_fact` (the name
///   in JSON quotes), carried;
/// - `table="public.customers"`, `table_loaded_at=<hex> "public.customers"`: src/join.rs
///   `JoinLoad::spawn` (`table_fact`, `loaded_at_fact`), appended by `PgSource::checkpoint_facts`
///   once the load finished.
const PG_6164E41: &str = include_str!("fixtures/pg-6164e41.checkpoint");

/// A MySQL task's checkpoint (GTIDs on) as 6164e41 wrote it:
/// - `table=`, `table_loaded_at=`: src/mysql_task.rs `known` (`table_fact`, join.rs
///   `loaded_at_fact` of an earlier join), then `server_fact` (`mysql.server_id`, decimal), all
///   carried in `Outputs::facts`;
/// - `mysql.flavor`, `mysql.binlog_file`, `mysql.gtid_set`: connectors/mysql/src/capture.rs
///   `BinlogCapture::checkpoint_facts`, in that order, appended at each flush.
const MYSQL_6164E41: &str = include_str!("fixtures/mysql-6164e41.checkpoint");

/// A PostgreSQL task's checkpoint as 5c4cf08 (the last text-form version) wrote it, with every
/// fact it knew:
/// - `slot=`, `table=`: as in 6164e41;
/// - `table_identity=<oid> <table>`: src/join.rs `replaced_tables` (a replaced table keeps its
///   old identity, 16390, until its load's, 16395, is appended);
/// - `table_unwritten_defaults=<table> <JSON array>`: src/cdc/added_defaults.rs `added_since`;
/// - `table_storage=<relfilenode> <columns> <table>`: src/cdc/rewrites.rs `rewritten_since`
///   (`Storage::record`, `-` for no columns);
/// - `table_resync=<hex> <table>`: src/resync.rs `request`;
/// - the joined table's `table`, `table_loaded_at`, `table_identity`: `JoinLoad` with
///   `with_facts`, appended by `PgSource::checkpoint_facts`.
const PG_5C4CF08: &str = include_str!("fixtures/pg-5c4cf08.checkpoint");

/// The slot record (`_inlet/<task>.slot/checkpoint`) as 5c4cf08 wrote it: src/cdc/start.rs
/// `SlotRecord::to_checkpoint` (`slot`, `task`, `database`, `id`, `system`).
const PG_SLOT_RECORD_5C4CF08: &str = include_str!("fixtures/pg-slot-record-5c4cf08.checkpoint");

/// A MariaDB task's checkpoint as 5c4cf08 wrote it: `known` (`table`, `table_resync`) and
/// `mysql.server_id` carried; then `BinlogCapture::checkpoint_facts` (flavor, file, GTID list,
/// `mysql.xa_prepared_from` as a decimal position) and `MysqlSource::checkpoint_facts`' swap
/// (`table_replaced_at`, src/join.rs `replaced_fact`).
const MYSQL_5C4CF08: &str = include_str!("fixtures/mysql-5c4cf08.checkpoint");

fn captured() -> TableState {
    TableState {
        captured: true,
        ..TableState::default()
    }
}

#[test]
fn a_postgres_checkpoint_of_6164e41_is_read() {
    let cp = Checkpoint::decode(PG_6164E41.as_bytes()).unwrap();
    let expected = Checkpoint {
        position: p(0x1A2B3C8),
        tables: [
            ("public.orders".to_string(), captured()),
            ("public.line items".to_string(), captured()),
            (
                "public.customers".to_string(),
                TableState {
                    loaded_at: Some(p(0x1A2B000)),
                    ..captured()
                },
            ),
        ]
        .into(),
        source: Some(SourceResume::Postgres(PostgresResume {
            slot: "inlet_orders".into(),
            created_by: None,
        })),
    };
    assert_eq!(cp, expected);
    // The next write stores the JSON form, which reads back the same.
    let json = cp.encode();
    assert!(json.starts_with("{\n  \"version\": 2,"), "{json}");
    assert_eq!(Checkpoint::decode(json.as_bytes()).unwrap(), expected);
}

#[test]
fn a_mysql_checkpoint_of_6164e41_is_read() {
    let cp = Checkpoint::decode(MYSQL_6164E41.as_bytes()).unwrap();
    let expected = Checkpoint {
        position: p(0x3_0000_04F2),
        tables: [
            ("shop.orders".to_string(), captured()),
            (
                "shop.items".to_string(),
                TableState {
                    loaded_at: Some(p(0x3_0000_0100)),
                    ..captured()
                },
            ),
        ]
        .into(),
        source: Some(SourceResume::Mysql(MysqlResume {
            binlog_file: Some("binlog.000003".into()),
            gtid_set: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77".into()),
            flavor: Some("mysql".into()),
            server_id: Some(1),
            xa_prepared_from: None,
        })),
    };
    assert_eq!(cp, expected);
    assert_eq!(
        Checkpoint::decode(cp.encode().as_bytes()).unwrap(),
        expected
    );
}

#[test]
fn a_postgres_checkpoint_of_5c4cf08_with_every_fact_is_read() {
    let cp = Checkpoint::decode(PG_5C4CF08.as_bytes()).unwrap();
    let orders = TableState {
        identities: vec!["16384".into()],
        unwritten_defaults: Some(names(&["region"])),
        storage: Some(StorageRecord {
            filenode: 16384,
            columns: vec![
                ColumnRecord {
                    num: 1,
                    xmin: 731,
                    type_id: 23,
                    typmod: -1,
                    missing: false,
                },
                ColumnRecord {
                    num: 2,
                    xmin: 731,
                    type_id: 1700,
                    typmod: 655366,
                    missing: false,
                },
                ColumnRecord {
                    num: 3,
                    xmin: 745,
                    type_id: 25,
                    typmod: -1,
                    missing: true,
                },
            ],
        }),
        ..captured()
    };
    let odd = TableState {
        identities: vec!["16390".into(), "16395".into()],
        // An empty record is a record (the table has no such column), not a missing one.
        unwritten_defaults: Some(BTreeSet::new()),
        storage: Some(StorageRecord {
            filenode: 16390,
            columns: vec![],
        }),
        resync_at: Some(p(0x1A2B3C8)),
        ..captured()
    };
    let joined = TableState {
        loaded_at: Some(p(0x1A2B000)),
        identities: vec!["16400".into()],
        ..captured()
    };
    let expected = Checkpoint {
        position: p(0x1A2B3C8),
        tables: [
            ("public.orders".to_string(), orders),
            ("public.odd \"name\"".to_string(), odd),
            ("public.joined".to_string(), joined),
        ]
        .into(),
        source: Some(SourceResume::Postgres(PostgresResume {
            slot: "inlet_orders".into(),
            created_by: None,
        })),
    };
    assert_eq!(cp, expected);
    assert_eq!(
        Checkpoint::decode(cp.encode().as_bytes()).unwrap(),
        expected
    );
}

#[test]
fn a_slot_record_of_5c4cf08_is_read() {
    let cp = Checkpoint::decode(PG_SLOT_RECORD_5C4CF08.as_bytes()).unwrap();
    let expected = Checkpoint {
        position: p(0x1A2B3C0),
        tables: TableStates::new(),
        source: Some(SourceResume::Postgres(PostgresResume {
            slot: "inlet_orders".into(),
            created_by: Some(SlotCreator {
                task: "orders".into(),
                database: "shop".into(),
                id: "18c1f2a3b4c5d6e7-1f2a".into(),
                system: Some("7312345678901234567".into()),
                creating: false,
            }),
        })),
    };
    assert_eq!(cp, expected);
    let creating = format!("{PG_SLOT_RECORD_5C4CF08}creating=true\n");
    let cp = Checkpoint::decode(creating.as_bytes()).unwrap();
    assert!(
        cp.source
            .unwrap()
            .postgres()
            .unwrap()
            .created_by
            .as_ref()
            .unwrap()
            .creating
    );
}

#[test]
fn a_mariadb_checkpoint_of_5c4cf08_is_read() {
    let cp = Checkpoint::decode(MYSQL_5C4CF08.as_bytes()).unwrap();
    let expected = Checkpoint {
        position: p(0x3_0000_04F2),
        tables: [
            (
                "shop.orders".to_string(),
                TableState {
                    resync_at: Some(p(0x3_0000_0400)),
                    ..captured()
                },
            ),
            (
                "shop.items".to_string(),
                TableState {
                    replaced_at: Some(p(0x3_0000_04A0)),
                    ..captured()
                },
            ),
        ]
        .into(),
        source: Some(SourceResume::Mysql(MysqlResume {
            binlog_file: Some("mariadb-bin.000003".into()),
            gtid_set: Some("0-2-1042".into()),
            flavor: Some("mariadb".into()),
            server_id: Some(2),
            xa_prepared_from: Some(p(0x3_0000_0100)),
        })),
    };
    assert_eq!(cp, expected);
    assert_eq!(
        Checkpoint::decode(cp.encode().as_bytes()).unwrap(),
        expected
    );
}

#[test]
fn the_json_form_names_every_field_and_leaves_out_empty_tables() {
    let mut cp = Checkpoint::at(p(0x2A));
    cp.table("public.t").captured = true;
    cp.table("public.empty");
    cp.source = Some(SourceResume::Postgres(PostgresResume {
        slot: "inlet_t".into(),
        created_by: None,
    }));
    assert_eq!(
        cp.encode(),
        "{\n  \"version\": 2,\n  \"position\": \"000000000000002A\",\n  \"tables\": {\n    \
         \"public.t\": {\n      \"captured\": true\n    }\n  },\n  \"source\": {\n    \
         \"postgres\": {\n      \"slot\": \"inlet_t\"\n    }\n  }\n}\n"
    );
    // A field a later version adds is ignored by this one.
    let later = r#"{"version": 2, "position": "000000000000002A", "chunks_done": 3}"#;
    assert_eq!(
        Checkpoint::decode(later.as_bytes()).unwrap(),
        Checkpoint::at(p(0x2A))
    );
}

#[test]
fn unreadable_checkpoints_say_why() {
    let e = |text: &str| Checkpoint::decode(text.as_bytes()).unwrap_err();
    assert_eq!(e("nonsense"), "line \"nonsense\" is not key=value");
    assert_eq!(e("slot=x\n"), "it has no position= line");
    assert_eq!(
        e("position=000000000000002A\nweird=1\n"),
        "unknown fact \"weird\""
    );
    assert_eq!(
        e("position=000000000000002A\ntable_loaded_at=xyz \"a.b\"\n"),
        "fact table_loaded_at=xyz \"a.b\": not a hex position"
    );
    assert!(e("{\"version\": 3, \"position\": \"000000000000002A\"}").contains("version 3"));
    assert!(e("{\"version\": 2}").starts_with("not a checkpoint"));
    assert!(e("position=000000000000002A\nslot=s\nmysql.flavor=mysql\n").contains("both"));
}

#[test]
fn merging_appends_identities_and_keeps_the_latest_positions() {
    let mut a = TableState {
        loaded_at: Some(p(5)),
        identities: vec!["1".into()],
        ..TableState::default()
    };
    a.merge(&TableState {
        captured: true,
        loaded_at: Some(p(9)),
        identities: vec!["1".into(), "2".into()],
        ..TableState::default()
    });
    assert_eq!(
        a,
        TableState {
            captured: true,
            loaded_at: Some(p(9)),
            identities: vec!["1".into(), "2".into()],
            ..TableState::default()
        }
    );
}
