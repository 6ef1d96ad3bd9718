//! End-to-end full loads against a real PostgreSQL 15: every mapped type compared value by value,
//! a multi-million-row parallel load checked by independent readers, value policies, re-runs,
//! and the errors and exit codes a user sees.

mod common;

use std::collections::HashMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use common::{inlet, load_files, read_table, task_file, PgServer};

fn task(url: &str, out: &Path, tables: &str, extra: &str) -> String {
    format!(
        r#"
[task]
name = "test"
mode = "full-load"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
# These tests check the exact Arrow types (uuid as FixedSizeBinary(16), time as Time64).
types = "exact"
[tables]
include = [{tables}]
{extra}
"#,
        out.display()
    )
}

// ---------------------------------------------------------------- formatting Arrow as PostgreSQL

/// Proleptic Gregorian (year, month, day) from days since 1970-01-01 (H. Hinnant's algorithm);
/// chrono stops at year 262143, PostgreSQL dates go to 5874897.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// PostgreSQL's ISO date text: astronomical year 0 is 1 BC.
fn pg_date(days: i64) -> (String, bool) {
    let (y, m, d) = civil(days);
    if y <= 0 {
        (format!("{:04}-{m:02}-{d:02}", 1 - y), true)
    } else {
        (format!("{y:04}-{m:02}-{d:02}"), false)
    }
}

fn pg_time(micros: i64) -> String {
    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        s.push_str(format!(".{frac:06}").trim_end_matches('0'));
    }
    s
}

fn pg_timestamp(micros: i64, tz: bool) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let (date, bc) = pg_date(days);
    let mut s = format!("{date} {}", pg_time(micros.rem_euclid(86_400_000_000)));
    if tz {
        s.push_str("+00");
    }
    if bc {
        s.push_str(" BC");
    }
    s
}

