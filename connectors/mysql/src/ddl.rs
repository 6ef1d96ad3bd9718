//! The statements (QUERY events) of the binlog, read for what they do to the captured tables.
//! With `binlog_format = ROW` every row change reaches the binlog as row events, except what
//! DDL does: a table renamed, dropped, created or swapped (an online schema change tool's
//! cut-over), and the partition operations that move or delete rows (`TRUNCATE`, `DROP`,
//! `EXCHANGE PARTITION`, …), which are logged only as their statement. The capture
//! ([`crate::capture`]) acts on what these functions read: it re-discovers the tables, and a
//! table whose rows the row events no longer account for is loaded again.
//!
//! Statements are split into words ([`sql_words`]), enough for the statement forms the server
//! writes back into the binlog; identifiers keep their case.

use inlet_core::TableId;

/// Tables a DDL statement takes away (`gone`) and brings (`new`); `replaced`: the names whose
/// rows the row events no longer account for after it: they hold another table (a rename's
/// destination whose source is another name, a created table), or the statement changed their
/// rows itself (a partition dropped, truncated or exchanged).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TablesChange {
    pub(crate) gone: Vec<TableId>,
    pub(crate) new: Vec<TableId>,
    pub(crate) replaced: Vec<TableId>,
    /// Set when the statement changed rows without row events (a partition operation, see
    /// [`partition_change`]): its words, for the log (`TRUNCATE PARTITION`).
    pub(crate) rows_without_events: Option<&'static str>,
}

/// Reads `RENAME TABLE a TO b, …`, `ALTER TABLE a … RENAME [TO|AS] b`, the `ALTER TABLE`
/// partition operations that change rows ([`partition_change`]), `DROP TABLE [IF EXISTS] a, …`,
/// `DROP DATABASE|SCHEMA d` (every table of `d` counts as gone; the database's name is returned
/// as a table named `*`) and `CREATE TABLE [IF NOT EXISTS] a …`. Temporary tables never reach
/// the row events, so their statements are ignored.
pub(crate) fn tables_change(
    words: &[String],
    lower: &[String],
    schema: &str,
) -> Option<TablesChange> {
    let word = |i: usize| lower.get(i).map(String::as_str);
    let name = |w: &String| table_id(w.trim_end_matches(','), schema);
    let mut change = TablesChange::default();
    match (word(0)?, word(1)?) {
        ("rename", "table" | "tables") => {
            // a TO b [, c TO d]…
            let tokens: Vec<&str> = words[2..]
                .iter()
                .flat_map(|w| w.split(','))
                .filter(|t| !t.is_empty())
                .collect();
            for triple in tokens.chunks(3) {
                if let [from, to_word, to] = triple {
                    if to_word.eq_ignore_ascii_case("to") {
                        let (from, to) = (table_id(from, schema), table_id(to, schema));
                        if from != to {
                            change.replaced.push(to.clone());
                        }
                        change.gone.push(from);
                        change.new.push(to);
                    }
                }
            }
        }
        ("alter", "table") | ("alter", "online") | ("alter", "ignore") => {
            let at = altered_table_at(lower)?;
            let table = words.get(at)?;
            if let Some(change) = partition_change(words, lower, at, schema) {
                return Some(change);
            }
            // RENAME COLUMN / INDEX / KEY change the table, not its name.
            let rename = (at + 1..lower.len()).find(|&i| {
                lower[i].trim_start_matches(',') == "rename"
                    && !matches!(word(i + 1), Some("column" | "index" | "key"))
            })?;
            let mut to = rename + 1;
            if matches!(word(to), Some("to" | "as")) {
                to += 1;
            }
            let (from, to) = (name(table), name(words.get(to)?));
            if from != to {
                change.replaced.push(to.clone());
            }
            change.gone.push(from);
            change.new.push(to);
        }
        ("drop", "table") => {
            let mut i = 2;
            if word(i) == Some("if") && word(i + 1) == Some("exists") {
                i += 2;
            }
            for w in &words[i.min(words.len())..] {
                let lw = w.to_ascii_lowercase();
                if lw == "restrict" || lw == "cascade" || lw.starts_with("/*") {
                    break;
                }
                for part in w.split(',').filter(|p| !p.is_empty()) {
                    change.gone.push(table_id(part, schema));
                }
            }
        }
        ("drop", "database" | "schema") => {
            let mut i = 2;
            if word(i) == Some("if") && word(i + 1) == Some("exists") {
                i += 2;
            }
            let db = words.get(i)?.trim_end_matches(',').to_string();
            change.gone.push(TableId::new(db, "*"));
        }
        ("create", "table") => {
            let mut i = 2;
            if word(i) == Some("if") && word(i + 1) == Some("not") && word(i + 2) == Some("exists")
            {
                i += 3;
            }
            let w = words.get(i)?;
            // `CREATE TABLE t(id int …` puts the column list in the same word.
            let bare = w.split('(').next().unwrap_or(w);
            change.new.push(table_id(bare, schema));
            change.replaced.push(table_id(bare, schema));
        }
        ("create", "or") => {
            // CREATE OR REPLACE TABLE (MariaDB) replaces a table: gone, then new.
            if word(2) == Some("replace") && word(3) == Some("table") {
                let w = words.get(4)?;
                let id = table_id(w.split('(').next().unwrap_or(w), schema);
                change.gone.push(id.clone());
                change.new.push(id.clone());
                change.replaced.push(id);
            }
        }
        _ => return None,
    }
    Some(change)
}

