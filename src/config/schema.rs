//! The file as written: serde types that mirror the TOML one to one, and the mapping of
//! toml/serde errors to `Problem`s that name the key (e.g. `peer[1].raft`).
//!
//! Values that need checking with a precise message (addresses, durations, paths) stay
//! text here; `validate` turns them into typed values and reports every bad one, where
//! serde would stop at the first.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

use super::{FailbackCommit, FailbackMode, FencingMode, Problem, Profile};
use crate::types::{NodeId, NodeRole};

/// How many times we re-run the schema pass after blanking a bad line, to report more than
/// the first structural problem in one go.
const MAX_SCHEMA_PASSES: usize = 32;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub cluster: String,
    pub data_dir: String,
    pub secret_file: Option<String>,
    pub previous_secret_file: Option<String>,
    #[serde(default)]
    pub profile: Profile,
    pub preferred_primary: Option<NodeId>,
    pub node: RawNode,
    pub listen: RawListen,
    #[serde(rename = "peer", default)]
    pub peers: Vec<RawPeer>,
    #[serde(default)]
    pub timing: RawTiming,
    #[serde(default)]
    pub resource: RawResource,
    #[serde(default)]
    pub failback: RawFailback,
    pub postgres: Option<RawPostgres>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub id: NodeId,
    pub role: NodeRole,
    pub priority: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub raft: AddrText,
    pub heartbeat: AddrText,
    pub api: AddrText,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub id: NodeId,
    pub role: NodeRole,
    pub priority: Option<u32>,
    pub raft: AddrText,
    pub heartbeat: HeartbeatLinks,
    pub api: AddrText,
    pub service: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    pub heartbeat_interval: Option<DurationText>,
    pub suspect_after: Option<DurationText>,
    pub dead_after: Option<DurationText>,
    pub raft_heartbeat: Option<DurationText>,
    pub election_timeout_min: Option<DurationText>,
    pub election_timeout_max: Option<DurationText>,
    pub lease: Option<DurationText>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource {
    pub promote: Option<String>,
    pub demote: Option<String>,
    pub monitor: Option<String>,
    pub fence: Option<String>,
    pub rejoin: Option<String>,
    pub follow: Option<String>,
    pub notify: Option<String>,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub snapshot: Option<String>,
    pub verify: Option<String>,
    pub hook_timeout: Option<DurationText>,
    pub monitor_interval: Option<DurationText>,
    pub failure_threshold: Option<u32>,
    pub local_restarts: Option<u32>,
    pub restart_window: Option<DurationText>,
    pub fencing: Option<FencingMode>,
    pub max_lag_on_failover: Option<u64>,
    pub max_service_lag_bytes: Option<u64>,
    pub agent: Option<super::AgentKind>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    pub data_dir: Option<String>,
    pub bin_dir: Option<String>,
    pub port: Option<u16>,
    pub listen: Option<String>,
    pub os_user: Option<String>,
    pub superuser: Option<String>,
    pub superuser_password_file: Option<String>,
    pub replication_user: Option<String>,
    pub replication_password_file: Option<String>,
    pub rejoin: Option<super::PostgresRejoin>,
    pub log_file: Option<String>,
    pub database: Option<String>,
    pub action_timeout: Option<DurationText>,
    pub synchronous: Option<super::PostgresSynchronous>,
    pub verify_tables: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFailback {
    pub mode: Option<FailbackMode>,
    pub delay: Option<DurationText>,
    pub commit: Option<FailbackCommit>,
    pub verify_checks: Option<u32>,
    pub verify_timeout: Option<DurationText>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub token_file: Option<String>,
    pub protect_reads: Option<bool>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_ca_file: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub snapshot_every: Option<u64>,
    pub keep_logs: Option<u64>,
    pub max_value_bytes: Option<u64>,
    pub max_kv_bytes: Option<u64>,
}

/// An address as written; parsed in `validate` so the message names the key.
#[derive(Debug, Clone)]
pub(super) struct AddrText(pub String);

/// A duration as written ("150ms"); parsed in `validate`.
#[derive(Debug, Clone)]
pub(super) struct DurationText(pub String);

/// `heartbeat = "ip:port"` or `heartbeat = ["ip:port", "ip:port"]` (one entry per link).
#[derive(Debug, Clone)]
pub(super) struct HeartbeatLinks(pub Vec<String>);

/// A visitor that accepts only a string, and whose `expecting` text tells the operator which
/// kind of string (serde puts it in "invalid type: integer `100`, expected ...").
struct StringOf(&'static str);

impl<'de> Visitor<'de> for StringOf {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

const EXPECT_ADDR: &str = "an \"IP:port\" string such as \"127.0.0.1:7411\"";
const EXPECT_DURATION: &str = "a duration string such as \"150ms\" or \"1.5s\"";
const EXPECT_LINKS: &str =
    "an \"IP:port\" string or a list of them, such as [\"10.0.0.1:7421\", \"10.1.0.1:7421\"]";

impl<'de> Deserialize<'de> for AddrText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StringOf(EXPECT_ADDR)).map(AddrText)
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StringOf(EXPECT_DURATION))
            .map(DurationText)
    }
}