fn pg_decimal(v: i128, scale: i8) -> String {
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let s = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{int}.{frac}")
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// One Arrow value rendered as PostgreSQL's output function renders it (UTC, ISO dates); floats are
/// compared separately, numerically.
fn pg_text(a: &ArrayRef, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Boolean => if a.as_boolean().value(i) { "t" } else { "f" }.to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => format!("{:?}", a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => format!("{:?}", a.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal128(_, s) => pg_decimal(a.as_primitive::<Decimal128Type>().value(i), *s),
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::Binary => {
            let b = a.as_binary::<i32>().value(i);
            format!(
                "\\x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )
        }
        DataType::FixedSizeBinary(16) => {
            let h: String = a
                .as_fixed_size_binary()
                .value(i)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        DataType::Date32 => {
            let (d, bc) = pg_date(a.as_primitive::<Date32Type>().value(i) as i64);
            if bc {
                format!("{d} BC")
            } else {
                d
            }
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            pg_time(a.as_primitive::<Time64MicrosecondType>().value(i))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => pg_timestamp(
            a.as_primitive::<TimestampMicrosecondType>().value(i),
            tz.is_some(),
        ),
        other => panic!("no PostgreSQL text rendering for {other}"),
    })
}

/// A comparable value: scalars as text, arrays as their elements' text, floats as bits.
#[derive(Debug, PartialEq)]
enum Val {
    Null,
    Text(String),
    Float(u64),
    List(Vec<Option<String>>),
}

fn float_bits(s: &str, f32_col: bool) -> u64 {
    let v: f64 = if f32_col {
        s.parse::<f32>().unwrap_or_else(|e| panic!("{s}: {e}")) as f64
    } else {
        s.parse::<f64>().unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    if v.is_nan() {
        u64::MAX
    } else {
        v.to_bits()
    }
}

fn arrow_val(a: &ArrayRef, i: usize) -> Val {
    if a.is_null(i) {
        return Val::Null;
    }
    match a.data_type() {
        DataType::List(_) => {
            let inner = a.as_list::<i32>().value(i);
            Val::List((0..inner.len()).map(|j| pg_text(&inner, j)).collect())
        }
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(i) as f64;
            Val::Float(if v.is_nan() { u64::MAX } else { v.to_bits() })
        }
        DataType::Float64 => {
            let v = a.as_primitive::<Float64Type>().value(i);
            Val::Float(if v.is_nan() { u64::MAX } else { v.to_bits() })
        }
        _ => pg_text(a, i).map_or(Val::Null, Val::Text),
    }
}

/// Rows of the written table keyed by the `id` column.
fn rows_by_id(batches: &[RecordBatch]) -> HashMap<i64, (usize, usize)> {
    let mut out = HashMap::new();
    for (bi, b) in batches.iter().enumerate() {
        let ids = b.column_by_name("id").expect("id column");
        for r in 0..b.num_rows() {
            let id = match ids.data_type() {
                DataType::Int32 => ids.as_primitive::<Int32Type>().value(r) as i64,
                _ => ids.as_primitive::<Int64Type>().value(r),
            };
            assert!(out.insert(id, (bi, r)).is_none(), "id {id} written twice");
        }
    }
    out
}

// ---------------------------------------------------------------------------------- type zoo

const ZOO: &str = r#"
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN price AS numeric(8,3);
CREATE TABLE zoo (
  id int PRIMARY KEY,
  b boolean, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
  n38 numeric(38,10), n2 numeric(10,2), n0 numeric(18,0), nu numeric, nbig numeric(50,5), nneg numeric(5,-2),
  t text, vc varchar(10), ch char(5), nm name, ci citext, ch1 "char",
  by bytea, u uuid, d date, tm time, tm3 time(3), tt timetz, ts timestamp, tz timestamptz, iv interval,
  js json, jb jsonb, en mood, dom posint, dp price,
  ia int4[], ta text[], na numeric(10,2)[], da date[], ua uuid[], ina inet[], ba boolean[], ja jsonb[],
  ip inet, cd cidr, mac macaddr, x xml, m money, vb varbit, bt bit(3), tsv tsvector, pt point,
  rng int4range, o oid, "Mixed Case" text
);
INSERT INTO zoo VALUES
 (1, true, 12, 1234, 1234567890123, 1.5, 3.141592653589793,
  '1234.5678', '12345.60', '42', '3.14159265358979323846264338327950288419716939937510', '12345.12345', '12300',
  'hello', 'varchar', 'ab', 'a name', 'MiXeD', 'x',
  '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:45:07.123456', '13:45:07.123', '13:45:07+02:30',
  '2024-02-29 13:45:07.5', '2024-02-29 13:45:07.000001+05', '1 year 2 months 3 days 04:05:06.5',
  '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2.50, "ü"]}', 'happy 😀', 7, '12.345',
  '{1,NULL,3}', '{"a,b","NULL",NULL,"","😀"}', '{1.50,NULL,-2.25}', '{2024-01-01,NULL}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{10.0.0.1,::1}', '{t,f,NULL}', ARRAY['{"k": 1}'::jsonb, 'null'::jsonb],
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '<a>ü</a>', '12.34', '10101', '101', 'a fat cat sat', '(1.5,-2)',
  '[1,10)', 4294967295, 'mixed'),
 (3, false, -32768, -2147483648, -9223372036854775808, '-Infinity', 'NaN',
  '-9999999999999999999999999999.9999999999', '-99999999.99', '-999999999999999999', 'NaN',
  '-123456789012345678901234567890123456789012345.12345', '-9999900',
  '', '', '', '', '', '',
  '\x', '00000000-0000-0000-0000-000000000000', '4713-01-01 BC', '00:00:00', '00:00:00', '00:00:00+15:59',
  '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '-178000000 years',
  '[]', '{}', 'sad', 1, '-99999.999',
  '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
  '::/0', '::/0', '00:00:00:00:00:00', '', '-92233720368547758.08', '', '000', '', '(0,0)', 'empty', 0, ''),
 (4, true, 32767, 2147483647, 9223372036854775807, 'Infinity', '-0',
  '9999999999999999999999999999.9999999999', '99999999.99', '999999999999999999', '-0.000000000000000000001',
  '999999999999999999999999999999999999999999999.99999', '9999900',
  repeat('long text ', 100000), 'ünïcödé', 'ä', repeat('n', 63), repeat('C', 5000), E'\\001',
  decode(repeat('deadbeef', 250000), 'hex'), 'ffffffff-ffff-ffff-ffff-ffffffffffff', '5874897-12-31', '23:59:59.999999', '23:59:59.999',
  '24:00:00-15:59', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', '178000000 years',
  '"just a string"', '[1e100, -1e-100, true, null]', 'ok', 2147483647, '99999.999',
  '{-2147483648,2147483647}', ARRAY[repeat('x', 10000)], '{99999999.99}', '{5874897-12-31,4713-01-01 BC}',
  '{00000000-0000-0000-0000-000000000000,NULL}', '{NULL}', '{NULL}', '{NULL}',
  'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', '255.255.255.255/32', 'ff:ff:ff:ff:ff:ff',
  '<r><![CDATA[x]]></r>', '92233720368547758.07', repeat('1', 1000)::varbit, '111', 'zz:1A yy:2B', '(1e300,-1e-300)',
  '[-2147483648,2147483647)', 1, E'tab\there \"quoted\" back\\slash\nnewline é 😀'),
 (5, true, 0, 0, 0, '0', '0', '0', '0', '0', '0', '0', '0',
  E'héllo wörld 😀 \t "q" \\ \n end', 'ab''c', ' ', 'Zürich', 'ÜBER', 'Z',
  '\x00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1970-01-01', '12:00:00', '12:00:00', '12:00:00-00',
  '1970-01-01 00:00:00', '1969-12-31 23:59:59.999999+00', '0 seconds',
  'null', '"ü\u00e9"', 'ok', 5, '0.001',
  '{0}', '{""}', '{0.00}', '{1970-01-01}', '{}', '{192.168.1.1/32}', '{t}', '{}',
  '::1', '::1/128', '01:02:03:04:05:06', '<e/>', '0', '0', '010', 'x', '(-0,0)', '(,)', 7, NULL);
INSERT INTO zoo (id) VALUES (2);
ALTER TABLE zoo ADD COLUMN bxa box[];
UPDATE zoo SET bxa = '{(1,1),(0,0);(2,2),(1,1)}' WHERE id = 1;
UPDATE zoo SET bxa = '{}' WHERE id = 3;
"#;

/// Column → expected (Arrow type, source type in field metadata).
fn zoo_types() -> Vec<(&'static str, DataType, &'static str)> {
    use DataType::*;
    // A list's element under the Parquet spec's name (the sink writes `<col>.list.element`).
    let list = |t: DataType| {
        List(std::sync::Arc::new(arrow_schema::Field::new(
            "element", t, true,
        )))
    };
    let ext_list = |t: DataType, ext: &str| {
        let md = HashMap::from([("ARROW:extension:name".to_string(), ext.to_string())]);
        List(std::sync::Arc::new(
            arrow_schema::Field::new("element", t, true).with_metadata(md),
        ))
    };
    let ts = |tz: Option<&str>| Timestamp(TimeUnit::Microsecond, tz.map(Into::into));
    vec![
        ("id", Int32, "integer"),
        ("b", Boolean, "boolean"),
        ("i2", Int16, "smallint"),
        ("i4", Int32, "integer"),
        ("i8", Int64, "bigint"),
        ("f4", Float32, "real"),
        ("f8", Float64, "double precision"),
        ("n38", Decimal128(38, 10), "numeric(38,10)"),
        ("n2", Decimal128(10, 2), "numeric(10,2)"),
        ("n0", Decimal128(18, 0), "numeric(18,0)"),
        ("nu", Utf8, "numeric"),
        ("nbig", Utf8, "numeric(50,5)"),
        ("nneg", Utf8, "numeric(5,-2)"),
        ("t", Utf8, "text"),
        ("vc", Utf8, "character varying(10)"),
        ("ch", Utf8, "character(5)"),
        ("nm", Utf8, "name"),
        ("ci", Utf8, "citext"),
        ("ch1", Utf8, "\"char\""),
        ("by", Binary, "bytea"),
        ("u", FixedSizeBinary(16), "uuid"),
        ("d", Date32, "date"),
        (
            "tm",
            Time64(TimeUnit::Microsecond),
            "time without time zone",
        ),
        (
            "tm3",
            Time64(TimeUnit::Microsecond),
            "time(3) without time zone",
        ),
        ("tt", Utf8, "time with time zone"),
        ("ts", ts(None), "timestamp without time zone"),
        ("tz", ts(Some("UTC")), "timestamp with time zone"),
        ("iv", Utf8, "interval"),
        ("js", Utf8, "json"),
        ("jb", Utf8, "jsonb"),
        ("en", Utf8, "mood"),
        ("dom", Int32, "posint"),
        ("dp", Decimal128(8, 3), "price"),
        ("ia", list(Int32), "integer[]"),
        ("ta", list(Utf8), "text[]"),
        ("na", list(Decimal128(10, 2)), "numeric(10,2)[]"),
        ("da", list(Date32), "date[]"),
        ("ua", ext_list(FixedSizeBinary(16), "arrow.uuid"), "uuid[]"),
        ("ina", list(Utf8), "inet[]"),
        ("ba", list(Boolean), "boolean[]"),
        ("ja", ext_list(Utf8, "arrow.json"), "jsonb[]"),
        ("ip", Utf8, "inet"),
        ("cd", Utf8, "cidr"),
        ("mac", Utf8, "macaddr"),
        ("x", Utf8, "xml"),
        ("m", Utf8, "money"),
        ("vb", Utf8, "bit varying"),
        ("bt", Utf8, "bit(3)"),
        ("tsv", Utf8, "tsvector"),
        ("pt", Utf8, "point"),
        ("rng", Utf8, "int4range"),
        ("o", Utf8, "oid"),
        ("Mixed Case", Utf8, "text"),
        ("bxa", Utf8, "box[]"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn type_zoo_round_trips_value_by_value() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    // A negative numeric scale is new in PostgreSQL 15: before, nneg is a plain numeric (the
    // same values, the same text).
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap()
        .get(0);
    let before_15 = version.parse::<u32>().unwrap() < 150000;
    let zoo = if before_15 {
        ZOO.replace("nneg numeric(5,-2)", "nneg numeric")
    } else {
        ZOO.to_string()
    };
    client.batch_execute(&zoo).await.expect("create zoo");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "zoo",
        &task(&pg.url("postgres"), &out, "\"public.zoo\"", ""),
    );
    let (code, stdout, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "inlet failed:\n{stdout}\n{stderr}");

    let batches = read_table(&out.join("public/zoo"));
    let schema = batches[0].schema();
    let mut expected = zoo_types();
    if before_15 {
        for t in expected.iter_mut().filter(|t| t.0 == "nneg") {
            t.2 = "numeric";
        }
    }
    assert_eq!(schema.fields().len(), expected.len());
    for (field, (name, ty, source)) in schema.fields().iter().zip(&expected) {
        assert_eq!(field.name(), name);
        assert_eq!(field.data_type(), ty, "Arrow type of {name}");
        assert_eq!(
            field
                .metadata()
                .get("inlet.source_type")
                .map(String::as_str),
            Some(*source),
            "{name}"
        );
    }
    assert!(!schema.field_with_name("id").unwrap().is_nullable());
    assert_eq!(
        schema
            .field_with_name("u")
            .unwrap()
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.uuid")
    );
    for json in ["js", "jb"] {
        assert_eq!(
            schema
                .field_with_name(json)
                .unwrap()
                .metadata()
                .get("ARROW:extension:name")
                .map(String::as_str),
            Some("arrow.json"),
            "{json}"
        );
    }

    let by_id = rows_by_id(&batches);
    let ids: Vec<i32> = client
        .query("SELECT id FROM zoo ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(by_id.len(), ids.len());
    let mut compared = 0;
    for (name, ty, _) in &expected {
        let col = format!("\"{}\"", name.replace('"', "\"\""));
        let is_list = matches!(ty, DataType::List(_));
        let sql = if is_list {
            format!("SELECT id, CASE WHEN {col} IS NULL THEN NULL ELSE ARRAY(SELECT CASE WHEN x IS NULL THEN NULL ELSE format('%s', x) END FROM unnest({col}) WITH ORDINALITY AS u(x, n) ORDER BY n) END FROM zoo ORDER BY 1")
        } else {
            // format() renders with the type's output function, as a client sees the value: unlike
            // ::text it keeps char(n) padding.
            format!("SELECT id, CASE WHEN {col} IS NULL THEN NULL ELSE format('%s', {col}) END FROM zoo ORDER BY 1")
        };
        for row in client.query(&sql, &[]).await.unwrap() {
            let id: i32 = row.get(0);
            let want = if is_list {
                row.get::<_, Option<Vec<Option<String>>>>(1)
                    .map_or(Val::Null, Val::List)
            } else {
                match (row.get::<_, Option<String>>(1), ty) {
                    (None, _) => Val::Null,
                    (Some(s), DataType::Float32) => Val::Float(float_bits(&s, true)),
                    (Some(s), DataType::Float64) => Val::Float(float_bits(&s, false)),
                    (Some(s), _) => Val::Text(s),
                }
            };
            let (bi, r) = by_id[&(id as i64)];
            let got = arrow_val(batches[bi].column_by_name(name).unwrap(), r);
            assert_eq!(got, want, "zoo id {id} column {name}");
            compared += 1;
        }
    }
    assert_eq!(compared, expected.len() * ids.len());
}

// ------------------------------------------------------------------- millions of rows, parallel

#[tokio::test(flavor = "multi_thread")]
async fn parallel_load_of_millions_matches_source_checksum() {
    const ROWS: i64 = 3_000_000;
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, k int, amount numeric(12,2), label text, at timestamptz);
             INSERT INTO big SELECT g, (g % 1000)::int, ((g % 100000) - 50000) / 100.0,
                    CASE WHEN g % 97 = 0 THEN NULL ELSE 'label ' || (g % 5000) || ' ü' END,
                    timestamptz '2020-01-01 00:00:00+00' + g * interval '1.5 second'
             FROM generate_series(1, {ROWS}) g;
             ANALYZE big;"
        ))
        .await
        .expect("load big");
    let row = client
        .query_one(
            "SELECT count(*), sum(('x' || substr(md5(concat_ws('|', id, k, amount, label, \
                    (extract(epoch from at) * 1000000)::bigint)), 1, 15))::bit(60)::bigint)::text, sum(id)::text \
             FROM big",
            &[],
        )
        .await
        .unwrap();
    let (pg_rows, pg_checksum, pg_id_sum): (i64, String, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(pg_rows, ROWS);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 8 MB chunks over ~250 MB of heap and 3 workers: dozens of chunks read in parallel; 16 MB
    // files so several roll.
    let cfg = task_file(
        dir.path(),
        "big",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.big\"",
            "[full_load]\nworkers = 3\nchunk_mb = 8\nbatch_rows = 10000",
        )
        .replace(
            "[target]\nkind = \"parquet\"",
            "[target]\nkind = \"parquet\"\nfile_size_mb = 16",
        ),
    );
    let (code, stdout, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "inlet failed:\n{stdout}\n{stderr}");
    let table_dir = out.join("public/big");
    let files = load_files(&table_dir);
    assert!(
        files.len() > 1,
        "expected several LOAD files, got {files:?}"
    );
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            f.file_name().unwrap().to_str().unwrap(),
            format!("LOAD{:08X}.parquet", i + 1)
        );
    }

    // Our own read: every id exactly once.
    let batches = read_table(&table_dir);
    let by_id = rows_by_id(&batches);
    assert_eq!(by_id.len() as i64, ROWS);
    assert_eq!(by_id.keys().sum::<i64>().to_string(), pg_id_sum);

    // Independent readers: DuckDB (checksum over every column) and pyarrow.
    let py = std::process::Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/readers/parquet_summary.py"
        ))
        .arg(&table_dir)
        .output()
        .expect("run parquet_summary.py");
    assert!(
        py.status.success(),
        "reader check failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let summary = String::from_utf8_lossy(&py.stdout);
    let expected = format!(
        "{{\"duckdb\": {{\"rows\": {ROWS}, \"checksum\": \"{pg_checksum}\"}}, \"pyarrow\": {{\"rows\": {ROWS}, \"id_sum\": {pg_id_sum}}}}}"
    );
    assert_eq!(summary.trim(), expected);
}