/// The index of the table's name in an `ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] t …`
/// statement's words.
pub(crate) fn altered_table_at(lower: &[String]) -> Option<usize> {
    let mut at = lower.iter().position(|w| w == "table")? + 1;
    if lower.get(at).map(String::as_str) == Some("if")
        && lower.get(at + 1).map(String::as_str) == Some("exists")
    {
        at += 2;
    }
    Some(at)
}

/// The partition operations of `ALTER TABLE t …` (its name at word `at`) that change rows. The
/// server logs them as the statement even with `binlog_format = ROW`: no row event tells which
/// rows went or came, so each table whose rows changed is `replaced` (loaded again):
///
/// - `DROP PARTITION p` and `TRUNCATE PARTITION p|ALL` delete the partitions' rows from `t`;
/// - `EXCHANGE PARTITION p WITH TABLE t2` swaps the rows of `p` and `t2`: both change;
/// - `CONVERT PARTITION p TO TABLE t2` (MariaDB 10.7+) moves the rows of `p` out of `t` into a
///   new table `t2`; `CONVERT TABLE t2 TO PARTITION p …` moves the rows of `t2` into `t`, and
///   `t2` is gone;
/// - `IMPORT [PARTITION p] TABLESPACE` brings rows from a tablespace file.
///
/// Operations that keep every row (`ADD`, `COALESCE`, `REORGANIZE`, `REBUILD`, `OPTIMIZE`,
/// `ANALYZE`, `CHECK`, `REPAIR PARTITION`, `REMOVE PARTITIONING`, `PARTITION BY`, `DISCARD`,
/// which only makes the rows unreadable until an `IMPORT`) give None: a reload would copy the
/// same rows again.
pub(crate) fn partition_change(
    words: &[String],
    lower: &[String],
    at: usize,
    schema: &str,
) -> Option<TablesChange> {
    let table = table_id(words.get(at)?.trim_end_matches(','), schema);
    let word = |i: usize| lower.get(i).map(|w| w.trim_matches(','));
    let name_at = |i: usize| {
        words
            .get(i)
            .map(|w| table_id(w.trim_matches(',').split('(').next().unwrap_or(w), schema))
    };
    // The index just past the first `first second` pair from `from` on.
    let after_pair = |from: usize, first: &str, second: &str| {
        (from..lower.len())
            .find(|&i| word(i) == Some(first) && word(i + 1) == Some(second))
            .map(|i| i + 2)
    };
    let mut change = TablesChange::default();
    for i in at + 1..lower.len() {
        let (Some(verb), Some(object)) = (word(i), word(i + 1)) else {
            continue;
        };
        let operation = match (verb, object) {
            ("drop", "partition") => "DROP PARTITION",
            ("truncate", "partition") => "TRUNCATE PARTITION",
            ("exchange", "partition") => {
                let other = name_at(after_pair(i + 2, "with", "table")?)?;
                change.replaced.push(other);
                "EXCHANGE PARTITION"
            }
            ("convert", "partition") => {
                let other = name_at(after_pair(i + 2, "to", "table")?)?;
                // A new table, with rows: as CREATE TABLE brings one.
                change.new.push(other.clone());
                change.replaced.push(other);
                "CONVERT PARTITION"
            }
            ("convert", "table") => {
                change.gone.push(name_at(i + 2)?);
                "CONVERT TABLE … TO PARTITION"
            }
            ("import", "partition" | "tablespace") => "IMPORT TABLESPACE",
            _ => continue,
        };
        change.replaced.insert(0, table);
        change.rows_without_events = Some(operation);
        return Some(change);
    }
    None
}

