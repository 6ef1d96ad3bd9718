//! Arbitrary bytes through the pgoutput decoder: as one message (outside and inside a streamed
//! block), and as a sequence of u16-length-prefixed messages through the stateful decoder.
//! Every tuple is walked to the end. A decoded message must re-encode to a message of the same
//! length that decodes to the same thing, so no field is skipped or misread.
#![no_main]

use inlet_postgres::{decode_message, PgoutputDecoder, PgoutputMessage, TupleData, TupleValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for in_stream in [false, true] {
        if let Ok(msg) = decode_message(data, in_stream) {
            walk(&msg);
            let again = encode(&msg);
            assert_eq!(again.len(), data.len(), "{msg:?}");
            assert_eq!(decode_message(&again, in_stream).as_ref(), Ok(&msg));
        }
    }
    let mut decoder = PgoutputDecoder::new();
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = (u16::from_be_bytes(*len) as usize).min(tail.len());
        let (one, tail) = tail.split_at(len);
        rest = tail;
        let before = decoder.in_stream();
        match decoder.decode(one) {
            Ok(msg) => {
                walk(&msg);
                let expected = match msg {
                    PgoutputMessage::StreamStart { .. } => true,
                    PgoutputMessage::StreamStop => false,
                    _ => before,
                };
                assert_eq!(decoder.in_stream(), expected);
            }
            Err(_) => assert_eq!(decoder.in_stream(), before, "an error changed the state"),
        }
    }
});

fn tuples<'m, 'a>(msg: &'m PgoutputMessage<'a>) -> Vec<&'m TupleData<'a>> {
    match msg {
        PgoutputMessage::Insert { new, .. } => vec![new],
        PgoutputMessage::Update { key, old, new, .. } => {
            key.iter().chain(old.iter()).chain([new]).collect()
        }
        PgoutputMessage::Delete { key, old, .. } => key.iter().chain(old.iter()).collect(),
        _ => Vec::new(),
    }
}

fn walk(msg: &PgoutputMessage<'_>) {
    for tuple in tuples(msg) {
        let mut n = 0;
        for value in tuple.columns() {
            if let TupleValue::Text(b) | TupleValue::Binary(b) = value {
                std::hint::black_box(b);
            }
            n += 1;
        }
        assert_eq!(
            n,
            tuple.len(),
            "a validated tuple must yield all its columns"
        );
    }
}

fn encode(msg: &PgoutputMessage<'_>) -> Vec<u8> {
    let mut out = vec![msg.kind().tag()];
    let xid = match msg {
        PgoutputMessage::Relation(r) => r.xid,
        PgoutputMessage::Type { xid, .. }
        | PgoutputMessage::Insert { xid, .. }
        | PgoutputMessage::Update { xid, .. }
        | PgoutputMessage::Delete { xid, .. }
        | PgoutputMessage::Truncate { xid, .. }
        | PgoutputMessage::Message { xid, .. } => *xid,
        _ => None,
    };
    if let Some(xid) = xid {
        out.extend(xid.to_be_bytes());
    }
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend(s.as_bytes());
        out.push(0);
    };
    match msg {
        PgoutputMessage::Begin {
            final_lsn,
            commit_time,
            xid,
        } => {
            out.extend(final_lsn.to_be_bytes());
            out.extend(commit_time.to_be_bytes());
            out.extend(xid.to_be_bytes());
        }
        PgoutputMessage::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            out.push(*flags);
            out.extend(commit_lsn.to_be_bytes());
            out.extend(end_lsn.to_be_bytes());
            out.extend(commit_time.to_be_bytes());
        }
        PgoutputMessage::Origin { lsn, name } => {
            out.extend(lsn.to_be_bytes());
            string(&mut out, name);
        }
        PgoutputMessage::Relation(r) => {
            out.extend(r.oid.to_be_bytes());
            string(&mut out, &r.namespace);
            string(&mut out, &r.name);
            out.push(r.replica_identity);
            out.extend((r.columns.len() as i16).to_be_bytes());
            for c in &r.columns {
                out.push(c.flags);
                string(&mut out, &c.name);
                out.extend(c.type_oid.to_be_bytes());
                out.extend(c.type_modifier.to_be_bytes());
            }
        }
        PgoutputMessage::Type {
            oid,
            namespace,
            name,
            ..
        } => {
            out.extend(oid.to_be_bytes());
            string(&mut out, namespace);
            string(&mut out, name);
        }
        PgoutputMessage::Insert { relation, new, .. } => {
            out.extend(relation.to_be_bytes());
            out.push(b'N');
            tuple(&mut out, new);
        }
        PgoutputMessage::Update {
            relation,
            key,
            old,
            new,
            ..
        } => {
            out.extend(relation.to_be_bytes());
            if let Some(k) = key {
                out.push(b'K');
                tuple(&mut out, k);
            }
            if let Some(o) = old {
                out.push(b'O');
                tuple(&mut out, o);
            }
            out.push(b'N');
            tuple(&mut out, new);
        }
        PgoutputMessage::Delete {
            relation, key, old, ..
        } => {
            out.extend(relation.to_be_bytes());
            if let Some(k) = key {
                out.push(b'K');
                tuple(&mut out, k);
            }
            if let Some(o) = old {
                out.push(b'O');
                tuple(&mut out, o);
            }
        }
        PgoutputMessage::Truncate {
            options, relations, ..
        } => {
            out.extend((relations.len() as i32).to_be_bytes());
            out.push(*options);
            for r in relations {
                out.extend(r.to_be_bytes());
            }
        }
        PgoutputMessage::Message {
            transactional,
            lsn,
            prefix,
            content,
            ..
        } => {
            out.push(*transactional as u8);
            out.extend(lsn.to_be_bytes());
            string(&mut out, prefix);
            out.extend((content.len() as i32).to_be_bytes());
            out.extend(*content);
        }
        PgoutputMessage::StreamStart { xid, first_segment } => {
            out.extend(xid.to_be_bytes());
            out.push(*first_segment as u8);
        }
        PgoutputMessage::StreamStop => {}
        PgoutputMessage::StreamCommit {
            xid,
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            out.extend(xid.to_be_bytes());
            out.push(*flags);
            out.extend(commit_lsn.to_be_bytes());
            out.extend(end_lsn.to_be_bytes());
            out.extend(commit_time.to_be_bytes());
        }
        PgoutputMessage::StreamAbort { xid, subxid } => {
            out.extend(xid.to_be_bytes());
            out.extend(subxid.to_be_bytes());
        }
    }
    out
}

fn tuple(out: &mut Vec<u8>, t: &TupleData<'_>) {
    out.extend((t.len() as i16).to_be_bytes());
    for v in t.columns() {
        match v {
            TupleValue::Null => out.push(b'n'),
            TupleValue::UnchangedToast => out.push(b'u'),
            TupleValue::Text(b) | TupleValue::Binary(b) => {
                out.push(if matches!(v, TupleValue::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                out.extend((b.len() as i32).to_be_bytes());
                out.extend(b);
            }
        }
    }
}