// ------------------------------------------------------------------------------ value policies

const POLICY_TABLE: &str = "CREATE TABLE pol (id int PRIMARY KEY, n numeric(10,2) NOT NULL, ts timestamp, d date);
     INSERT INTO pol VALUES (1, 'NaN', 'infinity', '-infinity'), (2, 1.25, '2024-01-01 00:00:00', '2024-01-01');";

#[tokio::test(flavor = "multi_thread")]
async fn unrepresentable_values_follow_the_policy() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(POLICY_TABLE)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // fail (the default): exit 1, naming table, column, value and the setting.
    let out = dir.path().join("fail");
    let cfg = task_file(
        dir.path(),
        "fail",
        &task(&pg.url("postgres"), &out, "\"public.pol\"", ""),
    );
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("public.pol column n: numeric 'NaN'"),
        "{stderr}"
    );
    assert!(stderr.contains("on_unrepresentable"), "{stderr}");

    // null: the values become NULL, the representable row is intact.
    let out = dir.path().join("null");
    let cfg = task_file(
        dir.path(),
        "null",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.pol\"",
            "[values]\non_unrepresentable = \"null\"",
        ),
    );
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let batches = read_table(&out.join("public/pol"));
    let by_id = rows_by_id(&batches);
    let (b, r) = by_id[&1];
    for col in ["n", "ts", "d"] {
        assert!(
            batches[b].column_by_name(col).unwrap().is_null(r),
            "{col} should be NULL"
        );
    }
    let (b, r) = by_id[&2];
    assert_eq!(
        arrow_val(batches[b].column_by_name("n").unwrap(), r),
        Val::Text("1.25".into())
    );
    assert_eq!(
        arrow_val(batches[b].column_by_name("ts").unwrap(), r),
        Val::Text("2024-01-01 00:00:00".into())
    );

    // text: those columns become PostgreSQL's exact text.
    let out = dir.path().join("text");
    let cfg = task_file(
        dir.path(),
        "text",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.pol\"",
            "[values]\non_unrepresentable = \"text\"",
        ),
    );
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let batches = read_table(&out.join("public/pol"));
    let schema = batches[0].schema();
    for col in ["n", "ts", "d"] {
        assert_eq!(
            schema.field_with_name(col).unwrap().data_type(),
            &DataType::Utf8,
            "{col}"
        );
    }
    let by_id = rows_by_id(&batches);
    let text = |id: i64, col: &str| {
        let (b, r) = by_id[&id];
        arrow_val(batches[b].column_by_name(col).unwrap(), r)
    };
    assert_eq!(text(1, "n"), Val::Text("NaN".into()));
    assert_eq!(text(1, "ts"), Val::Text("infinity".into()));
    assert_eq!(text(1, "d"), Val::Text("-infinity".into()));
    assert_eq!(text(2, "n"), Val::Text("1.25".into()));
    assert_eq!(text(2, "d"), Val::Text("2024-01-01".into()));
}

