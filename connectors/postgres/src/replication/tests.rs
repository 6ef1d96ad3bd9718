//! Framing and message tests against a scripted server on an in-memory pipe.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::wire::{Socket, Wire};
use super::*;

const SERVER: &str = "u@test:5432/db";

/// One backend message: tag, length, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn xlog_data(start: u64, end: u64, time: i64, data: &[u8]) -> Vec<u8> {
    let mut body = vec![b'w'];
    body.extend_from_slice(&start.to_be_bytes());
    body.extend_from_slice(&end.to_be_bytes());
    body.extend_from_slice(&time.to_be_bytes());
    body.extend_from_slice(data);
    frame(b'd', &body)
}

fn keepalive(end: u64, time: i64, reply: bool) -> Vec<u8> {
    let mut body = vec![b'k'];
    body.extend_from_slice(&end.to_be_bytes());
    body.extend_from_slice(&time.to_be_bytes());
    body.push(u8::from(reply));
    frame(b'd', &body)
}

fn error_response(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in fields {
        body.push(*t);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(b'E', &body)
}

fn row_description(names: &[&str]) -> Vec<u8> {
    let mut body = (names.len() as u16).to_be_bytes().to_vec();
    for name in names {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&0u32.to_be_bytes()); // table oid
        body.extend_from_slice(&0u16.to_be_bytes()); // column
        body.extend_from_slice(&25u32.to_be_bytes()); // type oid: text
        body.extend_from_slice(&(-1i16).to_be_bytes()); // size
        body.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
        body.extend_from_slice(&0u16.to_be_bytes()); // format: text
    }
    frame(b'T', &body)
}

fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut body = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as u32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
        }
    }
    frame(b'D', &body)
}

fn command_complete(tag: &str) -> Vec<u8> {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    frame(b'C', &body)
}

fn ready() -> Vec<u8> {
    frame(b'Z', b"I")
}

fn stream_on(socket: DuplexStream) -> ReplicationStream {
    ReplicationStream {
        wire: Wire::new(Socket::Test(socket)),
        server: SERVER.to_string(),
        slot: "s".to_string(),
        proto_version: 2,
        start: Lsn(0),
        state: StreamState::Streaming,
    }
}

fn connection_on(socket: DuplexStream, version: u32) -> ReplicationConnection {
    ReplicationConnection {
        wire: Wire::new(Socket::Test(socket)),
        server: SERVER.to_string(),
        server_version_num: version,
        backend_pid: Some(42),
        in_flight: false,
        failover_slot: false,
    }
}

/// Writes `bytes` one at a time, so every message arrives split at every possible point.
async fn trickle(peer: &mut DuplexStream, bytes: &[u8]) {
    for b in bytes {
        peer.write_all(&[*b]).await.expect("write to the pipe");
        peer.flush().await.expect("flush the pipe");
    }
}

/// Reads one frontend message (tag, body) from the client.
async fn read_frontend(peer: &mut DuplexStream) -> (u8, Vec<u8>) {
    let tag = peer.read_u8().await.expect("tag");
    let len = peer.read_u32().await.expect("length") as usize;
    let mut body = vec![0; len - 4];
    peer.read_exact(&mut body).await.expect("body");
    (tag, body)
}

fn code_of(e: &PgError) -> Option<&str> {
    match e {
        PgError::Replication { code, .. } => code.as_deref(),
        _ => None,
    }
}

#[test]
fn copy_data_messages_decode() {
    let raw = xlog_data(0x16_B374_D848, 0x16_B374_D900, 789, b"Bpayload");
    // Strip the CopyData header: parse_copy_data sees the body only.
    let body = Bytes::copy_from_slice(&raw[5..]);
    assert_eq!(
        parse_copy_data(body),
        Ok(ReplicationMessage::XLogData {
            wal_start: Lsn(0x16_B374_D848),
            wal_end: Lsn(0x16_B374_D900),
            server_time: 789,
            data: Bytes::from_static(b"Bpayload"),
        })
    );
    let body = Bytes::copy_from_slice(&keepalive(77, -5, true)[5..]);
    assert_eq!(
        parse_copy_data(body),
        Ok(ReplicationMessage::Keepalive {
            wal_end: Lsn(77),
            server_time: -5,
            reply_requested: true,
        })
    );
    // XLogData with no payload is valid (and empty).
    let body = Bytes::copy_from_slice(&xlog_data(1, 2, 3, b"")[5..]);
    let decoded = parse_copy_data(body);
    assert!(
        matches!(&decoded, Ok(ReplicationMessage::XLogData { data, .. }) if data.is_empty()),
        "{decoded:?}"
    );

    assert_eq!(
        parse_copy_data(Bytes::from_static(b"w\0\0")),
        Err("XLogData of 3 bytes is too short".to_string())
    );
    assert_eq!(
        parse_copy_data(Bytes::copy_from_slice(&keepalive(1, 2, false)[5..22])),
        Err("keepalive of 17 bytes is too short".to_string())
    );
    assert_eq!(
        parse_copy_data(Bytes::from_static(b"x123")),
        Err("unknown replication message type 'x'".to_string())
    );
    assert_eq!(
        parse_copy_data(Bytes::new()),
        Err("empty CopyData message".to_string())
    );
}

