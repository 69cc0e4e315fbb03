//! Pure text for the PostgreSQL agent: LSNs and timelines as PostgreSQL prints them, the
//! configuration files the agent owns, and quoting for the three syntaxes it writes
//! (SQL literals, postgresql.conf strings, libpq connection strings).

/// An LSN as PostgreSQL prints it (`16/B374D848`) as a byte position: `(hi << 32) + lo`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// A byte position as PostgreSQL prints an LSN (`16/B374D848`).
pub fn format_lsn(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xFFFF_FFFF)
}

/// The timeline of a WAL file name (`000000030000000000000005` is on timeline 3).
pub fn timeline_of_walfile(name: &str) -> Option<u64> {
    let tli = name.get(..8)?;
    u64::from_str_radix(tli, 16).ok().filter(|t| *t > 0)
}

/// A SQL string literal: `'...'` with every `'` doubled (standard_conforming_strings is on
/// by default since 9.1; a backslash is then an ordinary character).
pub fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A postgresql.conf string value: `'...'` with every `'` doubled.
pub fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A libpq connection-string value: `'...'` with `\` and `'` escaped by a backslash.
pub fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Where a standby streams from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
}

/// `primary_conninfo` for a standby of `upstream`, naming itself `application_name`
/// (what `synchronous_standby_names` and `pg_stat_replication` show).
pub fn primary_conninfo(upstream: &Upstream<'_>, application_name: &str) -> String {
    format!(
        "host={} port={} user={} password={} application_name={} connect_timeout=5",
        conninfo_value(upstream.host),
        upstream.port,
        conninfo_value(upstream.user),
        conninfo_value(upstream.password),
        conninfo_value(application_name),
    )
}

/// The line the agent appends to postgresql.conf once (at initdb): everything it manages is
/// in `quorate.conf`, which it rewrites whenever the role changes.
pub const INCLUDE_LINE: &str = "include_if_exists = 'quorate.conf'";

/// `quorate.conf`: the settings replication and pg_rewind need, and the standby's upstream.
pub fn quorate_conf(
    listen: &str,
    port: u16,
    application_name: &str,
    upstream: Option<&Upstream<'_>>,
    synchronous_standby_names: &str,
) -> String {
    let conninfo = upstream
        .map(|u| primary_conninfo(u, application_name))
        .unwrap_or_default();
    format!(
        "# Written by quorate's postgres agent at every start, promote, demote, follow and \
         rejoin:\n# edits here are lost. Put your own settings in postgresql.conf (before the \
         include line)\n# or postgresql.auto.conf.\n\
         listen_addresses = {listen}\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         wal_level = replica\n\
         wal_log_hints = on\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         wal_keep_size = '1GB'\n\
         recovery_target_timeline = 'latest'\n\
         cluster_name = {name}\n\
         primary_conninfo = {conninfo}\n\
         synchronous_standby_names = {sync}\n",
        listen = conf_string(listen),
        sync = conf_string(synchronous_standby_names),
        name = conf_string(application_name),
        conninfo = conf_string(&conninfo),
    )
}

/// How commits wait for standbys (`[postgres] synchronous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Asynchronous replication: a commit waits for no standby.
    Off,
    /// A commit waits for one of the standbys streaming now; with none streaming the
    /// primary goes asynchronous (and says so) rather than stop taking writes.
    Quorum,
    /// A commit waits for one of every other voter's standby, streaming or not: with none
    /// connected, commits wait.
    Strict,
}

/// `synchronous_standby_names` for `mode`: `ANY 1 (...)` over the standbys streaming now
/// (quorum) or every other voter's standby (strict); empty (asynchronous) otherwise.
pub fn synchronous_standby_names(
    mode: SyncMode,
    streaming: &[String],
    all_standbys: &[String],
) -> String {
    let mut names: Vec<&String> = match mode {
        SyncMode::Off => return String::new(),
        // Only quorate's standbys count (a pg_basebackup in flight streams too).
        SyncMode::Quorum => streaming
            .iter()
            .filter(|n| all_standbys.contains(n))
            .collect(),
        SyncMode::Strict => all_standbys.iter().collect(),
    };
    names.retain(|n| is_plain_name(n));
    names.sort();
    names.dedup();
    if names.is_empty() {
        return String::new();
    }
    let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    format!("ANY 1 ({})", list.join(", "))
}