// ---------------------------------------------------------- re-runs, selection, check, errors

#[tokio::test(flavor = "multi_thread")]
async fn rerun_replaces_files_and_selection_applies() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE app.users (id bigint PRIMARY KEY, name text, password_hash text);
             INSERT INTO app.users SELECT g, repeat(md5(g::text), 8), 'secret' FROM generate_series(1, 200000) g;
             CREATE TABLE app.tmp_scratch (id int);
             CREATE TABLE public.other (id int);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let body = |file_mb: u64| {
        task(
            &pg.url("postgres"),
            &out,
            "\"app.*\"",
            "exclude = [\"app.tmp_*\"]\n[tables.exclude_columns]\n\"app.users\" = [\"password_hash\"]",
        )
        .replace("[target]\nkind = \"parquet\"", &format!("[target]\nkind = \"parquet\"\nfile_size_mb = {file_mb}"))
    };
    // First run: small files, several of them.
    let cfg = task_file(dir.path(), "small", &body(1));
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let table_dir = out.join("app/users");
    let first = load_files(&table_dir);
    assert!(first.len() >= 3, "{first:?}");
    assert!(
        !out.join("app/tmp_scratch").exists(),
        "excluded table was written"
    );
    assert!(
        !out.join("public").exists(),
        "unselected schema was written"
    );

    // Second run with large files: one file, and the stale ones are gone.
    let cfg = task_file(dir.path(), "large", &body(512));
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let second = load_files(&table_dir);
    assert_eq!(second, vec![table_dir.join("LOAD00000001.parquet")]);
    let batches = read_table(&table_dir);
    assert_eq!(rows_by_id(&batches).len(), 200_000);
    assert!(
        batches[0]
            .schema()
            .field_with_name("password_hash")
            .is_err(),
        "excluded column was written"
    );
    assert!(batches[0].schema().field_with_name("name").is_ok());
}