#[test]
fn status_update_layout() {
    let body = status_update(Lsn(0x0102), Lsn(0x0304), Lsn(0x0506), 0x0708, true);
    let mut expected = vec![b'r'];
    expected.extend_from_slice(&0x0102u64.to_be_bytes());
    expected.extend_from_slice(&0x0304u64.to_be_bytes());
    expected.extend_from_slice(&0x0506u64.to_be_bytes());
    expected.extend_from_slice(&0x0708i64.to_be_bytes());
    expected.push(1);
    assert_eq!(body.to_vec(), expected);
    assert_eq!(status_update(Lsn(0), Lsn(0), Lsn(0), 0, false)[33], 0);
}

#[test]
fn postgres_clock() {
    // 2000-01-01 is 946684800 s after the Unix epoch; now is well after 2020-01-01.
    let now = pg_now();
    assert!(now > 631_152_000_000_000, "{now}");
    assert!(now < 3_000_000_000_000_000, "{now}");
}

#[tokio::test]
async fn stream_reads_messages_split_anywhere() {
    let (client, mut peer) = tokio::io::duplex(64);
    let mut stream = stream_on(client);
    let mut script = xlog_data(100, 200, 300, b"BEGIN-ish");
    // A notice and a parameter change in the middle are skipped.
    script.extend(frame(b'N', b"SNOTICE\0VNOTICE\0C00000\0Mhello\0\0"));
    script.extend(frame(b'S', b"TimeZone\0UTC\0"));
    script.extend(keepalive(200, 400, false));
    script.extend(frame(b'c', b""));
    let writer = tokio::spawn(async move {
        trickle(&mut peer, &script).await;
        peer
    });
    assert_eq!(
        stream.next().await.expect("first"),
        Some(ReplicationMessage::XLogData {
            wal_start: Lsn(100),
            wal_end: Lsn(200),
            server_time: 300,
            data: Bytes::from_static(b"BEGIN-ish"),
        })
    );
    assert_eq!(
        stream.next().await.expect("second"),
        Some(ReplicationMessage::Keepalive {
            wal_end: Lsn(200),
            server_time: 400,
            reply_requested: false,
        })
    );
    assert_eq!(stream.next().await.expect("end"), None);
    // After the server's CopyDone, the stream stays ended.
    assert_eq!(stream.next().await.expect("still ended"), None);
    writer.await.expect("writer");
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let (client, mut peer) = tokio::io::duplex(1024);
    let mut stream = stream_on(client);
    let message = xlog_data(1, 2, 3, b"Ihalf-and-half");
    peer.write_all(&message[..10]).await.expect("write");
    // The timeout drops next() while half a message is buffered…
    let early = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    assert!(early.is_err(), "no whole message yet");
    // …and nothing of it is lost when the rest arrives.
    peer.write_all(&message[10..]).await.expect("write");
    assert_eq!(
        stream.next().await.expect("message"),
        Some(ReplicationMessage::XLogData {
            wal_start: Lsn(1),
            wal_end: Lsn(2),
            server_time: 3,
            data: Bytes::from_static(b"Ihalf-and-half"),
        })
    );
}

