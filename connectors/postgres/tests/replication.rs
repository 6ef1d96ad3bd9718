//! The walsender client against a real PostgreSQL 15: connection and authentication, slot
//! creation with an exported snapshot, streaming pgoutput, status updates, keepalives, and the
//! errors a lost slot gives.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::PgServer;
use inlet_postgres::{
    Lsn, PgConnector, PgError, PostgresSourceConfig, ReplicationConnection, ReplicationMessage,
    ReplicationStream, TlsMode,
};

fn connector_with(url: &str, tls: TlsMode, ca_file: Option<std::path::PathBuf>) -> PgConnector {
    PgConnector::new(&PostgresSourceConfig {
        url: url.to_string(),
        password_file: None,
        tls,
        ca_file,
        slot: None,
        publication: None,
        connect_timeout_s: 30,
        failover_slot: false,
    })
    .expect("valid source config")
}

fn connector(url: &str) -> PgConnector {
    connector_with(url, TlsMode::Prefer, None)
}

fn code_of(e: &PgError) -> Option<&str> {
    match e {
        PgError::Replication { code, .. } => code.as_deref(),
        _ => None,
    }
}

async fn query_text(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The next message within 10 s.
async fn next_message(stream: &mut ReplicationStream) -> ReplicationMessage {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("no stream error")
        .expect("the stream goes on")
}

/// The next pgoutput message, skipping keepalives.
async fn next_data(stream: &mut ReplicationStream) -> (Lsn, Bytes) {
    loop {
        if let ReplicationMessage::XLogData {
            wal_start, data, ..
        } = next_message(stream).await
        {
            return (wal_start, data);
        }
    }
}

/// A little pgoutput reading, enough to check what the server sent.
struct Reader(Bytes);

impl Reader {
    fn u8(&mut self) -> u8 {
        let v = self.0[0];
        self.0 = self.0.slice(1..);
        v
    }
    fn u16(&mut self) -> u16 {
        let v = u16::from_be_bytes([self.0[0], self.0[1]]);
        self.0 = self.0.slice(2..);
        v
    }
    fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.0[..4].try_into().expect("4 bytes"));
        self.0 = self.0.slice(4..);
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        self.0 = self.0.slice(8..);
        v
    }
    fn cstr(&mut self) -> String {
        let end = self.0.iter().position(|&b| b == 0).expect("NUL");
        let s = String::from_utf8(self.0[..end].to_vec()).expect("utf-8");
        self.0 = self.0.slice(end + 1..);
        s
    }
    fn bytes(&mut self, n: usize) -> Bytes {
        let v = self.0.slice(..n);
        self.0 = self.0.slice(n..);
        v
    }
    /// TupleData in text form; `None` for NULL.
    fn tuple(&mut self) -> Vec<Option<String>> {
        let n = self.u16();
        (0..n)
            .map(|_| match self.u8() {
                b'n' => None,
                b't' => {
                    let len = self.u32() as usize;
                    Some(String::from_utf8(self.bytes(len).to_vec()).expect("utf-8"))
                }
                other => panic!("unexpected tuple column kind {:?}", char::from(other)),
            })
            .collect()
    }
}