/// A typo in `exclude_columns` (a column or a table that does not exist) would export the very
/// column it meant to hide: `full-load`, `run` and `check` refuse it, naming the entry, and
/// nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn an_exclude_columns_typo_is_refused_and_nothing_is_written() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(
            "CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, password_hash text);
             INSERT INTO public.customers VALUES (1, 'a', 'secret-hash');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases = [
        (
            "column",
            "\"public.customers\" = [\"passwordhash\"]",
            "public.customers has no column \"passwordhash\"",
        ),
        (
            "case",
            "\"public.customers\" = [\"Password_Hash\"]",
            "did you mean \"password_hash\"?",
        ),
        (
            "table",
            "\"public.customer\" = [\"password_hash\"]",
            "\"public.customer\" is not a selected table",
        ),
    ];
    for (name, entry, expected) in cases {
        let body = task(
            &pg.url("postgres"),
            &out,
            "\"public.*\"",
            &format!("[tables.exclude_columns]\n{entry}"),
        );
        let cfg = task_file(dir.path(), name, &body);
        let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains("tables.exclude_columns"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            !out.join("public").exists(),
            "{name}: something was written"
        );

        let (code, stdout, stderr) = inlet(&["check", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}: {stdout}{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.contains("tables.exclude_columns"))
            .unwrap_or_else(|| panic!("{name}: no exclude_columns line in {stdout}"));
        assert!(
            line.contains("MISSING") && line.contains(expected),
            "{name}: {stdout}"
        );

        let cdc = body.replace("mode = \"full-load\"", "mode = \"full-load-and-cdc\"");
        let cfg = task_file(dir.path(), &format!("{name}-cdc"), &cdc);
        // A free port: the default 127.0.0.1:9440 may be taken by another test running inlet.
        let (code, _, stderr) = inlet(&[
            "run",
            "-c",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert_ne!(code, 0, "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            !out.join("public/customers").exists(),
            "{name}: the table was written"
        );
    }
    let slots = pg
        .client("postgres")
        .await
        .query("SELECT slot_name FROM pg_replication_slots", &[])
        .await
        .unwrap();
    assert!(slots.is_empty(), "a refused task left a slot behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_tables_and_prerequisites() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(POLICY_TABLE)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "ok",
        &task(&pg.url("postgres"), &out, "\"public.*\"", ""),
    );
    let (code, stdout, stderr) = inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("public.pol"), "{stdout}");
    assert!(stdout.contains("key (id)"), "{stdout}");
    assert!(stdout.contains("[ok     ] wal_level: logical"), "{stdout}");
    assert!(stdout.contains("[ok     ] target:"), "{stdout}");

    // A selection that matches nothing is a missing prerequisite: exit 1 with the fix.
    let cfg = task_file(
        dir.path(),
        "none",
        &task(&pg.url("postgres"), &out, "\"nope.*\"", ""),
    );
    let (code, stdout, _) = inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("[MISSING] table selection"), "{stdout}");
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let good = task("postgres://u@127.0.0.1:1/db", &out, "\"public.*\"", "");
    for (body, needle) in [
        (
            good.replace("tls = \"disable\"", "tls = \"sometimes\""),
            "source.tls: unknown variant `sometimes`",
        ),
        (
            good.replace("[tables]", "[tables]\nincluded = []"),
            "tables.included: unknown field `included`",
        ),
        (
            good.replace("kind = \"parquet\"", "kind = \"csv\""),
            "target.kind: unknown target \"csv\"",
        ),
        (
            good.replace("mode = \"full-load\"", "mode = \"sync\""),
            "task.mode: unknown variant `sync`",
        ),
        (
            good.replace("u@127.0.0.1:1/db", "u@127.0.0.1:1/${INLET_TEST_UNSET_VAR}"),
            "source.url: environment variable INLET_TEST_UNSET_VAR is not set",
        ),
        (
            format!("{good}\n[full_load]\nworkers = -1"),
            "full_load.workers",
        ),
        ("[task\nname=1".to_string(), "not valid TOML"),
    ] {
        let cfg = task_file(dir.path(), "bad", &body);
        let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{needle}: {stderr}");
        assert!(
            stderr.contains(cfg.to_str().unwrap()),
            "error should name the file: {stderr}"
        );
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    let (code, _, stderr) = inlet(&["full-load", "-c", "/nonexistent/task.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/task.toml: cannot read the task file"),
        "{stderr}"
    );
    let (code, _, _) = inlet(&["full-load"]);
    assert_eq!(code, 2, "missing -c is a usage error");
}

#[test]
fn unreachable_server_exits_1_without_leaking_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://inlet:hunter2secret@127.0.0.1:{port}/shop");
    let cfg = task_file(dir.path(), "down", &task(&url, &out, "\"public.*\"", ""));
    let (code, stdout, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at inlet@127.0.0.1:{port}/shop"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2secret") && !stdout.contains("hunter2secret"),
        "password leaked: {stderr}"
    );
    let (code, stdout, stderr) = inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("[MISSING] source connection"), "{stdout}");
    assert!(!stdout.contains("hunter2secret") && !stderr.contains("hunter2secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_against_a_tls_only_server() {
    let pg = PgServer::start_tls_only();
    let ca = pg.ca_file();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = pg.url("postgres");
    // The server rejects every non-TLS connection, so a load that works went over TLS.
    let run = |name: &str, tls: &str, extra: &str| {
        let body = task(&url, &out, "\"public.*\"", "")
            .replace("tls = \"disable\"", &format!("tls = \"{tls}\"{extra}"));
        let cfg = task_file(dir.path(), name, &body);
        inlet(&["check", "-c", cfg.to_str().unwrap()])
    };
    std::fs::create_dir_all(&out).unwrap();
    for (name, tls, extra) in [
        ("require", "require", String::new()),
        ("prefer", "prefer", String::new()),
        (
            "verify",
            "verify-full",
            format!("\nca_file = \"{}\"", ca.display()),
        ),
    ] {
        let (code, stdout, stderr) = run(name, tls, &extra);
        assert!(
            stdout.contains("[ok     ] connection"),
            "tls = {tls}: {stdout}\n{stderr}"
        );
        assert_eq!(
            code, 1,
            "only the empty table selection is missing: {stdout}"
        );
    }
    // The test CA is not trusted without ca_file.
    let (code, stdout, _) = run("untrusted", "verify-full", "");
    assert_eq!(code, 1);
    assert!(
        stdout.contains("[MISSING] source connection") && stdout.contains("certificate"),
        "{stdout}"
    );
    // Plain TCP is refused by the server, and the message says so.
    let (code, stdout, _) = run("plain", "disable", "");
    assert_eq!(code, 1);
    assert!(
        stdout.contains("[MISSING] source connection") && stdout.contains("no encryption"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_load_to_s3_with_settings_from_the_environment() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, payload text);
             INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 50000) g;",
        )
        .await
        .unwrap();
    let mut moto = common::Moto::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let body = task(
        &pg.url("postgres"),
        Path::new("unused"),
        "\"public.items\"",
        "",
    )
    .replace("url = \"unused\"", "url = \"s3://lake/raw/pg\"");
    let cfg = task_file(dir.path(), "s3", &body);
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t-never-logged"),
        ("AWS_REGION", "us-east-1"),
    ];
    let (code, stdout, stderr) =
        common::inlet_with_env(&["check", "-c", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[ok     ] target: s3://lake/raw/pg is writable"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        common::inlet_with_env(&["full-load", "-c", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
        "secret leaked"
    );

    let py = std::process::Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/readers/s3_summary.py"
        ))
        .args([moto.endpoint.as_str(), "lake", "raw/pg/"])
        .output()
        .expect("run s3_summary.py");
    assert!(
        py.status.success(),
        "s3_summary.py failed:\n{}\n{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        r#"{"keys": ["raw/pg/public/items/LOAD00000001.parquet"], "rows": 50000, "id_sum": 1250025000}"#
    );

    // A bucket that does not exist: exit 1 naming the target, without the secret.
    let cfg = task_file(
        dir.path(),
        "nobucket",
        &body.replace("s3://lake/", "s3://missing-bucket/"),
    );
    let (code, stdout, stderr) =
        common::inlet_with_env(&["full-load", "-c", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("missing-bucket"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "secret leaked: {stderr}");
}

/// Concurrent DDL during a full load must never wedge the source: the load holds a table's
/// lock only while it copies one chunk, so a TRUNCATE waits at most for that chunk (it used to
/// queue behind locks held for the whole load, and the load's next COPY behind it).
#[tokio::test(flavor = "multi_thread")]
async fn truncate_during_a_full_load_neither_blocks_nor_hangs() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, payload text);
             INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 1000000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.big\"",
            "[full_load]\nworkers = 1\nchunk_mb = 1\nbatch_rows = 1000",
        ),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["full-load", "-c", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the load has written its first file, then truncate under it.
    let table_dir = out.join("public/big");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !table_dir.exists() || std::fs::read_dir(&table_dir).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the load wrote nothing in 60 s"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    client
        .batch_execute("SET statement_timeout = '60s'")
        .await
        .unwrap();
    client
        .batch_execute("TRUNCATE big")
        .await
        .expect("TRUNCATE must not wait for the whole load");
    // The load ends by itself, whatever it managed to read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the full load hung after a concurrent TRUNCATE");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs `inlet ARGS…` and waits at most `secs` for it: its exit code, stdout and stderr. A
/// process still running then is killed and the test fails naming `what`.
fn inlet_within(args: &[&str], secs: u64, what: &str) -> (i32, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still ran after {secs} s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Discovery reads sizes from the catalog (`relpages`) and takes no lock on any table: a table
/// the task does not select, held under ACCESS EXCLUSIVE by an application's open transaction,
/// neither stops `inlet check` nor the full load (discovery's pg_relation_size over every table
/// of the database used to wait behind it for as long as the lock was held). While the load
/// runs, an application's ALTER TABLE of a selected table waits for no lock of inlet's beyond
/// one COPY. A table never vacuumed or analyzed (relpages 0) is measured exactly for the chunk
/// plan and read whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_unselected_table_does_not_stall_discovery() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE unrelated (id int);
             CREATE TABLE big (id bigint PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g;
             CREATE TABLE small (id bigint PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             INSERT INTO small SELECT g, 'v' || g FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    let relpages: i32 = client
        .query_one("SELECT relpages FROM pg_class WHERE relname = 'big'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(relpages, 0, "big must look never vacuumed to the catalog");
    let locker = pg.client("postgres").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE unrelated IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.big\", \"public.small\"",
            "[full_load]\nworkers = 2\nchunk_mb = 1\nbatch_rows = 5000",
        ),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || inlet_within(&["check", "-c", &cfg], 30, "inlet check")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("public.big"), "{stdout}");

    let load = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || inlet_within(&["full-load", "-c", &cfg], 30, "inlet full-load")
    });
    // While the load runs, no session of inlet's waits for a lock or holds one on a table (or
    // its index, which the COPY's planner opens) it does not read, and the application's ALTER TABLE of a selected table waits at most for
    // the COPY of one chunk.
    let app = pg.client("postgres").await;
    let mut altered = false;
    while !load.is_finished() {
        let locks: Vec<(String, String, bool)> = client
            .query(
                "SELECT l.relation::regclass::text, l.mode, l.granted \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 JOIN pg_class c ON c.oid = l.relation \
                 WHERE a.application_name = 'inlet' AND l.locktype = 'relation' \
                   AND c.relnamespace = 'public'::regnamespace",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        for (table, mode, granted) in &locks {
            assert!(
                *granted
                    && ["big", "big_pkey", "small", "small_pkey"].contains(&table.as_str())
                    && mode == "AccessShareLock",
                "inlet's lock: {locks:?}"
            );
        }
        if !altered {
            app.batch_execute(
                "SET lock_timeout = '5s'; ALTER TABLE small ALTER COLUMN v SET DEFAULT 'd'",
            )
            .await
            .expect("the ALTER TABLE of a selected table must not queue behind inlet");
            altered = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (code, stdout, stderr) = load.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // Both tables were measured: none was planned from the catalog's estimate.
    assert!(
        !stderr.contains("another session holds a lock on the table"),
        "{stderr}"
    );

    // The unrelated lock is still held, and the rows are exactly the source's.
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE relation = 'unrelated'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 1);
    for (table, rows) in [("big", 100_000i64), ("small", 500)] {
        let batches = read_table(&out.join("public").join(table));
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=rows).collect::<Vec<_>>(), "{table}: ids");
    }
    // And the values: small's v is 'v' followed by its id.
    let mut small: Vec<(i64, String)> = read_table(&out.join("public/small"))
        .iter()
        .flat_map(|b| {
            let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            let v = b.column_by_name("v").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| (ids.value(i), v.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    small.sort();
    let want: Vec<(i64, String)> = (1..=500).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(small, want);
    locker.batch_execute("ROLLBACK").await.unwrap();
}

/// A selected table another session holds under ACCESS EXCLUSIVE when the load starts: sizing
/// it waits 500 ms, then the load plans it from the catalog's estimate (relpages 0: never
/// vacuumed), which is one open-ended chunk, and reads it whole once the lock is released.
#[tokio::test(flavor = "multi_thread")]
async fn a_selected_table_locked_when_the_load_starts_is_read_whole() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE held (id bigint PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             INSERT INTO held SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g;",
        )
        .await
        .unwrap();
    let locker = pg.client("postgres").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.held\"",
            "[full_load]\nworkers = 2\nchunk_mb = 1\nbatch_rows = 5000",
        ),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let load = tokio::task::spawn_blocking(move || {
        inlet_within(&["full-load", "-c", &cfg], 30, "inlet full-load")
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    let (code, stdout, stderr) = load.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("another session holds a lock on the table"),
        "{stderr}"
    );
    let mut ids: Vec<i64> = read_table(&out.join("public/held"))
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=100_000).collect::<Vec<i64>>());
}