struct LinksVisitor;

impl<'de> Visitor<'de> for LinksVisitor {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_LINKS)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(vec![v.to_owned()])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut links = Vec::new();
        // The element count is bounded in `validate` (MAX_HEARTBEAT_LINKS); the file size
        // bound (MAX_CONFIG_BYTES) already bounds this loop.
        while let Some(link) = seq.next_element_seed(StringSeed)? {
            links.push(link);
        }
        Ok(links)
    }
}

/// Deserializes one list element with the address-specific `expecting` text.
struct StringSeed;

impl<'de> de::DeserializeSeed<'de> for StringSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(StringOf(EXPECT_ADDR))
    }
}

impl<'de> Deserialize<'de> for HeartbeatLinks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LinksVisitor).map(HeartbeatLinks)
    }
}

/// Parses the text into the raw schema. On failure returns every structural problem we can
/// find: after each serde error on a `key = value` line we blank that line (or, for a
/// required key, put a placeholder value there) and try again, at most MAX_SCHEMA_PASSES
/// times, so one run reports all misspelled keys and wrongly typed values, not only the
/// first. The search ends when no substitute gets past a problem (e.g. a required key that
/// is missing: there is no line to change).
pub(super) fn parse(text: &str) -> Result<RawConfig, Vec<Problem>> {
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(vec![syntax_problem(text, &e)]);
    }
    let mut work = text.to_owned();
    let mut problems: Vec<Problem> = Vec::new();
    for _ in 0..MAX_SCHEMA_PASSES {
        let err = match toml::from_str::<RawConfig>(&work) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => return Err(problems),
            Err(err) => err,
        };
        let located = locate(&work, &err);
        let problem = schema_problem(&located, &err);
        if problems.iter().any(|p| p.key == problem.key) {
            break;
        }
        let Some(line) = located.blankable_line else {
            problems.push(problem);
            break;
        };
        let next = substitutes(&work, line).into_iter().find(|candidate| {
            // A substitute must keep the syntax valid and move the first error elsewhere.
            candidate.parse::<toml::Table>().is_ok()
                && match toml::from_str::<RawConfig>(candidate) {
                    Ok(_) => true,
                    Err(e) => locate(candidate, &e).key != problem.key,
                }
        });
        problems.push(problem);
        match next {
            Some(candidate) => work = candidate,
            None => break,
        }
    }
    Err(problems)
}

/// The text with line `index` blanked, then with its value replaced by an empty string and
/// by the number 1 (placeholders for required keys; their values are never used, since a
/// text with schema problems is rejected).
fn substitutes(text: &str, index: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Some(line) = text.lines().nth(index) else {
        return out;
    };
    for replacement in ["", "\"\"", "1"] {
        let new_line = match (replacement, line.split_once('=')) {
            ("", _) => String::new(),
            (value, Some((key, _))) => format!("{key}= {value}"),
            (_, None) => continue,
        };
        if let Some(candidate) = replace_line(text, index, &new_line) {
            out.push(candidate);
        }
    }
    out
}

fn syntax_problem(text: &str, err: &toml::de::Error) -> Problem {
    let (line, column) = err
        .span()
        .map(|span| line_col(text, span.start))
        .unwrap_or((1, 1));
    Problem::new(
        format!("line {line}"),
        format!(
            "TOML syntax error at line {line}, column {column}: {}",
            one_line(err.message())
        ),
        "correct the syntax (strings need double quotes, tables look like [name], peers like [[peer]])",
    )
}

/// Where a serde error points: the dotted key path and whether it sits on a `key = value`
/// line we may blank to look for more problems.
struct Located {
    key: String,
    section: String,
    line: usize,
    column: usize,
    blankable_line: Option<usize>,
}

