//! The statements (QUERY events) of the binlog, read for what they do to the captured tables.
//! With `binlog_format = ROW` every row change reaches the binlog as row events, except what
//! DDL does: a table renamed, dropped, created or swapped (an online schema change tool's
//! cut-over), the partition operations that move or delete rows (`TRUNCATE`, `DROP`,
//! `EXCHANGE PARTITION`, …), and the `ALTER TABLE` clauses that write values in the rows
//! already there (a column added with a default, a type changed: [`values_rewrite`]), which are
//! logged only as their statement. The capture ([`crate::capture`]) acts on what these
//! functions read: it re-discovers the tables, and a table whose rows the row events no longer
//! account for is loaded again.
//!
//! Statements are split into words ([`sql_words`]), enough for the statement forms the server
//! writes back into the binlog, as the client sent them (comments included: [`code_of`]);
//! identifiers keep their case.

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
    /// [`partition_change`]; a clause that writes values, see [`values_rewrite`]): its words,
    /// for the log (`TRUNCATE PARTITION`).
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
            let rewrite = values_rewrite(&lower[at + 1..]);
            // RENAME COLUMN / INDEX / KEY change the table, not its name.
            let rename = (at + 1..lower.len()).find(|&i| {
                lower[i].trim_start_matches(',') == "rename"
                    && !matches!(word(i + 1), Some("column" | "index" | "key"))
            });
            let Some(rename) = rename else {
                // The table keeps its name; its rows change when a clause writes values.
                change.replaced.push(name(table));
                change.rows_without_events = Some(rewrite?);
                return Some(change);
            };
            let mut to = rename + 1;
            if matches!(word(to), Some("to" | "as")) {
                to += 1;
            }
            let (from, to) = (name(table), name(words.get(to)?));
            if from != to || rewrite.is_some() {
                change.replaced.push(to.clone());
            }
            change.rows_without_events = rewrite;
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

/// What a clause of `ALTER TABLE t …` does to the values of the rows already there, when it
/// writes some: the server writes them in the table without a row event (the binlog holds the
/// statement), so no change says which rows now hold what. `lower` are the (lowercase) words
/// after the table's name. The clauses that write values:
///
/// - `ADD [COLUMN] c …` whose existing rows get a value that is not NULL: a `DEFAULT` other
///   than `NULL` (a literal or an expression), `NOT NULL` without a default (the type's
///   implicit default: 0, '', the first enum label, …), `AUTO_INCREMENT`, `PRIMARY KEY`,
///   `SERIAL`, a generated column (`AS (…)`, stored or virtual: the source shows its value),
///   and `TIMESTAMP` unless declared `NULL` (with `explicit_defaults_for_timestamp` off, the
///   server makes it `NOT NULL` with a default). Also the form `ADD (c …, d …)`.
/// - `MODIFY` and `CHANGE [COLUMN]`: a type change converts every value (a narrower integer
///   clamps, a shorter string truncates, fewer decimals or fractional seconds round, NULL
///   becomes the implicit default under `NOT NULL`), and the statement alone does not tell
///   whether the type narrowed (the old type is not in it): always counted as writing.
/// - `CONVERT TO CHARACTER SET`: every text value is converted (a character the new set does
///   not have becomes `?`).
/// - `ADD SYSTEM VERSIONING` (MariaDB): the row start and end columns get values.
///
/// A column added as NULL (no default, `NULL`, `DEFAULT NULL`), `DROP COLUMN`, `ALTER COLUMN
/// … SET|DROP DEFAULT` (only the default for later rows), indexes, `ENGINE`, `FORCE` and
/// `[DEFAULT] CHARACTER SET` (the default for later columns) keep every value: None.
pub(crate) fn values_rewrite(lower: &[String]) -> Option<&'static str> {
    let tokens = clause_tokens(&mut lower.iter().flat_map(|w| split_word(w)).peekable());
    tokens
        .split(|t| *t == ClauseToken::Comma)
        .find_map(clause_rewrite)
}

/// A word of an `ALTER TABLE` clause (lowercase; a string literal keeps its quotes), a
/// parenthesized group (a type's length, an expression, a column list), or a comma between
/// clauses or items.
#[derive(Debug, PartialEq, Eq)]
enum ClauseToken {
    Word(String),
    Group(Vec<ClauseToken>),
    Comma,
}