#[derive(Debug, PartialEq)]
enum Decoded {
    Begin {
        final_lsn: Lsn,
    },
    Relation {
        relid: u32,
        schema: String,
        name: String,
        columns: Vec<String>,
    },
    Insert {
        relid: u32,
        values: Vec<Option<String>>,
    },
    Message {
        transactional: bool,
        prefix: String,
        content: Bytes,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
}

/// Decodes the pgoutput protocol 2 messages these tests expect (outside streamed transactions).
fn decode(data: Bytes) -> Decoded {
    let mut r = Reader(data);
    let decoded = match r.u8() {
        b'B' => {
            let final_lsn = Lsn(r.u64());
            let _commit_time = r.u64();
            let _xid = r.u32();
            Decoded::Begin { final_lsn }
        }
        b'R' => {
            let relid = r.u32();
            let schema = r.cstr();
            let name = r.cstr();
            let _replica_identity = r.u8();
            let n = r.u16();
            let columns = (0..n)
                .map(|_| {
                    let _flags = r.u8();
                    let name = r.cstr();
                    let _type = r.u32();
                    let _typmod = r.u32();
                    name
                })
                .collect();
            Decoded::Relation {
                relid,
                schema,
                name,
                columns,
            }
        }
        b'I' => {
            let relid = r.u32();
            assert_eq!(r.u8(), b'N');
            Decoded::Insert {
                relid,
                values: r.tuple(),
            }
        }
        b'M' => {
            let transactional = r.u8() == 1;
            let _lsn = r.u64();
            let prefix = r.cstr();
            let len = r.u32() as usize;
            Decoded::Message {
                transactional,
                prefix,
                content: r.bytes(len),
            }
        }
        b'C' => {
            let _flags = r.u8();
            let commit_lsn = Lsn(r.u64());
            let end_lsn = Lsn(r.u64());
            let _time = r.u64();
            Decoded::Commit {
                commit_lsn,
                end_lsn,
            }
        }
        other => panic!("unexpected pgoutput message {:?}", char::from(other)),
    };
    assert!(r.0.is_empty(), "trailing bytes in {decoded:?}");
    decoded
}

fn text(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

async fn wait_for(client: &tokio_postgres::Client, sql: &str, expected: Option<&str>) {
    let mut last = None;
    for _ in 0..100 {
        last = query_text(client, sql).await;
        if last.as_deref() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sql}: expected {expected:?} within 10 s, last saw {last:?}");
}

#[tokio::test]
async fn connects_identifies_and_authenticates() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    let before = Lsn::parse(
        &query_text(&admin, "SELECT pg_current_wal_flush_lsn()::text")
            .await
            .expect("lsn"),
    )
    .expect("lsn");

    // trust, and TLS mode prefer against a server without TLS: plain TCP.
    let mut repl = ReplicationConnection::connect(&connector(&pg.url("postgres")))
        .await
        .expect("connect with trust");
    let system = repl.identify_system().await.expect("IDENTIFY_SYSTEM");
    let after = Lsn::parse(
        &query_text(&admin, "SELECT pg_current_wal_flush_lsn()::text")
            .await
            .expect("lsn"),
    )
    .expect("lsn");
    assert_eq!(
        Some(system.systemid.clone()),
        query_text(
            &admin,
            "SELECT system_identifier::text FROM pg_control_system()"
        )
        .await
    );
    assert_eq!(system.timeline, 1);
    assert_eq!(system.dbname.as_deref(), Some("postgres"));
    assert!(
        before <= system.xlogpos && system.xlogpos <= after,
        "{before} {} {after}",
        system.xlogpos
    );
    assert_eq!(
        Some(repl.server_version_num().to_string()),
        query_text(&admin, "SHOW server_version_num").await
    );

    // The walsender runs with inlet's session settings and name, without TLS.
    let pid = repl.backend_pid().expect("backend pid");
    let row = admin
        .query_one(
            "SELECT a.application_name, a.backend_type, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE pid = $1",
            &[&pid],
        )
        .await
        .expect("pg_stat_activity");
    assert_eq!(row.get::<_, String>(0), "inlet");
    assert_eq!(row.get::<_, String>(1), "walsender");
    assert!(!row.get::<_, bool>(2));
    for (setting, expected) in [
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO, YMD"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "3"),
        ("client_encoding", "UTF8"),
    ] {
        let rows = repl
            .simple_query(&format!("SHOW {setting}"))
            .await
            .expect("SHOW");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get(setting), Some(expected), "{setting}");
    }
    repl.close().await;

