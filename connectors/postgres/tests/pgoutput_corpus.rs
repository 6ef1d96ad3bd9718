//! Replays the fuzz seed corpus (`fuzz/corpus/`) through the same entry points as the fuzz
//! targets, under stable in the normal test run, so every crasher once found stays fixed; and
//! checks exact decodings of messages captured from a real PostgreSQL 15.

use std::path::{Path, PathBuf};

use inlet_postgres::{
    decode_message, fuzz_text_value, MessageKind, PgoutputDecoder, PgoutputError, PgoutputMessage,
    RelationColumn, TupleValue,
};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn file(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir(target).join(name)).unwrap()
}

/// What the `pgoutput` fuzz target does with one input, minus the re-encoding check.
fn replay_pgoutput(data: &[u8]) {
    for in_stream in [false, true] {
        if let Ok(msg) = decode_message(data, in_stream) {
            walk(&msg);
        }
    }
    let mut decoder = PgoutputDecoder::new();
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = (u16::from_be_bytes(*len) as usize).min(tail.len());
        let (one, tail) = tail.split_at(len);
        rest = tail;
        if let Ok(msg) = decoder.decode(one) {
            walk(&msg);
        }
    }
}

fn walk(msg: &PgoutputMessage<'_>) {
    let tuples = match msg {
        PgoutputMessage::Insert { new, .. } => vec![new],
        PgoutputMessage::Update { key, old, new, .. } => {
            key.iter().chain(old.iter()).chain([new]).collect()
        }
        PgoutputMessage::Delete { key, old, .. } => key.iter().chain(old.iter()).collect(),
        _ => Vec::new(),
    };
    for t in tuples {
        assert_eq!(t.columns().count(), t.len());
    }
}

#[test]
fn pgoutput_corpus_never_panics() {
    let files = corpus("pgoutput");
    assert!(
        files.len() > 50,
        "seed corpus missing? {} files",
        files.len()
    );
    let mut decoded = 0;
    for (name, data) in &files {
        let result = std::panic::catch_unwind(|| replay_pgoutput(data));
        assert!(result.is_ok(), "{name} panicked");
        // Every captured message decodes in one of the two stream states.
        if !name.starts_with("edge-") && !name.starts_with("seq-") {
            assert!(
                decode_message(data, false).is_ok() || decode_message(data, true).is_ok(),
                "{name} does not decode"
            );
            decoded += 1;
        }
    }
    assert!(decoded > 40);
}

#[test]
fn text_values_corpus_never_panics() {
    let files = corpus("text_values");
    assert!(
        files.len() > 50,
        "seed corpus missing? {} files",
        files.len()
    );
    for (name, data) in &files {
        let Some((&kind, value)) = data.split_first() else {
            continue;
        };
        let result = std::panic::catch_unwind(|| fuzz_text_value(kind, value));
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(violation)) => panic!("{name}: {violation}"),
            Err(_) => panic!("{name} panicked"),
        }
    }
}