/// A [`sql_words`] word cut at its parentheses and commas, each its own piece; a string literal
/// is one piece (also one written against a keyword: `DEFAULT'x'`).
fn split_word(word: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '(' | ')' | ',' | '\'' | '"') {
            if !cur.is_empty() {
                pieces.push(std::mem::take(&mut cur));
            }
            let mut piece = c.to_string();
            if matches!(c, '\'' | '"') {
                copy_literal(c, &mut chars, &mut piece);
            }
            pieces.push(piece);
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    pieces
}

/// Groups pieces ([`split_word`]) into tokens up to the `)` closing the group they are in (or
/// their end).
fn clause_tokens(
    pieces: &mut std::iter::Peekable<impl Iterator<Item = String>>,
) -> Vec<ClauseToken> {
    let mut tokens = Vec::new();
    while let Some(piece) = pieces.next() {
        match piece.as_str() {
            "(" => tokens.push(ClauseToken::Group(clause_tokens(pieces))),
            ")" => break,
            "," => tokens.push(ClauseToken::Comma),
            _ => tokens.push(ClauseToken::Word(piece)),
        }
    }
    tokens
}

/// [`values_rewrite`] for one clause.
fn clause_rewrite(clause: &[ClauseToken]) -> Option<&'static str> {
    let word = |i: usize| match clause.get(i) {
        Some(ClauseToken::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut i = 0;
    // MariaDB's `WAIT n` / `NOWAIT` may come right after the table's name.
    if word(0) == Some("wait") {
        i = 2;
    } else if word(0) == Some("nowait") {
        i = 1;
    }
    match word(i)? {
        "add" => {
            i += 1;
            let explicit = word(i) == Some("column");
            if explicit {
                i += 1;
            }
            if word(i) == Some("if") && word(i + 1) == Some("not") && word(i + 2) == Some("exists")
            {
                i += 3;
            }
            if !explicit {
                match word(i) {
                    Some("system") if word(i + 1) == Some("versioning") => {
                        return Some("ADD SYSTEM VERSIONING");
                    }
                    Some(
                        "index" | "key" | "unique" | "primary" | "constraint" | "foreign"
                        | "fulltext" | "spatial" | "partition" | "check" | "period" | "system"
                        | "vector",
                    ) => return None,
                    _ => {}
                }
            }
            let filled = match clause.get(i)? {
                // ADD [COLUMN] (c type …, d type …)
                ClauseToken::Group(columns) => columns
                    .split(|t| *t == ClauseToken::Comma)
                    .any(column_filled),
                _ => column_filled(&clause[i..]),
            };
            filled.then_some("ADD COLUMN (a value in every existing row)")
        }
        "modify" => Some("MODIFY COLUMN"),
        "change" => Some("CHANGE COLUMN"),
        "convert" if word(i + 1) == Some("to") => Some("CONVERT TO CHARACTER SET"),
        _ => None,
    }
}

/// Whether a column definition (`c type [attributes]`) gives the rows already there a value
/// that is not NULL ([`values_rewrite`]).
fn column_filled(definition: &[ClauseToken]) -> bool {
    let word = |i: usize| match definition.get(i) {
        Some(ClauseToken::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    // Attributes are words; groups (a type's length, a CHECK's expression) say nothing here.
    let declared_null = (2..definition.len()).any(|i| {
        word(i) == Some("null") && word(i - 1) != Some("not") && word(i - 1) != Some("default")
            || word(i) == Some("default") && word(i + 1) == Some("null")
    });
    if word(1) == Some("timestamp") && !declared_null {
        return true;
    }
    (2..definition.len()).any(|i| match word(i) {
        Some("default") => word(i + 1) != Some("null"),
        Some("not") => word(i + 1) == Some("null"),
        Some("generated" | "auto_increment" | "serial") => true,
        Some("as") => matches!(definition.get(i + 1), Some(ClauseToken::Group(_))),
        Some("primary") => word(i + 1) == Some("key"),
        _ => false,
    }) || word(1) == Some("serial")
}

/// Splits a statement into words, keeping backquoted identifiers whole (quotes removed), string
/// literals whole (quotes kept, so no literal reads as a keyword) and `db`.`t` together.
/// Comments are skipped ([`code_of`]): the statement may start with one (`/* app=x */ ALTER …`),
/// while the code of an executable comment (`/*!50100 PARTITION BY …*/`) is read as code.
pub(crate) fn sql_words(sql: &str) -> Vec<String> {
    let code = code_of(sql);
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = code.chars().peekable();
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
        } else if c == '\'' || c == '"' {
            cur.push(c);
            copy_literal(c, &mut chars, &mut cur);
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

/// Copies the rest of a string literal opened by `quote` (already copied) to `out`, through its
/// closing quote: a doubled quote and a backslash escape stay inside it.
fn copy_literal(
    quote: char,
    chars: &mut std::iter::Peekable<impl Iterator<Item = char>>,
    out: &mut String,
) {
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else if c == quote {
            if chars.peek() == Some(&quote) {
                out.push(quote);
                chars.next();
            } else {
                return;
            }
        }
    }
}

/// The statement's code without its comments, each comment replaced by a space: `/* … */`,
/// `-- ` (a `--` followed by a space or a control character) and `#` to the end of the line, as
/// the server reads them. An executable comment holds code the server runs (mysqldump and
/// pt-online-schema-change write them): `/*! … */` and `/*!50100 … */` (MySQL and MariaDB),
/// `/*M! … */` and `/*M!100100 … */` (MariaDB): its version is dropped and its content kept.
/// Comment marks inside string literals and quoted identifiers are text.
pub(crate) fn code_of(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    // Inside an executable comment: its `*/` ends it.
    let mut executable = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                if c == '`' {
                    // A quoted identifier: a doubled backquote stays inside it.
                    while let Some(q) = chars.next() {
                        out.push(q);
                        if q == '`' {
                            if chars.peek() == Some(&'`') {
                                out.push('`');
                                chars.next();
                            } else {
                                break;
                            }
                        }
                    }
                } else {
                    copy_literal(c, &mut chars, &mut out);
                }
            }
            '*' if executable && chars.peek() == Some(&'/') => {
                chars.next();
                executable = false;
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mariadb = chars.peek() == Some(&'M');
                let mut ahead = chars.clone();
                if mariadb {
                    ahead.next();
                }
                if ahead.peek() == Some(&'!') {
                    ahead.next();
                    // The version the code needs: up to six digits.
                    for _ in 0..6 {
                        if ahead.next_if(char::is_ascii_digit).is_none() {
                            break;
                        }
                    }
                    chars = ahead;
                    executable = true;
                } else {
                    // A plain comment (or an optimizer hint, `/*+ … */`): skipped whole.
                    let mut star = false;
                    for q in chars.by_ref() {
                        if star && q == '/' {
                            break;
                        }
                        star = q == '*';
                    }
                }
                out.push(' ');
            }
            '-' if chars.peek() == Some(&'-') => {
                let mut ahead = chars.clone();
                ahead.next();
                if ahead
                    .peek()
                    .is_none_or(|n| n.is_whitespace() || n.is_control())
                {
                    skip_line(&mut chars);
                    out.push(' ');
                } else {
                    out.push(c);
                }
            }
            '#' => {
                skip_line(&mut chars);
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Skips to the end of the line (a `--` or `#` comment); the line break ends a word.
fn skip_line(chars: &mut impl Iterator<Item = char>) {
    for c in chars {
        if c == '\n' {
            return;
        }
    }
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

    fn rewrite_of(sql: &str) -> Option<&'static str> {
        change_of(sql).and_then(|c| {
            assert_eq!(c.replaced, ids(&[("shop", "t")]), "{sql}");
            assert!(c.gone.is_empty() && c.new.is_empty(), "{sql}");
            c.rows_without_events
        })
    }

    #[test]
    fn added_columns_that_fill_the_existing_rows_replace_the_table() {
        const ADDED: Option<&str> = Some("ADD COLUMN (a value in every existing row)");
        for sql in [
            "ALTER TABLE t ADD COLUMN c INT NOT NULL DEFAULT 5",
            "ALTER TABLE t ADD COLUMN c varchar(20) DEFAULT 'x'",
            "ALTER TABLE t ADD COLUMN c varchar(20) DEFAULT'x,y'",
            "ALTER TABLE t ADD COLUMN c varchar(20) COMMENT'a,b'NOT NULL",
            "ALTER TABLE t ADD COLUMN c bit(1) DEFAULT b'1'",
            "alter table t add c int default -1 after id",
            "ALTER TABLE t ADD COLUMN c INT DEFAULT(5)",
            "ALTER TABLE t ADD COLUMN c INT DEFAULT (id * 2)",
            "ALTER TABLE t ADD COLUMN c datetime DEFAULT CURRENT_TIMESTAMP",
            "ALTER TABLE t ADD COLUMN c INT NOT NULL",
            "ALTER TABLE t ADD COLUMN c enum('a','b') not null",
            "ALTER TABLE t ADD COLUMN c INT NOT NULL COMMENT 'default null'",
            "ALTER TABLE t ADD COLUMN c INT GENERATED ALWAYS AS (id + 1) STORED",
            "ALTER TABLE t ADD COLUMN c INT AS (id + 1) VIRTUAL",
            "ALTER TABLE t ADD COLUMN c INT AS(id+1) PERSISTENT",
            "ALTER TABLE t ADD COLUMN c bigint AUTO_INCREMENT UNIQUE",
            "ALTER TABLE t ADD COLUMN c SERIAL",
            "ALTER TABLE t ADD COLUMN c timestamp",
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS c INT DEFAULT 5",
            "ALTER TABLE t ADD IF NOT EXISTS c INT DEFAULT 5",
            "ALTER TABLE t ADD COLUMN (a int, b decimal(10, 2) NOT NULL DEFAULT 0.5)",
            "ALTER TABLE t ADD INDEX i (v), ADD COLUMN c INT DEFAULT 0, ALGORITHM=INPLACE",
            "ALTER TABLE t ADD COLUMN a int NULL, ADD COLUMN b char(1) DEFAULT 'y'",
            "ALTER TABLE `shop`.`t` WAIT 5 ADD COLUMN `c` INT NOT NULL DEFAULT 5",
            "ALTER ONLINE TABLE IF EXISTS t ADD COLUMN c INT NOT NULL DEFAULT 5",
        ] {
            assert_eq!(rewrite_of(sql), ADDED, "{sql}");
        }
        // Statements that rewrite stored values.
        assert_eq!(
            rewrite_of("ALTER TABLE t MODIFY COLUMN v tinyint"),
            Some("MODIFY COLUMN")
        );
        assert_eq!(
            rewrite_of("ALTER TABLE t MODIFY v varchar(5) NOT NULL"),
            Some("MODIFY COLUMN")
        );
        assert_eq!(
            rewrite_of("ALTER TABLE t CHANGE COLUMN v w decimal(5,1)"),
            Some("CHANGE COLUMN")
        );
        assert_eq!(
            rewrite_of("ALTER TABLE t CONVERT TO CHARACTER SET latin1"),
            Some("CONVERT TO CHARACTER SET")
        );
        assert_eq!(
            rewrite_of("ALTER TABLE t ADD SYSTEM VERSIONING"),
            Some("ADD SYSTEM VERSIONING")
        );
        // Renamed as well: the new name is loaded again.
        let c = change_of("ALTER TABLE t ADD COLUMN c INT DEFAULT 5, RENAME TO u").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "u")]));
        assert_eq!(
            (c.gone, c.new),
            (ids(&[("shop", "t")]), ids(&[("shop", "u")]))
        );
        assert_eq!(c.rows_without_events, ADDED);
        let c = change_of("ALTER TABLE t RENAME TO t, MODIFY v bigint").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));

        // Columns added NULL and clauses that keep every value: nothing to load again.
        for sql in [
            "ALTER TABLE t ADD COLUMN c INT",
            "ALTER TABLE t ADD c INT NULL",
            "ALTER TABLE t ADD COLUMN c INT DEFAULT NULL",
            "ALTER TABLE t ADD COLUMN c varchar(10) NULL DEFAULT NULL COMMENT 'not null later'",
            "ALTER TABLE t ADD COLUMN c INT CHECK (c IS NOT NULL OR c > 0)",
            "ALTER TABLE t ADD COLUMN c varchar(9) COMMENT'x, MODIFY y int'",
            "ALTER TABLE t ADD COLUMN c varchar(9) DEFAULT NULL COMMENT \"a, NOT NULL\"",
            "ALTER TABLE t ADD COLUMN c timestamp NULL",
            "ALTER TABLE t ADD COLUMN c INT FIRST, ADD COLUMN d text AFTER c",
            "ALTER TABLE t ADD COLUMN (a int, b text)",
            "ALTER TABLE t ADD INDEX i (c), ADD UNIQUE KEY u (d)",
            "ALTER TABLE t ADD PRIMARY KEY (id)",
            "ALTER TABLE t ADD CONSTRAINT c CHECK (v > 0)",
            "ALTER TABLE t ADD FOREIGN KEY (v) REFERENCES u (id)",
            "ALTER TABLE t DROP COLUMN c",
            "ALTER TABLE t ALTER COLUMN v SET DEFAULT 7",
            "ALTER TABLE t ALTER v DROP DEFAULT",
            "ALTER TABLE t DEFAULT CHARACTER SET utf8mb4",
            "ALTER TABLE t CHARACTER SET = latin1",
            "ALTER TABLE t ENGINE=InnoDB",
            "ALTER TABLE t FORCE",
            "ALTER TABLE t COMMENT = 'modify later'",
            "ALTER TABLE t RENAME COLUMN a TO b",
        ] {
            assert_eq!(change_of(sql), None, "{sql}");
        }
    }

    #[test]
    fn comments_before_and_inside_statements_are_skipped() {
        let words = |sql: &str| sql_words(sql);
        assert_eq!(
            words("/* app=x */ ALTER TABLE t ADD c int"),
            ["ALTER", "TABLE", "t", "ADD", "c", "int"]
        );
        assert_eq!(words("-- c\nALTER TABLE t"), ["ALTER", "TABLE", "t"]);
        assert_eq!(words("--\tc\nDROP TABLE t"), ["DROP", "TABLE", "t"]);
        assert_eq!(words("# c\nALTER TABLE t"), ["ALTER", "TABLE", "t"]);
        assert_eq!(
            words("/* a */ /* b */\n-- c\n#d\nRENAME/*x*/TABLE a TO b"),
            ["RENAME", "TABLE", "a", "TO", "b"]
        );
        // `--` without a space after it is two minus signs.
        assert_eq!(words("SELECT 5--3"), ["SELECT", "5--3"]);
        // Executable comments hold code.
        assert_eq!(
            words("/*!40000 ALTER TABLE `t` DISABLE KEYS */;"),
            ["ALTER", "TABLE", "t", "DISABLE", "KEYS"]
        );
        assert_eq!(
            words("/*M!100100 ALTER TABLE t ADD COLUMN c INT DEFAULT 5*/"),
            ["ALTER", "TABLE", "t", "ADD", "COLUMN", "c", "INT", "DEFAULT", "5"]
        );
        assert_eq!(
            words("ALTER TABLE t /*!50100 TRUNCATE PARTITION p0 */"),
            ["ALTER", "TABLE", "t", "TRUNCATE", "PARTITION", "p0"]
        );
        assert_eq!(words("/*!DROP TABLE t*/"), ["DROP", "TABLE", "t"]);
        // Optimizer hints are comments.
        assert_eq!(words("ALTER /*+ hint */ TABLE t"), ["ALTER", "TABLE", "t"]);
        // Comment marks in literals and quoted names are text; literals are one word.
        assert_eq!(
            words("ALTER TABLE `a--b#c/*d` ADD c int COMMENT 'x -- y /* z */ # w', ADD d int"),
            [
                "ALTER",
                "TABLE",
                "a--b#c/*d",
                "ADD",
                "c",
                "int",
                "COMMENT",
                "'x -- y /* z */ # w',",
                "ADD",
                "d",
                "int"
            ]
        );
        assert_eq!(
            words(r#"X 'it''s \' -- no' "a "" b" y"#),
            ["X", r#"'it''s \' -- no'"#, r#""a "" b""#, "y"]
        );

        // Each kind of statement is read behind a comment.
        let c = change_of("/* app=x */ ALTER TABLE t ADD COLUMN c INT NOT NULL DEFAULT 5").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t")]));
        let c = change_of("-- cut-over\nRENAME TABLE t TO t_old, t_new TO t").unwrap();
        assert_eq!(c.replaced, ids(&[("shop", "t_old"), ("shop", "t")]));
        let c = change_of("# gone\nDROP TABLE IF EXISTS t").unwrap();
        assert_eq!(c.gone, ids(&[("shop", "t")]));
        let c = change_of("/* x */ CREATE TABLE t2 (id int)").unwrap();
        assert_eq!(c.new, ids(&[("shop", "t2")]));
        let c = change_of("/* x */ ALTER TABLE t /*!50100 TRUNCATE PARTITION p0 */").unwrap();
        assert_eq!(c.rows_without_events, Some("TRUNCATE PARTITION"));
        // A plain comment's words are not code.
        assert_eq!(
            change_of("ALTER TABLE t ENGINE=InnoDB /* DROP PARTITION p0 */"),
            None
        );
        assert_eq!(
            change_of("ALTER TABLE t ADD COLUMN c INT -- NOT NULL DEFAULT 5"),
            None
        );
        assert_eq!(
            target_of("/* x */ INSERT INTO t VALUES (1)"),
            Some(TableId::new("shop", "t"))
        );
    }
}