    let password = "Sekr3t-pw'x";
    let with_password =
        |pw: &str| format!("postgres://postgres:{pw}@127.0.0.1:{}/postgres", pg.port);
    let server_name = format!("postgres@127.0.0.1:{}/postgres", pg.port);
    for method in ["scram-sha-256", "md5", "password"] {
        let encryption = if method == "md5" {
            "md5"
        } else {
            "scram-sha-256"
        };
        admin
            .batch_execute(&format!(
                "SET password_encryption = '{encryption}'; \
                 ALTER ROLE postgres PASSWORD 'Sekr3t-pw''x'"
            ))
            .await
            .expect("set the password");
        pg.set_hba(&format!("host all all 127.0.0.1/32 {method}"))
            .await;

        let mut repl = ReplicationConnection::connect(&connector(&with_password(password)))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(
            repl.identify_system()
                .await
                .expect("IDENTIFY_SYSTEM")
                .systemid,
            system.systemid
        );
        repl.close().await;

        // The password from a file, as the config allows.
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, format!("{password}\n")).expect("write password file");
        let from_file = PgConnector::new(&PostgresSourceConfig {
            url: pg.url("postgres"),
            password_file: Some(file),
            tls: TlsMode::Prefer,
            ca_file: None,
            slot: None,
            publication: None,
            connect_timeout_s: 30,
            failover_slot: false,
        })
        .expect("config");
        ReplicationConnection::connect(&from_file)
            .await
            .unwrap_or_else(|e| panic!("{method} with password_file: {e}"))
            .close()
            .await;

        let wrong = "Wrong-pw-4711";
        let e = ReplicationConnection::connect(&connector(&with_password(wrong)))
            .await
            .expect_err("wrong password");
        let message = e.to_string();
        assert!(matches!(e, PgError::Connect { .. }), "{method}: {e:?}");
        assert_eq!(
            message,
            format!(
                "cannot connect to PostgreSQL at {server_name}: FATAL: password authentication \
                 failed for user \"postgres\"; check the password (source.password_file or the \
                 URL)"
            ),
            "{method}"
        );
        assert!(!message.contains(wrong) && !message.contains(password));

        let e = ReplicationConnection::connect(&connector(&pg.url("postgres")))
            .await
            .expect_err("no password");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot connect to PostgreSQL at {server_name}: the server asks for a password \
                 ({method}) and none is configured: put it in source.password_file or in the URL"
            )
        );
    }
}

#[tokio::test]
async fn connection_errors_name_the_server() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    let server_name = format!("postgres@127.0.0.1:{}/nope", pg.port);
    let e = ReplicationConnection::connect(&connector(&pg.url("nope")))
        .await
        .expect_err("no such database");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to PostgreSQL at {server_name}: FATAL: database \"nope\" does not \
             exist"
        )
    );

    // A user without the REPLICATION attribute.
    admin
        .batch_execute("CREATE ROLE plain LOGIN")
        .await
        .expect("create role");
    let e = ReplicationConnection::connect(&connector(&format!(
        "postgres://plain@127.0.0.1:{}/postgres",
        pg.port
    )))
    .await
    .expect_err("no replication privilege");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to PostgreSQL at plain@127.0.0.1:{}/postgres: FATAL: must be superuser \
             or replication role to start walsender; the user needs the REPLICATION attribute: \
             ALTER ROLE <user> REPLICATION (or connect as a superuser)",
            pg.port
        )
    );

    // Nothing listening.
    let port = pg.port;
    drop(admin);
    drop(pg);
    let e = ReplicationConnection::connect(&connector(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres"
    )))
    .await
    .expect_err("server stopped");
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot connect to PostgreSQL at postgres@127.0.0.1:{port}/postgres: TCP connection \
             to 127.0.0.1:{port}: Connection refused"
        )),
        "{message}"
    );
    assert!(
        message.ends_with(
            "check that the server is running and listens there (listen_addresses, port, firewall)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn tls_modes() {
    let pg = PgServer::start_tls_only();
    let admin = pg.client("postgres").await;
    let url = pg.url("postgres");
    for (mode, ca) in [
        (TlsMode::Prefer, None),
        (TlsMode::Require, None),
        (TlsMode::VerifyFull, Some(pg.ca_file())),
    ] {
        let mut repl = ReplicationConnection::connect(&connector_with(&url, mode, ca))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        repl.identify_system().await.expect("IDENTIFY_SYSTEM");
        let pid = repl.backend_pid().expect("pid");
        let ssl: bool = admin
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
            .await
            .expect("pg_stat_ssl")
            .get(0);
        assert!(ssl, "{mode:?} must use TLS");
        repl.close().await;
    }

    // verify-full refuses a certificate that does not chain to the configured CA.
    let e = ReplicationConnection::connect(&connector_with(&url, TlsMode::VerifyFull, None))
        .await
        .expect_err("unknown CA");
    let message = e.to_string();
    assert!(
        message.contains(
            "TLS handshake: invalid peer certificate: UnknownIssuer; with tls = \"verify-full\" \
             the server's certificate must name this host"
        ),
        "{message}"
    );

    // disable: the server's pg_hba.conf rejects plain connections.
    let e = ReplicationConnection::connect(&connector_with(&url, TlsMode::Disable, None))
        .await
        .expect_err("plain refused");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to PostgreSQL at postgres@127.0.0.1:{}/postgres: FATAL: pg_hba.conf \
             rejects connection for host \"127.0.0.1\", user \"postgres\", database \"postgres\", \
             no encryption; pg_hba.conf has no line letting this user connect to this database \
             from inlet's address; add one (logical replication connections match on the \
             database name, not on the `replication` keyword)",
            pg.port
        )
    );
}