fn text(v: TupleValue<'_>) -> Option<&str> {
    match v {
        TupleValue::Text(b) => Some(std::str::from_utf8(b).unwrap()),
        TupleValue::Null => None,
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn captured_begin_and_commit() {
    let begin = file("pgoutput", "v2-0000-42");
    assert_eq!(
        decode_message(&begin, false).unwrap(),
        PgoutputMessage::Begin {
            final_lsn: 0x0154_50F0,
            commit_time: 848_557_657_857_673,
            xid: 734
        }
    );
    let commit = file("pgoutput", "v2-0005-43");
    assert_eq!(
        decode_message(&commit, false).unwrap(),
        PgoutputMessage::Commit {
            flags: 0,
            commit_lsn: 0x0154_50F0,
            end_lsn: 0x0154_5120,
            commit_time: 848_557_657_857_673,
        }
    );
    // The transaction replayed from origin 'upstream' with the commit time it was given
    // (2024-01-02 03:04:05 UTC, in microseconds since 2000-01-01).
    match decode_message(&file("pgoutput", "v2-3509-42"), false).unwrap() {
        PgoutputMessage::Begin { commit_time, .. } => assert_eq!(commit_time, 757_479_845_000_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn captured_insert_text_values() {
    let data = file("pgoutput", "v12-0004-49");
    let PgoutputMessage::Insert { xid, relation, new } = decode_message(&data, false).unwrap()
    else {
        panic!("not an insert");
    };
    assert_eq!((xid, relation, new.len()), (None, 16394, 29));
    let values: Vec<_> = new.columns().map(text).collect();
    let expected = [
        "1",
        "t",
        "-32768",
        "2147483647",
        "-9223372036854775808",
        "3.4028235e+38",
        "-1.7976931348623157e+308",
        "123456789.123",
        "9999999999999999999999999999.9999999999",
        "NaN",
        "héllo, \"world\"",
        "abc",
        "ab   ",
        "{\"a\": [1, 2]}",
        "{\"a\": 1, \"b\": null}",
        "\\x00ff10",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "5874897-12-31",
        "24:00:00",
        "294276-12-31 23:59:59.999999",
        "2024-02-29 07:04:56.789+00",
        "P1Y2M3DT4H5M6.5S",
        "happy",
        "7",
        "{1,NULL,-3}",
        r#"{"a,b","NULL",NULL,"","q\"uote","back\\slash","{x}"}"#,
        "{1.50,-2.25}",
        "{2000-01-01,infinity}",
        "192.168.0.1/24",
    ];
    assert_eq!(values, expected.map(Some));
    // Each is a well-formed text value for its column's kind (kind numbers as in
    // fuzz_text_value: unconstrained numeric, interval, enum and inet are read as text).
    let kinds = [
        2, 0, 1, 2, 3, 4, 5, 7, 6, 9, 9, 9, 9, 9, 10, 11, 12, 13, 14, 15, 16, 9, 9, 2, 130, 137,
        147, 141, 9,
    ];
    for (kind, value) in kinds.iter().zip(expected) {
        assert_eq!(
            fuzz_text_value(*kind, value.as_bytes()),
            Ok(true),
            "{value}"
        );
    }
    // And a wrong kind is refused.
    assert_eq!(fuzz_text_value(2, b"3.4028235e+38"), Ok(false));
}

#[test]
fn captured_relation_update_toast_and_stream() {
    // The table "Weird ""name""" with column "col é".
    match decode_message(&file("pgoutput", "v12-0047-49"), false).unwrap() {
        PgoutputMessage::Insert { new, .. } => {
            assert_eq!(new.columns().map(text).collect::<Vec<_>>(), [Some("1")])
        }
        other => panic!("{other:?}"),
    }
    // An update that leaves a TOASTed column alone does not send it.
    match decode_message(&file("pgoutput", "v12-0043-55"), false).unwrap() {
        PgoutputMessage::Update { key, old, new, .. } => {
            assert!(key.is_none() && old.is_none());
            assert_eq!(
                new.columns().collect::<Vec<_>>(),
                [
                    TupleValue::Text(b"1"),
                    TupleValue::Text(b"2"),
                    TupleValue::UnchangedToast
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // A primary-key change sends the old key ('K'): only key columns, the rest null.
    match decode_message(&file("pgoutput", "v12-0022-55"), false).unwrap() {
        PgoutputMessage::Update { key, new, .. } => {
            let key = key.unwrap();
            assert_eq!(key.len(), 29);
            let key: Vec<_> = key.columns().collect();
            assert_eq!(key[0], TupleValue::Text(b"2"));
            assert!(key[1..].iter().all(|v| *v == TupleValue::Null));
            assert_eq!(new.columns().next(), Some(TupleValue::Text(b"10")));
        }
        other => panic!("{other:?}"),
    }
    // Inside a streamed block: Relation with xid, then an update under REPLICA IDENTITY FULL.
    let relation = file("pgoutput", "v2-2081-52");
    assert!(decode_message(&relation, false).is_err());
    match decode_message(&relation, true).unwrap() {
        PgoutputMessage::Relation(r) => {
            assert_eq!(
                (r.xid, r.oid, r.namespace.as_str(), r.name.as_str()),
                (Some(752), 16410, "public", "nokey")
            );
            assert_eq!(r.replica_identity, b'f');
            assert_eq!(
                r.columns[2],
                RelationColumn {
                    flags: 1,
                    name: "c".into(),
                    type_oid: 16385,
                    type_modifier: -1
                }
            );
        }
        other => panic!("{other:?}"),
    }
    match decode_message(&file("pgoutput", "v2-2082-55"), true).unwrap() {
        PgoutputMessage::Update {
            xid, old, new, key, ..
        } => {
            assert_eq!((xid, key), (Some(752), None));
            let old: Vec<_> = old.unwrap().columns().map(text).collect();
            let new: Vec<_> = new.columns().map(text).collect();
            assert_eq!(old, [Some("2"), Some("z"), Some("ok")]);
            assert_eq!(new, [Some("2"), Some("streamed"), Some("ok")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decode_message(&file("pgoutput", "v2-2084-54"), true).unwrap(),
        PgoutputMessage::Truncate {
            xid: Some(752),
            options: 0,
            relations: vec![16415]
        }
    );
    assert_eq!(
        decode_message(&file("pgoutput", "v2-4934-41"), false).unwrap(),
        PgoutputMessage::StreamAbort {
            xid: 756,
            subxid: 757
        }
    );
    match decode_message(&file("pgoutput", "v2-0050-4d"), false).unwrap() {
        PgoutputMessage::Message {
            transactional,
            prefix,
            content,
            ..
        } => assert_eq!(
            (transactional, prefix, content),
            (true, "inlet", &b"transactional payload"[..])
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn captured_stream_sequence() {
    // Stream Start, Type, Relation, Insert, Stream Stop, Stream Commit as captured, through the
    // stateful decoder.
    let data = file("pgoutput", "seq-v2-stream-commit");
    let mut decoder = PgoutputDecoder::new();
    let mut kinds = Vec::new();
    let mut rest = &data[..];
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let (one, tail) = tail.split_at(u16::from_be_bytes(*len) as usize);
        rest = tail;
        let msg = decoder.decode(one).unwrap();
        if let PgoutputMessage::Insert { xid, new, .. } = &msg {
            assert_eq!(*xid, Some(758));
            let values: Vec<_> = new.columns().map(text).collect();
            assert_eq!(values, [Some("4"), Some("after subabort"), Some("ok")]);
        }
        if let PgoutputMessage::StreamCommit { xid, .. } = &msg {
            assert_eq!(*xid, 756);
        }
        kinds.push(msg.kind());
    }
    assert_eq!(
        kinds,
        [
            MessageKind::StreamStart,
            MessageKind::Type,
            MessageKind::Relation,
            MessageKind::Insert,
            MessageKind::StreamStop,
            MessageKind::StreamCommit
        ]
    );
    assert!(!decoder.in_stream());
}

#[test]
fn hand_made_edge_cases_fail_cleanly() {
    let err = |name: &str| decode_message(&file("pgoutput", name), false).unwrap_err();
    assert_eq!(err("edge-empty"), PgoutputError::Empty);
    assert_eq!(
        err("edge-unknown-type"),
        PgoutputError::UnknownMessageType(b'Z')
    );
    assert!(matches!(
        err("edge-relation-huge-count"),
        PgoutputError::Truncated { .. }
    ));
    assert!(matches!(
        err("edge-insert-huge-value"),
        PgoutputError::Truncated { .. }
    ));
    assert!(matches!(
        err("edge-truncate-negative-count"),
        PgoutputError::NegativeCount { .. }
    ));
    assert!(matches!(
        err("edge-relation-bad-utf8"),
        PgoutputError::InvalidUtf8 { .. }
    ));
    assert!(matches!(
        err("edge-stream-abort-v4"),
        PgoutputError::TrailingBytes { extra: 16, .. }
    ));
    // Errors read as sentences naming the message and the field.
    assert_eq!(
        err("edge-insert-bad-kind").to_string(),
        "Insert message: unknown tuple column kind 'x' (0x78)"
    );
}