// ------------------------------------------------------------------- a load that resumes

/// A full load of a 1.5-million-row table, SIGKILLed three times while loading, resumes each
/// time (see [`common::resume::kill_and_resume`]): only the chunks in flight at a kill are read
/// again, and the target ends exactly equal to the source.
async fn a_killed_full_load_resumes(iceberg: bool) {
    // Larger runs by hand (a soak): INLET_SOAK_RESUME_ROWS, INLET_SOAK_RESUME_CHUNK_MB.
    let env = |name: &str, default: i64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = env("INLET_SOAK_RESUME_ROWS", 1_500_000);
    let chunk_mb = env("INLET_SOAK_RESUME_CHUNK_MB", 1);
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, k int, label text);
             INSERT INTO big SELECT g, (g % 1000)::int,
                    CASE WHEN g % 97 = 0 THEN NULL ELSE 'label ' || (g % 5000) END
             FROM generate_series(1, {rows}) g;
             ANALYZE big;"
        ))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT count(*), sum(('x' || substr(md5(concat_ws('|', id, k, label)), 1, 15))::bit(60)::bigint)::text FROM big",
            &[],
        )
        .await
        .unwrap();
    let want: (i64, String) = (row.get(0), row.get(1));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fl = format!("[full_load]\nworkers = 2\nchunk_mb = {chunk_mb}\nbatch_rows = 5000");
    let mut body = task(&pg.url("postgres"), &out, "\"public.big\"", &fl);
    let record = if iceberg {
        body = body.replace(
            &format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
            &format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display()),
        );
        out.join("_inlet/test/load/public.big")
    } else {
        out.join("public/big/_inlet_load/PROGRESS")
    };
    let cfg = task_file(dir.path(), "resume", &body);
    common::resume::kill_and_resume(&common::resume::ResumeCase {
        dir: dir.path(),
        cfg: &cfg,
        record,
        table_dir: out.join("public/big"),
        iceberg,
        // Parquet: the killed loads replace a complete one, so their files are staged.
        loaded_before: !iceberg,
        rows,
        workers: 2,
        want,
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_full_load_resumes_into_parquet() {
    a_killed_full_load_resumes(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_full_load_resumes_into_iceberg() {
    a_killed_full_load_resumes(true).await;
}

/// The writes between a killed load and its restart: rows deleted from the first pages (read
/// before the kill), then new versions of the last rows, which move into the room they left,
/// a few keys changed and rows inserted past the largest key. (One statement each: VACUUM
/// cannot run in the implicit transaction of several.)
const WRITES_BETWEEN_RUNS: &[&str] = &[
    "DELETE FROM big WHERE id <= 20000",
    "VACUUM big",
    "UPDATE big SET label = 'moved' WHERE id > 980000",
    "UPDATE big SET id = id + 5000000, label = 'rekeyed' WHERE id BETWEEN 30001 AND 30100",
    "INSERT INTO big SELECT g, 7, 'new' FROM generate_series(1000001, 1001000) g",
    // A third of the rows moved to new pages (values unchanged), and the statistics taken
    // again: a table filled in key order is no longer stored in it enough for key ranges.
    "UPDATE big SET k = k WHERE id % 3 = 0",
    "ANALYZE big",
];

/// What the test tables' rows sum to (count, sum of a hash of each row), in `from`.
fn checksum_sql(from: &str) -> String {
    format!(
        "SELECT count(*), sum(('x' || substr(md5(concat_ws('|', id, k, label)), 1, 15))::bit(60)::bigint)::text FROM {from}"
    )
}

/// A full load of `public.big` (made by `setup`, 1M rows) killed after 8 chunks, the table
/// written to ([`WRITES_BETWEEN_RUNS`], some updated rows moving into the first pages), then
/// loaded again to its end. Returns the load record the killed run left, the restart's log, the
/// Parquet table's folder, and the key's order statistics after the writes
/// (`pg_stats.correlation` of `id`).
async fn written_between_a_kill_and_a_restart(
    pg: &PgServer,
    setup: &str,
    dir: &Path,
) -> (String, String, std::path::PathBuf, f64) {
    let client = pg.client("postgres").await;
    client.batch_execute(setup).await.unwrap();
    // A table read in page ranges resumes while its write counts (server statistics) are
    // unchanged: they are published shortly after the writing session goes idle.
    let flush_stats = || async {
        let _ = client
            .batch_execute("SELECT pg_stat_force_next_flush()")
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    };
    flush_stats().await;
    let out = dir.join("out");
    let cfg = task_file(
        dir,
        "changed",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.big\"",
            "[full_load]\nworkers = 2\nchunk_mb = 1\nbatch_rows = 5000",
        ),
    );
    let record = out.join("public/big/_inlet_load/PROGRESS");
    common::resume::kill_after_eight_chunks(&cfg, &record);
    let recorded = std::fs::read_to_string(&record).unwrap();
    for write in WRITES_BETWEEN_RUNS {
        client.batch_execute(write).await.unwrap();
    }
    let moved: i64 = client
        .query_one(
            "SELECT count(*) FROM big WHERE label = 'moved' AND (ctid::text::point)[0] < 100",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(moved > 0, "no updated row moved into the first pages");
    let correlation: f64 = client
        .query_one(
            "SELECT correlation::float8 FROM pg_stats WHERE tablename = 'big' AND attname = 'id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    flush_stats().await;
    let (code, stdout, stderr) = inlet_within(
        &["full-load", "-c", cfg.to_str().unwrap()],
        60,
        "the load after the change",
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!record.exists());
    (recorded, stderr, out.join("public/big"), correlation)
}

/// A PostgreSQL table whose first key column holds integers (and whose rows are stored in key
/// order) is loaded in ranges of it when the load can resume, so a table written to between a
/// killed load and its restart still resumes: the chunks the killed run completed are kept, as
/// its snapshot saw them, and the others are read as the table is now (each chunk as of its own
/// snapshot). Before, its chunks were page ranges, which an update moves rows between, and the
/// table was loaded from its start: a busy table never resumed. The expected rows come from the
/// source and the record's key ranges: a copy of the table taken before the writes for the done
/// chunks' ranges, the table now for the others. The writes also leave the rows out of key
/// order, which would have the table read in page ranges by a new load: the resumed one keeps
/// the key ranges it recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_written_after_a_killed_load_resumes_by_key_ranges() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (text, stderr, table_dir, correlation) = written_between_a_kill_and_a_restart(
        &pg,
        "CREATE TABLE big (id bigint PRIMARY KEY, k int, label text);
         INSERT INTO big SELECT g, (g % 1000)::int, 'label ' || (g % 5000)
         FROM generate_series(1, 1000000) g;
         ANALYZE big;
         CREATE TABLE before_writes AS SELECT * FROM big;",
        dir.path(),
    )
    .await;
    assert!(
        text.contains("guard postgres key ranges of public.big"),
        "{text}"
    );
    assert!(correlation.abs() < 0.9, "correlation {correlation}");
    let chunks: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("chunk "))
        .collect();
    assert!(chunks.len() > 40, "{} chunks", chunks.len());
    // The done chunks' ranges, as a condition on id.
    let done: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("done "))
        .map(|l| {
            let i: usize = l.split(' ').next().unwrap().parse().unwrap();
            let bounds: Vec<&str> = chunks[i]
                .strip_prefix("keys ")
                .unwrap()
                .split(' ')
                .collect();
            let mut c = vec!["true".to_string()];
            if bounds[0] != "-" {
                c.push(format!("id >= {}", bounds[0]));
            }
            if bounds[1] != "-" {
                c.push(format!("id < {}", bounds[1]));
            }
            format!("({})", c.join(" AND "))
        })
        .collect();
    assert!(done.len() >= 8);
    let in_done = done.join(" OR ");
    let resumed = common::resume::log_fields(&stderr, "resuming the table's interrupted full load")
        .unwrap_or_else(|| panic!("not resumed:\n{stderr}"));
    assert_eq!(
        resumed["kept_chunks"],
        done.len().to_string(),
        "{resumed:?}"
    );
    let expected = format!(
        "(SELECT * FROM before_writes WHERE {in_done} \
          UNION ALL SELECT * FROM big WHERE NOT ({in_done})) AS expected"
    );
    let client = pg.client("postgres").await;
    let row = client
        .query_one(&checksum_sql(&expected), &[])
        .await
        .unwrap();
    let want: (i64, String) = (row.get(0), row.get(1));
    assert_eq!(common::resume::duckdb_checksum("parquet", &table_dir), want);
}

/// A PostgreSQL table whose rows are not stored in key order (here inserted in random order) is
/// read in page ranges (key ranges would read it 1.8 times slower), as is one without an
/// integer first key column. One written to between a killed load and its restart is loaded
/// from its start, not resumed: here rows deleted from the done chunks' pages leave room that
/// the new versions of rows updated in the chunks not yet read move into, so a resumed load
/// would keep the deleted rows and miss the updated ones. The restart says the table changed,
/// and the target equals the source as it is now. (The record's guard says page ranges.)
#[tokio::test(flavor = "multi_thread")]
async fn a_page_ranged_table_written_after_a_killed_load_is_loaded_from_its_start() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (text, stderr, table_dir, _) = written_between_a_kill_and_a_restart(
        &pg,
        "CREATE TABLE big (id bigint PRIMARY KEY, k int, label text);
         INSERT INTO big SELECT g, (g % 1000)::int, 'label ' || (g % 5000)
         FROM generate_series(1, 1000000) g ORDER BY random();
         ANALYZE big;",
        dir.path(),
    )
    .await;
    assert!(text.contains("guard postgres filenode"), "{text}");
    assert!(
        stderr.contains("the table changed since an interrupted full load"),
        "{stderr}"
    );
    assert!(!stderr.contains("resuming the table's"), "{stderr}");
    let client = pg.client("postgres").await;
    let row = client.query_one(&checksum_sql("big"), &[]).await.unwrap();
    let want: (i64, String) = (row.get(0), row.get(1));
    assert_eq!(common::resume::duckdb_checksum("parquet", &table_dir), want);
}