#[tokio::test]
async fn require_fails_against_a_server_without_tls() {
    let pg = PgServer::start();
    let e = ReplicationConnection::connect(&connector_with(
        &pg.url("postgres"),
        TlsMode::Require,
        None,
    ))
    .await
    .expect_err("no TLS on the server");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to PostgreSQL at postgres@127.0.0.1:{}/postgres: the server does not \
             accept TLS, and tls = \"require\" requires it: turn on ssl in the server's \
             postgresql.conf, or set tls = \"prefer\" or \"disable\"",
            pg.port
        )
    );
}

const CONFIRMED: &str =
    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'inlet_slot'";

#[tokio::test]
async fn exported_snapshot_and_stream_meet_exactly() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t VALUES (1, 'a'), (2, 'b'); \
             CREATE PUBLICATION p FOR TABLE t",
        )
        .await
        .expect("setup");
    let relid: u32 = admin
        .query_one("SELECT 't'::regclass::oid", &[])
        .await
        .expect("oid")
        .get(0);

    let mut repl = ReplicationConnection::connect(&connector(&pg.url("postgres")))
        .await
        .expect("connect");
    let created = repl
        .create_slot_exporting_snapshot("inlet_slot")
        .await
        .expect("create slot");
    assert_eq!(created.slot_name, "inlet_slot");
    assert_eq!(created.output_plugin, "pgoutput");
    let snapshot = created.snapshot_name.clone().expect("a snapshot name");
    assert_eq!(
        query_text(&admin, CONFIRMED).await,
        Some(created.consistent_point.to_string())
    );

    // Committed after the slot: streamed, and not in the snapshot.
    admin
        .batch_execute("INSERT INTO t VALUES (3, 'c'), (4, 'd')")
        .await
        .expect("insert after the slot");

    let reader = pg.client("postgres").await;
    reader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .expect("import the exported snapshot");
    let ids: Vec<i32> = reader
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 2]);
    reader.batch_execute("COMMIT").await.expect("commit");

    let mut stream = repl
        .start_replication("inlet_slot", "p", created.consistent_point)
        .await
        .expect("START_REPLICATION");
    assert_eq!(stream.protocol_version(), 2);

    // The next command ended the exported snapshot.
    let late = pg.client("postgres").await;
    let e = late
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .expect_err("the snapshot is gone");
    assert_eq!(
        e.as_db_error().map(|d| d.message().to_string()),
        Some(format!("invalid snapshot identifier: \"{snapshot}\""))
    );

    let (begin_at, begin) = next_data(&mut stream).await;
    let Decoded::Begin { final_lsn } = decode(begin) else {
        panic!("expected Begin first");
    };
    assert!(
        created.consistent_point <= begin_at,
        "{} {begin_at}",
        created.consistent_point
    );
    assert_eq!(
        decode(next_data(&mut stream).await.1),
        Decoded::Relation {
            relid,
            schema: "public".to_string(),
            name: "t".to_string(),
            columns: vec!["id".to_string(), "v".to_string()],
        }
    );
    assert_eq!(
        decode(next_data(&mut stream).await.1),
        Decoded::Insert {
            relid,
            values: text(&["3", "c"])
        }
    );
    assert_eq!(
        decode(next_data(&mut stream).await.1),
        Decoded::Insert {
            relid,
            values: text(&["4", "d"])
        }
    );
    let Decoded::Commit {
        commit_lsn,
        end_lsn,
    } = decode(next_data(&mut stream).await.1)
    else {
        panic!("expected Commit");
    };
    assert_eq!(commit_lsn, final_lsn);
    assert!(commit_lsn < end_lsn);

    // The sink committed that transaction: confirm it.
    stream
        .send_status(end_lsn, end_lsn, end_lsn, false)
        .await
        .expect("status");
    wait_for(&admin, CONFIRMED, Some(&end_lsn.to_string())).await;

    // While streaming: the relation is known now, and logical messages come through.
    admin
        .batch_execute("INSERT INTO t VALUES (5, NULL)")
        .await
        .expect("insert while streaming");
    admin
        .batch_execute("SELECT pg_logical_emit_message(true, 'inlet', 'hello')")
        .await
        .expect("emit a message");
    assert!(matches!(
        decode(next_data(&mut stream).await.1),
        Decoded::Begin { .. }
    ));
    assert_eq!(
        decode(next_data(&mut stream).await.1),
        Decoded::Insert {
            relid,
            values: vec![Some("5".to_string()), None]
        }
    );
    assert!(matches!(
        decode(next_data(&mut stream).await.1),
        Decoded::Commit { .. }
    ));
    assert!(matches!(
        decode(next_data(&mut stream).await.1),
        Decoded::Begin { .. }
    ));
    assert_eq!(
        decode(next_data(&mut stream).await.1),
        Decoded::Message {
            transactional: true,
            prefix: "inlet".to_string(),
            content: Bytes::from_static(b"hello"),
        }
    );
    assert!(matches!(
        decode(next_data(&mut stream).await.1),
        Decoded::Commit { .. }
    ));

    // A clean end releases the slot.
    tokio::time::timeout(Duration::from_secs(10), stream.finish())
        .await
        .expect("finish within 10 s")
        .expect("clean finish");
    wait_for(
        &admin,
        "SELECT active::text FROM pg_replication_slots WHERE slot_name = 'inlet_slot'",
        Some("false"),
    )
    .await;
    // The confirmed position stays where the status put it.
    assert_eq!(
        query_text(&admin, CONFIRMED).await,
        Some(end_lsn.to_string())
    );
}