#[tokio::test]
async fn stream_error_carries_sqlstate_and_stays_failed() {
    let (client, mut peer) = tokio::io::duplex(1024);
    let mut stream = stream_on(client);
    peer.write_all(&error_response(&[
        (b'S', "FEHLER"),
        (b'V', "ERROR"),
        (b'C', "42704"),
        (b'M', "replication slot \"s\" does not exist"),
        (b'H', "Create it."),
    ]))
    .await
    .expect("write");
    let e = stream.next().await.expect_err("error response");
    assert_eq!(code_of(&e), Some("42704"));
    assert_eq!(
        e.to_string(),
        "PostgreSQL at u@test:5432/db: streaming from replication slot \"s\" failed: ERROR: \
         replication slot \"s\" does not exist; hint: Create it.; if the replication slot was \
         dropped, the changes since inlet's last commit are gone and the task needs a new full \
         load; if a publication is missing, create it"
    );
    let again = stream.next().await.expect_err("still failed");
    assert_eq!(code_of(&again), None);
    assert!(
        again
            .to_string()
            .contains("open a new replication connection"),
        "{again}"
    );
    assert!(stream
        .send_status(Lsn(1), Lsn(1), Lsn(1), false)
        .await
        .is_err());
}

#[tokio::test]
async fn stream_eof_and_garbage_are_errors() {
    let (client, peer) = tokio::io::duplex(1024);
    let mut stream = stream_on(client);
    drop(peer);
    let e = stream.next().await.expect_err("eof");
    assert!(
        e.to_string().contains("the server closed the connection"),
        "{e}"
    );

    let (client, mut peer) = tokio::io::duplex(1024);
    let mut stream = stream_on(client);
    // A length of 2 GB is not PostgreSQL talking.
    peer.write_all(&[b'd', 0x80, 0, 0, 0]).await.expect("write");
    let e = stream.next().await.expect_err("garbage");
    assert!(
        e.to_string()
            .contains("message 'd' of length 2147483648: this is not the PostgreSQL protocol"),
        "{e}"
    );

    let (client, mut peer) = tokio::io::duplex(1024);
    let mut stream = stream_on(client);
    peer.write_all(&frame(b'd', b"?")).await.expect("write");
    let e = stream.next().await.expect_err("unknown type");
    assert!(
        e.to_string()
            .contains("unknown replication message type '?'"),
        "{e}"
    );
}

#[tokio::test]
async fn send_status_writes_one_copy_data() {
    let (client, mut peer) = tokio::io::duplex(1024);
    let mut stream = stream_on(client);
    let before = pg_now();
    stream
        .send_status(Lsn(10), Lsn(9), Lsn(8), true)
        .await
        .expect("send");
    let after = pg_now();
    let (tag, body) = read_frontend(&mut peer).await;
    assert_eq!(tag, b'd');
    assert_eq!(body.len(), 34);
    assert_eq!(body[0], b'r');
    assert_eq!(&body[1..9], &10u64.to_be_bytes());
    assert_eq!(&body[9..17], &9u64.to_be_bytes());
    assert_eq!(&body[17..25], &8u64.to_be_bytes());
    let sent = i64::from_be_bytes(body[25..33].try_into().expect("8 bytes"));
    assert!(before <= sent && sent <= after, "{before} {sent} {after}");
    assert_eq!(body[33], 1);
}

#[tokio::test]
async fn finish_sends_copy_done_and_drains() {
    let (client, mut peer) = tokio::io::duplex(1024);
    let stream = stream_on(client);
    let server = tokio::spawn(async move {
        assert_eq!(read_frontend(&mut peer).await, (b'c', vec![]));
        // Data still in flight, then the server's side of the shutdown.
        let mut script = xlog_data(1, 2, 3, b"Ilate");
        script.extend(frame(b'c', b""));
        script.extend(command_complete("START_REPLICATION"));
        script.extend(ready());
        peer.write_all(&script).await.expect("write");
        assert_eq!(read_frontend(&mut peer).await, (b'X', vec![]));
    });
    stream.finish().await.expect("clean finish");
    server.await.expect("server script");
}