/// Splits a statement into words, keeping backquoted identifiers whole (quotes removed) and
/// `db`.`t` together.
pub(crate) fn sql_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '`' {
                if chars.peek() == Some(&'`') {
                    cur.push('`');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '`' {
            quoted = true;
        } else if c == '.' {
            cur.push(NAME_SEPARATOR);
        } else if c.is_whitespace() || c == ';' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Stands for a `.` between name parts outside backquotes, in [`sql_words`]' output.
const NAME_SEPARATOR: char = '\u{1}';

/// The table a single-table INSERT, REPLACE, UPDATE, DELETE or LOAD DATA statement writes (as
/// a [`sql_words`] word), or None when it cannot tell (a multi-table form names its first).
pub(crate) fn dml_target(words: &[String], lower: &[String]) -> Option<String> {
    const MODIFIERS: &[&str] = &[
        "low_priority",
        "delayed",
        "high_priority",
        "ignore",
        "quick",
        "concurrent",
        "local",
    ];
    let mut i = 1;
    if lower.first().map(String::as_str) == Some("load") {
        // LOAD DATA|XML … INTO TABLE name
        i = lower.iter().position(|w| w == "table")? + 1;
    } else {
        while lower
            .get(i)
            .is_some_and(|w| MODIFIERS.contains(&w.as_str()))
        {
            i += 1;
        }
        if matches!(lower.get(i).map(String::as_str), Some("into" | "from")) {
            i += 1;
        }
    }
    let word = words.get(i)?;
    // `t(a, b)` and `t,` end the name.
    let name = word.split(['(', ',']).next().unwrap_or_default();
    (!name.is_empty()).then(|| name.to_string())
}

/// `db.t`, `t` (in the statement's default database) → a table id.
pub(crate) fn table_id(word: &str, default_schema: &str) -> TableId {
    let parts: Vec<String> = word.split(NAME_SEPARATOR).map(str::to_string).collect();
    match parts.as_slice() {
        [db, t] => TableId::new(db.clone(), t.clone()),
        _ => TableId::new(default_schema, parts.concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(sql: &str) -> Option<TableId> {
        let words = sql_words(sql);
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        dml_target(&words, &lower).map(|w| table_id(&w, "shop"))
    }

    #[test]
    fn tables_statement_format_changes_write() {
        let t = |s: &str, t: &str| Some(TableId::new(s, t));
        assert_eq!(
            target_of("INSERT INTO accounts VALUES (1)"),
            t("shop", "accounts")
        );
        assert_eq!(
            target_of("insert low_priority ignore into `x`.`a b`(id, v) select 1, 2"),
            t("x", "a b")
        );
        assert_eq!(target_of("REPLACE shop.t SET id = 1"), t("shop", "t"));
        assert_eq!(target_of("UPDATE IGNORE t SET v = 1"), t("shop", "t"));
        assert_eq!(target_of("DELETE QUICK FROM y.t WHERE id = 1"), t("y", "t"));
        assert_eq!(
            target_of("LOAD DATA LOCAL INFILE '/f' INTO TABLE t2 FIELDS TERMINATED BY ','"),
            t("shop", "t2")
        );
        assert_eq!(target_of("LOAD DATA INFILE '/f'"), None);
    }

    fn change_of(sql: &str) -> Option<TablesChange> {
        let words = sql_words(sql);
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        tables_change(&words, &lower, "shop")
    }

    fn ids(names: &[(&str, &str)]) -> Vec<TableId> {
        names.iter().map(|(s, t)| TableId::new(*s, *t)).collect()
    }

    #[test]
    fn statements_that_change_the_tables() {
        let c = change_of("RENAME TABLE a TO b, `x`.`c` TO c_old , d TO y.d").unwrap();
        assert_eq!(c.gone, ids(&[("shop", "a"), ("x", "c"), ("shop", "d")]));
        assert_eq!(c.new, ids(&[("shop", "b"), ("shop", "c_old"), ("y", "d")]));
        assert_eq!(c.replaced, c.new);
        // gh-ost's cut-over: both names hold another table after it.
        let c =
            change_of("RENAME TABLE `shop`.`t` TO `shop`.`_t_del`, `shop`.`_t_gho` TO `shop`.`t`")
                .unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "_t_del"), ("shop", "t")]));
        let c = change_of("ALTER TABLE t ENGINE=InnoDB, RENAME TO t").unwrap();
        assert!(c.replaced.is_empty(), "{c:?}");

        let c = change_of("ALTER TABLE shop.orders ADD COLUMN n int, RENAME TO orders_v2").unwrap();
        assert_eq!(c.gone, ids(&[("shop", "orders")]));
        assert_eq!(c.new, ids(&[("shop", "orders_v2")]));
        let c = change_of("alter table t rename as u").unwrap();
        assert_eq!(
            (c.gone, c.new),
            (ids(&[("shop", "t")]), ids(&[("shop", "u")]))
        );
        assert_eq!(change_of("ALTER TABLE t RENAME COLUMN a TO b"), None);
        assert_eq!(change_of("ALTER TABLE t RENAME INDEX a TO b"), None);
        assert_eq!(change_of("ALTER TABLE t ADD COLUMN renamed int"), None);

        let c = change_of("DROP TABLE IF EXISTS `a`, b,c /* generated by server */").unwrap();
        assert_eq!(c.gone, ids(&[("shop", "a"), ("shop", "b"), ("shop", "c")]));
        assert!(c.new.is_empty());
        let c = change_of("DROP DATABASE IF EXISTS `old`").unwrap();
        assert_eq!(c.gone, ids(&[("old", "*")]));

        let c = change_of("CREATE TABLE IF NOT EXISTS shop.t2(id int primary key)").unwrap();
        assert_eq!((c.gone, c.new), (vec![], ids(&[("shop", "t2")])));
        let c = change_of("CREATE TABLE `t3` (id int)").unwrap();
        assert_eq!(c.new, ids(&[("shop", "t3")]));
        let c = change_of("CREATE OR REPLACE TABLE t4 (id int)").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t4")]));
        assert_eq!(
            (c.gone, c.new),
            (ids(&[("shop", "t4")]), ids(&[("shop", "t4")]))
        );
        assert!(change_of("CREATE TEMPORARY TABLE t5 (id int)").is_none());
        assert!(change_of("CREATE INDEX i ON t (a)").is_none());
        assert!(change_of("DROP TEMPORARY TABLE t5").is_none());
    }

    #[test]
    fn statement_words_and_names() {
        let w = sql_words("TRUNCATE TABLE `shop`.`order``s`;");
        assert_eq!(w.len(), 3);
        assert_eq!(table_id(&w[2], "x"), TableId::new("shop", "order`s"));
        assert_eq!(table_id("t", "shop"), TableId::new("shop", "t"));
        assert_eq!(
            table_id(&sql_words("a.b")[0], "shop"),
            TableId::new("a", "b")
        );
        assert_eq!(
            table_id(&sql_words("`we.ird`")[0], "shop"),
            TableId::new("shop", "we.ird")
        );
    }

    #[test]
    fn partition_operations_that_change_rows_replace_their_tables() {
        let c = change_of("ALTER TABLE t TRUNCATE PARTITION p0, p1").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));
        assert_eq!((c.gone, c.new), (vec![], vec![]));
        assert_eq!(c.rows_without_events, Some("TRUNCATE PARTITION"));
        let c = change_of("alter table `x`.`orders` truncate partition all").unwrap();
        assert_eq!(c.replaced, ids(&[("x", "orders")]));
        let c = change_of("ALTER TABLE IF EXISTS t DROP PARTITION IF EXISTS p2").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));
        assert_eq!(c.rows_without_events, Some("DROP PARTITION"));
        let c = change_of("ALTER ONLINE TABLE t DROP PARTITION p0,p1").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));
        // Both sides of an exchange change.
        let c = change_of(
            "ALTER TABLE shop.t EXCHANGE PARTITION p1 WITH TABLE `other`.`t2` WITHOUT VALIDATION",
        )
        .unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t"), ("other", "t2")]));
        assert!(c.gone.is_empty() && c.new.is_empty());
        let c = change_of("ALTER TABLE t EXCHANGE PARTITION p1 WITH TABLE t2").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t"), ("shop", "t2")]));
        // MariaDB's CONVERT: a new table with rows, or a table gone into a partition.
        let c = change_of("ALTER TABLE t CONVERT PARTITION p0 TO TABLE t_old").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t"), ("shop", "t_old")]));
        assert_eq!(c.new, ids(&[("shop", "t_old")]));
        let c =
            change_of("ALTER TABLE t CONVERT TABLE t_new TO PARTITION p9 VALUES LESS THAN (100)")
                .unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));
        assert_eq!(c.gone, ids(&[("shop", "t_new")]));
        let c = change_of("ALTER TABLE t IMPORT PARTITION p0 TABLESPACE").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));
        let c = change_of("ALTER TABLE t IMPORT TABLESPACE").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));

        // Operations that keep every row: nothing to load again.
        for sql in [
            "ALTER TABLE t ADD PARTITION (PARTITION p9 VALUES LESS THAN (900))",
            "ALTER TABLE t ADD PARTITION (PARTITION `drop` VALUES LESS THAN (900))",
            "ALTER TABLE t REORGANIZE PARTITION p0, p1 INTO (PARTITION p01 VALUES LESS THAN \
             (200))",
            "ALTER TABLE t COALESCE PARTITION 2",
            "ALTER TABLE t REBUILD PARTITION p0",
            "ALTER TABLE t OPTIMIZE PARTITION p0",
            "ALTER TABLE t ANALYZE PARTITION ALL",
            "ALTER TABLE t CHECK PARTITION p0",
            "ALTER TABLE t REPAIR PARTITION p0",
            "ALTER TABLE t REMOVE PARTITIONING",
            "ALTER TABLE t PARTITION BY HASH (id) PARTITIONS 4",
            "ALTER TABLE t DISCARD PARTITION p0 TABLESPACE",
            "ALTER TABLE t DROP COLUMN c, ADD COLUMN truncated int",
            "ALTER TABLE t DROP INDEX partition_key",
        ] {
            assert_eq!(change_of(sql), None, "{sql}");
        }
        // A rename after IF EXISTS still reads the table's name.
        let c = change_of("ALTER TABLE IF EXISTS t RENAME TO u").unwrap();
        assert_eq!(
            (c.gone, c.new),
            (ids(&[("shop", "t")]), ids(&[("shop", "u")]))
        );
    }
}