#[tokio::test]
async fn keepalives_when_idle_and_replies_keep_the_stream() {
    let pg = PgServer::start_with_options("-c wal_sender_timeout=2s");
    let admin = pg.client("postgres").await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await
        .expect("setup");
    let mut repl = ReplicationConnection::connect(&connector(&pg.url("postgres")))
        .await
        .expect("connect");
    let created = repl.create_slot("idle").await.expect("create slot");
    assert_eq!(created.snapshot_name, None);
    let pid = repl.backend_pid().expect("pid");
    let mut stream = repl
        .start_replication("idle", "p", created.consistent_point)
        .await
        .expect("START_REPLICATION");

    // Idle and silent: within wal_sender_timeout / 2 the server asks for a reply.
    let wal_end = loop {
        match next_message(&mut stream).await {
            ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: true,
                ..
            } => break wal_end,
            ReplicationMessage::Keepalive { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(wal_end >= created.consistent_point);
    // A reply that asks for one gets a keepalive back at once.
    stream
        .send_status(wal_end, wal_end, wal_end, true)
        .await
        .expect("status");
    let answer = tokio::time::timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("an answer within 1 s")
        .expect("no error")
        .expect("stream goes on");
    assert!(
        matches!(answer, ReplicationMessage::Keepalive { wal_end: end, .. } if end == wal_end),
        "{answer:?}"
    );
    wait_for(
        &admin,
        &format!(
            "SELECT flush_lsn::text || ' ' || replay_lsn::text FROM pg_stat_replication \
             WHERE pid = {pid}"
        ),
        Some(&format!("{wal_end} {wal_end}")),
    )
    .await;

    // Answering every request keeps the stream up for three timeouts.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, stream.next()).await {
            Err(_) => break,
            Ok(message) => {
                if let Some(ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested: true,
                    ..
                }) = message.expect("the stream stays up while we answer")
                {
                    stream
                        .send_status(wal_end, wal_end, wal_end, false)
                        .await
                        .expect("status");
                }
            }
        }
    }
    assert_eq!(
        query_text(
            &admin,
            &format!("SELECT state FROM pg_stat_replication WHERE pid = {pid}")
        )
        .await,
        Some("streaming".to_string())
    );

    // Silence: the server gives up on us after wal_sender_timeout.
    let e = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = stream.next().await {
                return e;
            }
        }
    })
    .await
    .expect("the server drops a silent client");
    assert_eq!(code_of(&e), None);
    assert_eq!(
        e.to_string(),
        format!(
            "PostgreSQL at postgres@127.0.0.1:{}/postgres: reading the replication stream \
             failed: the server closed the connection (terminated, restarted, or \
             wal_sender_timeout passed without a status update); reconnect",
            pg.port
        )
    );
}