#[tokio::test]
async fn simple_query_rows_and_errors() {
    let (client, mut peer) = tokio::io::duplex(4096);
    let mut conn = connection_on(client, 150_004);
    let server = tokio::spawn(async move {
        let (tag, body) = read_frontend(&mut peer).await;
        assert_eq!(tag, b'Q');
        assert_eq!(body, b"IDENTIFY_SYSTEM\0");
        let mut script = row_description(&["systemid", "timeline", "xlogpos", "dbname"]);
        script.extend(data_row(&[
            Some("7291283742"),
            Some("1"),
            Some("0/1A2B3C4D"),
            Some("app"),
        ]));
        script.extend(command_complete("IDENTIFY_SYSTEM"));
        script.extend(ready());
        trickle(&mut peer, &script).await;

        let (tag, body) = read_frontend(&mut peer).await;
        assert_eq!(tag, b'Q');
        assert_eq!(
            body,
            b"CREATE_REPLICATION_SLOT \"s1\" LOGICAL pgoutput (SNAPSHOT 'nothing')\0"
        );
        let mut script = error_response(&[
            (b'S', "ERROR"),
            (b'C', "42710"),
            (b'M', "replication slot \"s1\" already exists"),
        ]);
        script.extend(ready());
        peer.write_all(&script).await.expect("write");

        // The connection is still usable after a server error.
        let (tag, body) = read_frontend(&mut peer).await;
        assert_eq!((tag, body), (b'Q', b"SELECT 1 AS a, NULL AS b\0".to_vec()));
        let mut script = row_description(&["a", "b"]);
        script.extend(data_row(&[Some("1"), None]));
        script.extend(command_complete("SELECT 1"));
        script.extend(ready());
        peer.write_all(&script).await.expect("write");
    });
    assert_eq!(
        conn.identify_system().await.expect("identify"),
        SystemInfo {
            systemid: "7291283742".to_string(),
            timeline: 1,
            xlogpos: Lsn(0x1A2B_3C4D),
            dbname: Some("app".to_string()),
        }
    );
    let e = conn.create_slot("s1").await.expect_err("exists");
    assert_eq!(code_of(&e), Some("42710"));
    assert!(
        e.to_string().starts_with(
            "PostgreSQL at u@test:5432/db: creating replication slot \"s1\" failed: ERROR: \
             replication slot \"s1\" already exists; a slot of that name already exists"
        ),
        "{e}"
    );
    let rows = conn
        .simple_query("SELECT 1 AS a, NULL AS b")
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("a"), Some("1"));
    assert_eq!(rows[0].get("b"), None);
    assert_eq!(rows[0].get("c"), None);
    server.await.expect("server script");
}

#[tokio::test]
async fn commands_by_server_version() {
    // PostgreSQL 14 and older: keyword syntax, and pgoutput protocol 2 from 14 on.
    for (version, create, start) in [
        (
            140_005,
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput EXPORT_SNAPSHOT",
            "START_REPLICATION SLOT \"s\" LOGICAL 1/2 (proto_version '2', publication_names \
             '\"My''pub\"', messages 'true', streaming 'true')",
        ),
        (
            130_010,
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput EXPORT_SNAPSHOT",
            "START_REPLICATION SLOT \"s\" LOGICAL 1/2 (proto_version '1', publication_names \
             '\"My''pub\"')",
        ),
        (
            150_000,
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'export')",
            "START_REPLICATION SLOT \"s\" LOGICAL 1/2 (proto_version '2', publication_names \
             '\"My''pub\"', messages 'true', streaming 'true')",
        ),
    ] {
        let (client, mut peer) = tokio::io::duplex(4096);
        let mut conn = connection_on(client, version);
        let server = tokio::spawn(async move {
            let (_, body) = read_frontend(&mut peer).await;
            assert_eq!(body, format!("{create}\0").into_bytes());
            let mut script = row_description(&[
                "slot_name",
                "consistent_point",
                "snapshot_name",
                "output_plugin",
            ]);
            script.extend(data_row(&[
                Some("s"),
                Some("0/5"),
                Some("00000003-00000002-1"),
                Some("pgoutput"),
            ]));
            script.extend(command_complete("CREATE_REPLICATION_SLOT"));
            script.extend(ready());
            peer.write_all(&script).await.expect("write");
            let (_, body) = read_frontend(&mut peer).await;
            assert_eq!(body, format!("{start}\0").into_bytes());
            peer.write_all(&frame(b'W', &[0, 0, 0]))
                .await
                .expect("write");
            peer
        });
        let created = conn
            .create_slot_exporting_snapshot("s")
            .await
            .expect("create");
        assert_eq!(
            created,
            CreatedSlot {
                slot_name: "s".to_string(),
                consistent_point: Lsn(5),
                snapshot_name: Some("00000003-00000002-1".to_string()),
                output_plugin: "pgoutput".to_string(),
            }
        );
        let stream = conn
            .start_replication("s", "My'pub", Lsn((1 << 32) | 2))
            .await
            .expect("start");
        assert_eq!(
            stream.protocol_version(),
            if version >= 140_000 { 2 } else { 1 }
        );
        server.await.expect("server script");
    }
}