/// A table never analyzed is read in page ranges (no statistics say its rows are in key order).
/// Analyzed between a killed load and its restart (autovacuum does that to a table just
/// filled), with nothing written, it resumes in the page ranges it recorded instead of starting
/// over in key ranges.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_ranged_load_analyzed_before_its_restart_resumes_in_page_ranges() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, k int, label text)
                 WITH (autovacuum_enabled = false);
             INSERT INTO big SELECT g, (g % 1000)::int, 'label ' || (g % 5000)
             FROM generate_series(1, 1000000) g;",
        )
        .await
        .unwrap();
    let _ = client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "analyzed",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.big\"",
            "[full_load]\nworkers = 2\nchunk_mb = 1\nbatch_rows = 5000",
        ),
    );
    let record = out.join("public/big/_inlet_load/PROGRESS");
    common::resume::kill_after_eight_chunks(&cfg, &record);
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains("guard postgres filenode"), "{text}");
    let done = text.lines().filter(|l| l.starts_with("done ")).count();
    client.batch_execute("ANALYZE big").await.unwrap();
    let (code, stdout, stderr) = inlet_within(
        &["full-load", "-c", cfg.to_str().unwrap()],
        60,
        "the load after ANALYZE",
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let resumed = common::resume::log_fields(&stderr, "resuming the table's interrupted full load")
        .unwrap_or_else(|| panic!("not resumed:\n{stderr}"));
    assert_eq!(resumed["kept_chunks"], done.to_string(), "{resumed:?}");
    let row = client.query_one(&checksum_sql("big"), &[]).await.unwrap();
    let want: (i64, String) = (row.get(0), row.get(1));
    assert_eq!(
        common::resume::duckdb_checksum("parquet", &out.join("public/big")),
        want
    );
}