/// An application name that needs no quoting in `synchronous_standby_names` (the agent
/// names standbys `node<ID>`; anything else connected is not one of quorate's).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `pg_hba.conf` written at initdb: local connections by OS user (peer), everything over TCP
/// (SQL and replication) with SCRAM passwords.
pub fn hba_conf() -> String {
    "# Written by quorate's postgres agent at initdb; replicas get it with their base backup.\n\
     # TYPE  DATABASE     USER  ADDRESS  METHOD\n\
     local   all          all            peer\n\
     host    all          all   all      scram-sha-256\n\
     host    replication  all   all      scram-sha-256\n"
        .to_string()
}

/// The host to connect to for `listen_addresses`: a wildcard means loopback, else the first
/// address listed.
pub fn connect_host(listen: &str) -> String {
    let first = listen
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("*");
    match first {
        "*" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "::1".to_string(),
        other => other.to_string(),
    }
}

/// `HOST:PORT` (or `[V6]:PORT`) of a `[[peer]] service` address.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// `Database cluster state` in `pg_controldata` output.
pub fn cluster_state(controldata: &str) -> Option<&str> {
    controldata
        .lines()
        .find_map(|l| l.strip_prefix("Database cluster state:").map(str::trim))
}

/// Whether a cluster in `state` was shut down cleanly (pg_rewind's precondition).
pub fn cleanly_shut_down(state: &str) -> bool {
    state == "shut down" || state == "shut down in recovery"
}

/// What `postmaster.pid` says: the postmaster's pid (line 1) and its status (line 8:
/// `starting`, `stopping`, `ready` or `standby`). None when the file is not (yet) whole.
pub fn postmaster_status(pid_file: &str) -> Option<(i32, &str)> {
    let mut lines = pid_file.lines();
    let pid = lines
        .next()?
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)?;
    let status = lines.nth(6)?.trim();
    (!status.is_empty()).then_some((pid, status))
}

/// Whether a postmaster in `status` accepts connections: what `pg_ctl start -w` waits for.
pub fn accepts_connections(status: &str) -> bool {
    status == "ready" || status == "standby"
}

/// Bytes pg_rewind says it copied: the last `N/M kB (P%) copied` line its `--progress`
/// prints (N kB), or None when it printed none (nothing copied, or no progress asked).
pub fn rewind_copied_bytes(output: &str) -> Option<u64> {
    output
        .split(['\r', '\n'])
        .filter(|l| l.contains(" kB (") && l.trim_end().ends_with("copied"))
        .filter_map(|l| {
            let done = l.trim().split('/').next()?.trim();
            done.parse::<u64>().ok()
        })
        .next_back()
        .map(|kb| kb.saturating_mul(1024))
}

pub use crate::util::human_bytes;

/// The name of a failback's protective restore point (`pg_create_restore_point`), unique per
/// epoch and second, within PostgreSQL's 63-byte limit.
pub fn restore_point_name(epoch: u64, unix_secs: u64) -> String {
    format!("quorate_failback_e{epoch}_{unix_secs}")
}

/// One table's data as verify sums it up on one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSum {
    /// The quoted, qualified name (`"public"."t"`).
    pub table: String,
    pub rows: i64,
    /// Sum of a 64-bit hash of every row's text (order-independent), as text.
    pub checksum: String,
}

/// The tables whose sums differ between `home` and `other` (by name; a table missing on one
/// side differs), each as one sentence naming both sides.
pub fn table_differences(
    home: &[TableSum],
    other: &[TableSum],
    home_name: &str,
    other_name: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for h in home {
        match other.iter().find(|o| o.table == h.table) {
            None => out.push(format!("table {} is missing on {other_name}", h.table)),
            Some(o) if o.rows != h.rows || o.checksum != h.checksum => out.push(format!(
                "table {} differs: {home_name} has {} rows (checksum {}), {other_name} {} rows (checksum {})",
                h.table, h.rows, h.checksum, o.rows, o.checksum
            )),
            Some(_) => {}
        }
    }
    for o in other {
        if !home.iter().any(|h| h.table == o.table) {
            out.push(format!("table {} is missing on {home_name}", o.table));
        }
    }
    out
}