#[tokio::test]
async fn slot_names_are_checked_before_sending() {
    let (client, _peer) = tokio::io::duplex(64);
    let mut conn = connection_on(client, 150_000);
    for bad in ["", "Upper", "with-dash", "a\"b", &"x".repeat(64)] {
        let e = conn.create_slot(bad).await.expect_err(bad);
        assert!(
            e.to_string()
                .contains("is not a valid replication slot name: use 1 to 63 lower-case"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn abandoned_command_is_drained_before_the_next() {
    let (client, mut peer) = tokio::io::duplex(4096);
    let mut conn = connection_on(client, 150_000);
    // The first command's answer arrives only after its caller gave up.
    let early = tokio::time::timeout(Duration::from_millis(50), conn.identify_system()).await;
    assert!(early.is_err());
    let (_, body) = read_frontend(&mut peer).await;
    assert_eq!(body, b"IDENTIFY_SYSTEM\0");
    let mut script = row_description(&["systemid", "timeline", "xlogpos", "dbname"]);
    script.extend(data_row(&[Some("1"), Some("1"), Some("0/1"), None]));
    script.extend(command_complete("IDENTIFY_SYSTEM"));
    script.extend(ready());
    // The answer to the second command.
    script.extend(row_description(&["x"]));
    script.extend(data_row(&[Some("second")]));
    script.extend(command_complete("SELECT 1"));
    script.extend(ready());
    peer.write_all(&script).await.expect("write");
    let rows = conn
        .simple_query("SELECT 'second' AS x")
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("x"), Some("second"));
}

#[tokio::test]
async fn failover_slots_are_asked_for_from_17_and_never_temporary() {
    let created = |slot: &str| {
        let mut script = row_description(&[
            "slot_name",
            "consistent_point",
            "snapshot_name",
            "output_plugin",
        ]);
        script.extend(data_row(&[
            Some(slot),
            Some("0/5"),
            Some("00000003-00000002-1"),
            Some("pgoutput"),
        ]));
        script.extend(command_complete("CREATE_REPLICATION_SLOT"));
        script.extend(ready());
        script
    };
    let (client, mut peer) = tokio::io::duplex(4096);
    let mut conn = connection_on(client, 170_000);
    conn.failover_slot = true;
    let server = tokio::spawn(async move {
        for (want, slot) in [
            (
                "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)",
                "s",
            ),
            (
                "CREATE_REPLICATION_SLOT \"t\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)",
                "t",
            ),
            // A joining table's temporary slot: PostgreSQL refuses FAILOVER on it.
            (
                "CREATE_REPLICATION_SLOT \"j\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')",
                "j",
            ),
        ] {
            let (_, body) = read_frontend(&mut peer).await;
            assert_eq!(body, format!("{want}\0").into_bytes());
            peer.write_all(&created(slot)).await.expect("write");
        }
    });
    conn.create_slot_exporting_snapshot("s").await.expect("s");
    conn.create_slot("t").await.expect("t");
    conn.create_temporary_slot_exporting_snapshot("j")
        .await
        .expect("j");
    server.await.expect("server script");

    // Before 17: refused naming the key, nothing sent.
    let (client, _peer) = tokio::io::duplex(64);
    let mut conn = connection_on(client, 160_004);
    conn.failover_slot = true;
    let e = conn.create_slot("s").await.expect_err("16");
    assert_eq!(
        e.to_string(),
        "source.failover_slot: true needs PostgreSQL 17 or later (failover slots), and the \
         server is version 160004: remove source.failover_slot or upgrade the server"
    );
}

/// A hang-up from another task ends the connection while the stream's owner waits in `next`
/// (or is busy elsewhere): the pending read wakes with the end of the connection, and the
/// server sees the client gone. A fast shutdown of the server waits for a client that stays.
#[tokio::test]
async fn a_hang_up_ends_the_stream_from_another_task() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    let mut stream = ReplicationStream {
        wire: Wire::new(Socket::Plain(client)),
        ..stream_on(tokio::io::duplex(64).0)
    };
    let hang_up = stream.hang_up_handle();
    server.write_all(&keepalive(7, 1, false)).await.unwrap();
    assert!(matches!(
        stream.next().await.unwrap(),
        Some(ReplicationMessage::Keepalive {
            wal_end: Lsn(7),
            ..
        })
    ));
    let pending = tokio::spawn(async move { stream.next().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    hang_up.hang_up();
    let read = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending read woke up")
        .unwrap();
    assert!(read.is_err_and(|e| e.is_transient()), "a transient error");
    // The server reads the end of the connection.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
        .await
        .expect("the server sees the end")
        .unwrap();
    assert_eq!(n, 0);
    // A second hang-up of a connection already over is harmless.
    hang_up.hang_up();
}