fn locate(text: &str, err: &toml::de::Error) -> Located {
    let offset = err.span().map(|s| s.start).unwrap_or(0);
    let (line, column) = line_col(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let line_index = line.saturating_sub(1);

    // The table this line belongs to: the last header at or above it. `[[peer]]` headers
    // are counted so the path names the entry: the first is peer[0].
    let mut section = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for raw_line in lines.iter().take(line_index + 1) {
        let trimmed = raw_line.trim();
        if let Some(name) = header_name(trimmed, "[[", "]]") {
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    array_counts.push((name.clone(), 1));
                    1
                }
            };
            section = format!("{name}[{}]", count - 1);
        } else if let Some(name) = header_name(trimmed, "[", "]") {
            section = name;
        }
    }

    let this_line = lines.get(line_index).copied().unwrap_or("");
    let trimmed = this_line.trim_start();
    let header_here = header_name(trimmed, "[[", "]]").or_else(|| header_name(trimmed, "[", "]"));
    let named_field = backticked_field(err.message());
    let unknown_field = err.message().starts_with("unknown field");
    // A missing top-level key: toml points at the root table, which starts at offset 0
    // (empty span when the file begins with a table header).
    let document_level = err.message().starts_with("missing field")
        && err
            .span()
            .is_some_and(|s| s.start == 0 && (s.is_empty() || header_here.is_none()));
    let (key, blankable_line) = if document_level {
        section.clear();
        (named_field.unwrap_or_default(), None)
    } else if let Some(header) = header_here {
        if unknown_field {
            // `[bogus]` or `[timing.extra]`: the unknown key is the table itself, and it
            // sits in the table above it.
            section = match header.rsplit_once('.') {
                Some((parent, _)) => parent.to_owned(),
                None => String::new(),
            };
            (header, None)
        } else {
            // "missing field `x`": the span covers the table's header.
            (join(&section, named_field.as_deref().unwrap_or("")), None)
        }
    } else {
        let (line_key, inline_parent) = key_on_line(this_line, column);
        let field = if unknown_field {
            named_field.or(line_key)
        } else {
            line_key
        };
        let parent = join(&section, inline_parent.as_deref().unwrap_or(""));
        let key = join(&parent, field.as_deref().unwrap_or(""));
        let blank = (this_line.contains('=') && inline_parent.is_none()).then_some(line_index);
        (key, blank)
    };
    let mut key = key;
    if key.is_empty() {
        key = format!("line {line}");
    }
    Located {
        key,
        section,
        line,
        column,
        blankable_line,
    }
}

fn schema_problem(at: &Located, err: &toml::de::Error) -> Problem {
    let message = one_line(err.message());
    let table = if at.section.is_empty() {
        "the top level".to_owned()
    } else {
        format!("[{}]", at.section)
    };
    let where_ = format!("line {}, column {}", at.line, at.column);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, expected) = match rest.split_once(", expected ") {
            Some((f, e)) => (f, e),
            None => (rest, ""),
        };
        let valid = expected.strip_prefix("one of ").unwrap_or(expected);
        return Problem::new(
            at.key.clone(),
            format!("unknown key {field} in {table} ({where_})"),
            format!("remove it or correct the spelling; valid keys there: {valid}"),
        );
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return Problem::new(
            at.key.clone(),
            format!("required key {field} is missing from {table}"),
            format!("add {} = ... to {table}", field.trim_matches('`')),
        );
    }
    if message.starts_with("unknown variant") {
        return Problem::new(
            at.key.clone(),
            format!("{message} ({where_})"),
            "use one of the listed values, spelled exactly (lowercase)",
        );
    }
    let fix = match message.split_once(", expected ") {
        Some((_, expected)) => format!("write {expected}"),
        None => "give the value the type the message names".to_owned(),
    };
    Problem::new(at.key.clone(), format!("{message} ({where_})"), fix)
}

/// `[name]` / `[[name]]` header → "name" (quotes and spaces removed).
fn header_name(trimmed: &str, open: &str, close: &str) -> Option<String> {
    let inner = trimmed.strip_prefix(open)?;
    let end = inner.find(close)?;
    let inner = &inner[..end];
    if inner.starts_with('[') || inner.is_empty() {
        return None;
    }
    Some(
        inner
            .split('.')
            .map(|part| part.trim().trim_matches('"').trim_matches('\''))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The key of the `key = value` pair the 1-based `column` falls in, and, for a value inside
/// an inline table (`node = { id = 1 }`), the inline table's own key.
fn key_on_line(line: &str, column: usize) -> (Option<String>, Option<String>) {
    let cut = line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    let before = &line[..cut];
    let clean = |k: &str| -> Option<String> {
        let k = k.trim().trim_matches('"').trim_matches('\'');
        (!k.is_empty()).then(|| k.to_owned())
    };
    let first_key = line.split('=').next().and_then(clean);
    match before.rfind('{') {
        Some(brace) => {
            // Inside an inline table: the inner key is the last `k =` before the column.
            let inner = &before[brace + 1..];
            let inner_key = inner
                .rsplit(',')
                .next()
                .and_then(|seg| seg.split('=').next())
                .and_then(clean);
            let inner_key = inner_key.or_else(|| {
                line[cut..]
                    .split('=')
                    .next()
                    .and_then(|k| clean(k.trim_end_matches([',', '}'])))
            });
            (inner_key, first_key)
        }
        None => (first_key, None),
    }
}

fn backticked_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (false, true) => parent.to_owned(),
        (false, false) => format!("{parent}.{child}"),
    }
}

fn replace_line(text: &str, index: usize, new_line: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + new_line.len());
    let mut found = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == index {
            found = true;
            out.push_str(new_line);
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}