#[tokio::test]
async fn slot_lifecycle_errors_carry_sqlstate() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t")
        .await
        .expect("setup");
    let conn = connector(&pg.url("postgres"));
    let slots = "SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') \
                 FROM pg_replication_slots";

    // create_slot and drop_slot.
    let mut repl = ReplicationConnection::connect(&conn)
        .await
        .expect("connect");
    repl.create_slot("short_lived").await.expect("create");
    assert_eq!(
        query_text(&admin, slots).await.as_deref(),
        Some("short_lived")
    );
    let e = repl.create_slot("short_lived").await.expect_err("exists");
    assert_eq!(code_of(&e), Some("42710"));
    repl.drop_slot("short_lived").await.expect("drop");
    assert_eq!(query_text(&admin, slots).await.as_deref(), Some(""));
    let e = repl.drop_slot("short_lived").await.expect_err("gone");
    assert_eq!(code_of(&e), Some("42704"));

    // A slot in use cannot be streamed twice.
    let created = repl.create_slot("doomed").await.expect("create");
    let mut stream = repl
        .start_replication("doomed", "p", created.consistent_point)
        .await
        .expect("start");
    let e = ReplicationConnection::connect(&conn)
        .await
        .expect("connect")
        .start_replication("doomed", "p", created.consistent_point)
        .await
        .expect_err("in use");
    assert_eq!(code_of(&e), Some("55006"));

    // Terminating the walsender ends the stream with the server's FATAL.
    let pid = query_text(
        &admin,
        "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = 'doomed'",
    )
    .await
    .expect("active pid");
    admin
        .execute(&format!("SELECT pg_terminate_backend({pid})"), &[])
        .await
        .expect("terminate");
    let e = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = stream.next().await {
                return e;
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(code_of(&e), Some("57P01"), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "PostgreSQL at postgres@127.0.0.1:{}/postgres: streaming from replication slot \
             \"doomed\" failed: FATAL: terminating connection due to administrator command; the \
             server ended this session (shutdown, or pg_terminate_backend); reconnect, and if it \
             keeps happening, find out who terminates it",
            pg.port
        )
    );

    // Dropped from another connection: starting on it is a 42704 the caller can recognise.
    wait_for(
        &admin,
        "SELECT active::text FROM pg_replication_slots WHERE slot_name = 'doomed'",
        Some("false"),
    )
    .await;
    admin
        .execute("SELECT pg_drop_replication_slot('doomed')", &[])
        .await
        .expect("drop");
    let e = ReplicationConnection::connect(&conn)
        .await
        .expect("connect")
        .start_replication("doomed", "p", created.consistent_point)
        .await
        .expect_err("no such slot");
    assert_eq!(code_of(&e), Some("42704"));
    assert_eq!(
        e.to_string(),
        format!(
            "PostgreSQL at postgres@127.0.0.1:{}/postgres: starting replication from slot \
             \"doomed\" failed: ERROR: replication slot \"doomed\" does not exist; if the \
             replication slot was dropped, the changes since inlet's last commit are gone and \
             the task needs a new full load; if a publication is missing, create it",
            pg.port
        )
    );
}