/// A configured `[postgres] verify_tables` entry (`t` or `s.t`, plain names) quoted and
/// qualified (`"public"."t"`).
pub fn quoted_table(name: &str) -> String {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        table.replace('"', "\"\"")
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn rewind_progress_gives_the_bytes_copied() {
        let out = "pg_rewind: connected to server\npg_rewind: need to copy 52 MB (total source directory size is 70 MB)\n    0/53248 kB (0%) copied\r53248/53248 kB (100%) copied\npg_rewind: Done!\n";
        assert_eq!(rewind_copied_bytes(out), Some(53248 * 1024));
        assert_eq!(rewind_copied_bytes("pg_rewind: no rewind required\n"), None);
        assert_eq!(rewind_copied_bytes("x/y kB (z%) copied"), None);
    }

    #[test]
    fn lsns_print_as_postgresql_prints_them() {
        for t in ["16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF", "0/3000148"] {
            assert_eq!(format_lsn(parse_lsn(t).unwrap()), t);
        }
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(1_300_000), "1.2 MiB");
    }

    #[test]
    fn restore_point_names_fit_postgresql() {
        assert!(restore_point_name(u64::MAX, u64::MAX).len() <= 63);
        assert_eq!(restore_point_name(5, 17), "quorate_failback_e5_17");
    }

    #[test]
    fn verify_names_each_table_that_differs() {
        let sum = |t: &str, rows, c: &str| TableSum {
            table: t.into(),
            rows,
            checksum: c.into(),
        };
        let home = [sum("a", 3, "10"), sum("b", 2, "7"), sum("c", 1, "1")];
        let other = [sum("a", 3, "10"), sum("b", 2, "8"), sum("d", 1, "1")];
        let d = table_differences(&home, &other, "home node 1", "node 2");
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(
            d[0].starts_with(
                "table b differs: home node 1 has 2 rows (checksum 7), node 2 2 rows (checksum 8)"
            ),
            "{d:?}"
        );
        assert!(d[1].contains("c is missing on node 2"));
        assert!(d[2].contains("d is missing on home node 1"));
        assert!(table_differences(&home, &home, "x", "y").is_empty());
    }

    #[test]
    fn configured_tables_are_quoted_and_qualified() {
        assert_eq!(quoted_table("t"), "\"public\".\"t\"");
        assert_eq!(quoted_table("s.t"), "\"s\".\"t\"");
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsns_parse_as_byte_positions() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/3000148"), Some(0x300_0148));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "/", "1/", "/1", "x/1", "1/2/3", "123456789/0", "1"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn every_lsn_round_trips(v in any::<u64>()) {
            let text = format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF);
            prop_assert_eq!(parse_lsn(&text), Some(v));
        }

        #[test]
        fn quoting_never_lets_a_quote_out(s in ".{0,40}") {
            let lit = sql_literal(&s);
            let inner = &lit[1..lit.len() - 1];
            prop_assert_eq!(inner.replace("''", ""). contains('\''), false);
            let ci = conninfo_value(&s);
            let inner = &ci[1..ci.len() - 1];
            let mut escaped = false;
            for ch in inner.chars() {
                if escaped { escaped = false; continue; }
                if ch == '\\' { escaped = true; continue; }
                prop_assert_ne!(ch, '\'');
            }
            prop_assert!(!escaped);
        }
    }

    #[test]
    fn timelines_come_from_wal_file_names() {
        assert_eq!(timeline_of_walfile("000000030000000000000005"), Some(3));
        assert_eq!(timeline_of_walfile("0000001A0000000000000005"), Some(26));
        assert_eq!(timeline_of_walfile("00000000"), None);
        assert_eq!(timeline_of_walfile("xyz"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(sql_literal("it's"), "'it''s'");
        assert_eq!(conf_string("a'b"), "'a''b'");
        assert_eq!(conninfo_value(r"p\w'd"), r"'p\\w\'d'");
    }

    #[test]
    fn a_standby_conf_names_its_upstream_and_a_primary_conf_none() {
        let up = Upstream {
            host: "10.0.0.1",
            port: 5433,
            user: "replicator",
            password: "s'cret",
        };
        let standby = quorate_conf("*", 5432, "node2", Some(&up), "");
        assert!(standby.contains("port = 5432\n"), "{standby}");
        assert!(standby.contains("wal_log_hints = on\n"), "{standby}");
        let line = standby
            .lines()
            .find(|l| l.starts_with("primary_conninfo = "))
            .unwrap_or_default();
        assert!(line.contains("host=''10.0.0.1'' port=5433"), "{line}");
        assert!(line.contains("application_name=''node2''"), "{line}");
        assert!(line.contains(r"password=''s\''cret''"), "{line}");
        let primary = quorate_conf("*", 5432, "node1", None, "ANY 1 (node2, node3)");
        assert!(primary.contains("primary_conninfo = ''\n"), "{primary}");
        assert!(
            primary.contains("synchronous_standby_names = 'ANY 1 (node2, node3)'\n"),
            "{primary}"
        );
    }

    #[test]
    fn connect_hosts_and_service_addresses() {
        assert_eq!(connect_host("*"), "127.0.0.1");
        assert_eq!(connect_host("10.0.0.5, 127.0.0.1"), "10.0.0.5");
        assert_eq!(connect_host("::"), "::1");
        assert_eq!(
            split_host_port("127.0.0.1:5433"),
            Some(("127.0.0.1".into(), 5433))
        );
        assert_eq!(split_host_port("[::1]:5432"), Some(("::1".into(), 5432)));
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port("host"), None);
    }

    #[test]
    fn synchronous_names_follow_the_mode() {
        let streaming = vec!["node3".to_string(), "pg_basebackup".to_string()];
        let all = vec!["node2".to_string(), "node3".to_string()];
        assert_eq!(
            synchronous_standby_names(SyncMode::Off, &streaming, &all),
            ""
        );
        assert_eq!(
            synchronous_standby_names(SyncMode::Quorum, &streaming, &all),
            "ANY 1 (node3)"
        );
        assert_eq!(synchronous_standby_names(SyncMode::Quorum, &[], &all), "");
        assert_eq!(
            synchronous_standby_names(SyncMode::Strict, &[], &all),
            "ANY 1 (node2, node3)"
        );
        assert_eq!(
            synchronous_standby_names(
                SyncMode::Quorum,
                &["bad name'".to_string()],
                &["bad name'".to_string()]
            ),
            ""
        );
    }

    #[test]
    fn controldata_state() {
        let out = "pg_control version number:            1300\nDatabase cluster state:               in production\n";
        assert_eq!(cluster_state(out), Some("in production"));
        assert!(!cleanly_shut_down("in production"));
        assert!(cleanly_shut_down("shut down in recovery"));
    }

    #[test]
    fn postmaster_pid_files_give_the_pid_and_status() {
        let ready = "4242\n/var/lib/pg\n1700000000\n5432\n/run/pg\n127.0.0.1\n  5432001    131072\nready   \n";
        assert_eq!(postmaster_status(ready), Some((4242, "ready")));
        assert!(accepts_connections("ready"));
        let standby = ready.replace("ready   ", "standby ");
        assert_eq!(postmaster_status(&standby), Some((4242, "standby")));
        assert!(accepts_connections("standby"));
        let starting = ready.replace("ready   ", "starting");
        assert_eq!(postmaster_status(&starting), Some((4242, "starting")));
        assert!(!accepts_connections("starting"));
        // Half written (the postmaster adds the status line last), empty, or garbage.
        assert_eq!(postmaster_status("4242\n/var/lib/pg\n"), None);
        assert_eq!(postmaster_status(""), None);
        assert_eq!(postmaster_status("x\n\n\n\n\n\n\nready\n"), None);
        assert_eq!(postmaster_status("-1\n\n\n\n\n\n\nready\n"), None);
    }

    proptest! {
        #[test]
        fn postmaster_status_never_panics(text in ".{0,200}") {
            let _ = postmaster_status(&text);
        }
    }
}