/// A full load that a transient error ends (here the server terminates its connections, as a
/// restart or a network cut would) keeps the chunks it completed: the table's folder holds no
/// file readers see (a first load is staged), the staging folder exactly the recorded chunks'
/// files (those of the chunks in flight are deleted), the error
/// says so, and the next run resumes after them and completes the table equal to the source.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_ended_by_a_transient_error_keeps_its_chunks_for_the_next_run() {
    const ROWS: i64 = 1_000_000;
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, k int, label text);
             INSERT INTO big SELECT g, (g % 1000)::int, 'label ' || (g % 5000)
             FROM generate_series(1, {ROWS}) g;
             ANALYZE big;"
        ))
        .await
        .unwrap();
    let _ = client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table_dir = out.join("public/big");
    let cfg = task_file(
        dir.path(),
        "cut",
        &task(
            &pg.url("postgres"),
            &out,
            "\"public.big\"",
            "[full_load]\nworkers = 2\nchunk_mb = 1\nbatch_rows = 5000",
        ),
    );
    let record = table_dir.join("_inlet_load/PROGRESS");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["full-load", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(std::time::Instant::now() < deadline, "nothing recorded");
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if text.lines().filter(|l| l.starts_with("done ")).count() >= 8 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .await
        .unwrap();
    let ended = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("of its completed chunks are kept, staged (hidden from readers)"),
        "{stderr}"
    );
    // Readers see no table (a first load is staged), and the staging folder holds the files
    // the record names and at most one more per worker: a chunk whose file was complete when
    // the error cancelled the write of its record (the sink keeps such a file, unrecorded,
    // rather than risk deleting one the record names; the next run deletes it).
    let visible: Vec<String> = std::fs::read_dir(&table_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert_eq!(visible, Vec::<String>::new());
    let text = std::fs::read_to_string(&record).unwrap();
    let done = text.lines().filter(|l| l.starts_with("done ")).count();
    let mut recorded: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("done "))
        .flat_map(|l| l.split('\t').skip(1))
        .map(|f| f.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    recorded.sort();
    let mut present: Vec<String> = std::fs::read_dir(table_dir.join("_inlet_load"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("LOAD"))
        .map(|n| format!("_inlet_load/{n}"))
        .collect();
    present.sort();
    let unrecorded: Vec<&String> = present.iter().filter(|f| !recorded.contains(f)).collect();
    assert!(
        recorded.iter().all(|f| present.contains(f)) && unrecorded.len() <= 2,
        "recorded {recorded:?}, present {present:?}"
    );

    let (code, stdout, stderr) = inlet_within(
        &["full-load", "-c", cfg.to_str().unwrap()],
        60,
        "the resumed load",
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let resumed = common::resume::log_fields(&stderr, "resuming the table's interrupted full load")
        .unwrap_or_else(|| panic!("not resumed:\n{stderr}"));
    assert_eq!(resumed["kept_chunks"], done.to_string(), "{resumed:?}");
    let row = client
        .query_one(
            "SELECT count(*), sum(('x' || substr(md5(concat_ws('|', id, k, label)), 1, 15))::bit(60)::bigint)::text FROM big",
            &[],
        )
        .await
        .unwrap();
    let want: (i64, String) = (row.get(0), row.get(1));
    assert_eq!(common::resume::duckdb_checksum("parquet", &table_dir), want);
    // Nothing of the suspended load is left staged, an unrecorded file included.
    let staged: Vec<String> = std::fs::read_dir(table_dir.join("_inlet_load"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(staged, Vec::<String>::new());
}
