//! Resolution (text → typed values, relative → absolute paths, profile + overrides) and the
//! cross-field rules. Every check pushes a `Problem` and carries on, so one run reports all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{DurationText, RawConfig, RawPeer};
use super::{
    defaults, format_duration, parse_duration, AgentKind, ApiConfig, ApiTls, Config,
    FailbackConfig, FencingMode, Listen, LogConfig, NodeSection, Peer, PostgresConfig, Problem,
    ResourceConfig, StorageConfig, Timing, DEFAULT_PRIORITY, MAX_CLUSTER_NAME_LEN,
    MAX_CONFIG_DURATION, MAX_COUNT_SETTING, MAX_HEARTBEAT_LINKS, MAX_PEERS, MAX_VALUE_BYTES_LIMIT,
};
use crate::types::NodeId;

/// Collects problems while turning raw text into typed values.
struct Checker {
    /// Folder of the config file: relative paths in the file resolve against it.
    base: PathBuf,
    problems: Vec<Problem>,
}

/// Who uses an address: a bind address may be unspecified (0.0.0.0), an advertised one
/// (a `[[peer]]` entry, which other nodes connect to) may not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AddrUse {
    Bind,
    Advertised,
}

impl Checker {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem::new(key, message, fix));
    }

    /// `None` (and a problem) when the text is not a positive duration of at most
    /// MAX_CONFIG_DURATION.
    fn duration(
        &mut self,
        key: &str,
        text: Option<&DurationText>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(DurationText(text)) = text else {
            return Some(default);
        };
        match parse_duration(text) {
            Err(why) => {
                self.push(
                    key,
                    why,
                    "write a duration such as \"150ms\", \"1.5s\" or \"2m\"",
                );
                None
            }
            Ok(d) if d.is_zero() => {
                self.push(
                    key,
                    "must be greater than zero",
                    format!(
                        "remove the key to use the default ({}) or give a positive duration",
                        format_duration(default)
                    ),
                );
                None
            }
            Ok(d) if d > MAX_CONFIG_DURATION => {
                self.push(
                    key,
                    format!(
                        "{} is longer than the {} allowed",
                        format_duration(d),
                        format_duration(MAX_CONFIG_DURATION)
                    ),
                    format!(
                        "check the unit (ms, s, m, h); the default is {}",
                        format_duration(default)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
        }
    }

    fn addr(&mut self, key: &str, text: &str, usage: AddrUse) -> Option<SocketAddr> {
        let addr: SocketAddr = match text.trim().parse() {
            Ok(a) => a,
            Err(_) => {
                let looks_like_host =
                    text.chars().any(|c| c.is_ascii_alphabetic()) && !text.contains('[');
                let message = if looks_like_host {
                    format!("\"{text}\" is not an IP:port address (host names are not resolved)")
                } else {
                    format!("\"{text}\" is not an IP:port address")
                };
                self.push(
                    key,
                    message,
                    "write an IP address and port, such as \"127.0.0.1:7411\" or \"[::1]:7411\"",
                );
                return None;
            }
        };
        if addr.port() == 0 {
            self.push(
                key,
                format!(
                    "\"{text}\" has port 0, which lets the system pick a port nobody else knows"
                ),
                "choose a fixed port, the same in [listen] and in this node's [[peer]] entry",
            );
            return None;
        }
        if usage == AddrUse::Advertised && addr.ip().is_unspecified() {
            self.push(
                key,
                format!("\"{text}\" is not an address other nodes can connect to"),
                "write the IP other nodes reach this member at; only [listen] may use 0.0.0.0 or [::]",
            );
            return None;
        }
        Some(addr)
    }

    fn path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        if text.trim().is_empty() {
            self.push(
                key,
                "is empty",
                "give a path, absolute or relative to the config file's folder",
            );
            return None;
        }
        if text.starts_with('~') {
            self.push(
                key,
                format!("\"{text}\" starts with ~, which is not expanded"),
                "write an absolute path, or one relative to the config file's folder",
            );
            return None;
        }
        let path = Path::new(text);
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        })
    }

    fn optional_path(&mut self, key: &str, text: Option<&String>) -> Option<PathBuf> {
        text.and_then(|t| self.path(key, t))
    }

    /// The value (or default); a problem when it is outside `min..=MAX_COUNT_SETTING`.
    fn count(&mut self, key: &str, value: Option<u32>, default: u32, min: u32) -> u32 {
        let value = value.unwrap_or(default);
        if value < min || value > MAX_COUNT_SETTING {
            self.push(
                key,
                format!("is {value}, outside the allowed {min}..={MAX_COUNT_SETTING}"),
                format!("set a value from {min} to {MAX_COUNT_SETTING} (default {default})"),
            );
        }
        value
    }
}

/// A `[[peer]]` entry with possibly unparsable addresses (`None`, already reported).
struct PeerDraft {
    id: NodeId,
    role: crate::types::NodeRole,
    priority: Option<u32>,
    raft: Option<SocketAddr>,
    heartbeat: Vec<Option<SocketAddr>>,
    api: Option<SocketAddr>,
    service: Option<String>,
}

/// Turns the raw file into a `Config`, or returns every problem found.
pub(super) fn build(raw: RawConfig, source: PathBuf) -> Result<Config, Vec<Problem>> {
    let base = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut c = Checker {
        base,
        problems: Vec::new(),
    };

    check_cluster_name(&mut c, &raw.cluster);
    let data_dir = c.path("data_dir", &raw.data_dir);
    let secret_file = c.optional_path("secret_file", raw.secret_file.as_ref());
    let previous_secret_file =
        c.optional_path("previous_secret_file", raw.previous_secret_file.as_ref());
    if previous_secret_file.is_some() && raw.secret_file.is_none() {
        c.push(
            "previous_secret_file",
            "is set but secret_file is not",
            "set secret_file to the new secret; previous_secret_file names the old one during a rotation",
        );
    }
    if previous_secret_file.is_some() && previous_secret_file == secret_file {
        c.push(
            "previous_secret_file",
            "names the same file as secret_file",
            "point it at the old secret, or remove it when the rotation is finished",
        );
    }

    if raw.node.id == 0 {
        c.push(
            "node.id",
            "is 0; node ids start at 1",
            "give this node a unique id of 1 or more",
        );
    }
    let node = NodeSection {
        id: raw.node.id,
        role: raw.node.role,
        priority: raw.node.priority.unwrap_or(DEFAULT_PRIORITY),
    };
    let listen_raft = c.addr("listen.raft", &raw.listen.raft.0, AddrUse::Bind);
    let listen_heartbeat = c.addr("listen.heartbeat", &raw.listen.heartbeat.0, AddrUse::Bind);
    let listen_api = c.addr("listen.api", &raw.listen.api.0, AddrUse::Bind);
    check_listen_distinct(
        &mut c,
        [
            ("raft", listen_raft),
            ("heartbeat", listen_heartbeat),
            ("api", listen_api),
        ],
    );

    let drafts: Vec<PeerDraft> = raw
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| draft_peer(&mut c, i, p))
        .collect();
    let self_index = check_membership(&mut c, &node, &drafts, raw.preferred_primary);
    if let Some((s, entry)) = self_index.and_then(|s| drafts.get(s).map(|d| (s, d))) {
        check_self_entry(
            &mut c,
            &node,
            s,
            entry,
            [listen_raft, listen_heartbeat, listen_api],
        );
    }

    let timing = resolve_timing(&mut c, &raw);
    let resource = resolve_resource(&mut c, &raw);
    let failback = resolve_failback(&mut c, &raw, resource.monitor_interval);
    let postgres = resolve_postgres(&mut c, &raw, resource.agent, &drafts);
    let api = ApiConfig {
        token_file: c.optional_path("api.token_file", raw.api.token_file.as_ref()),
        protect_reads: raw.api.protect_reads.unwrap_or(false),
        tls: resolve_api_tls(&mut c, &raw),
    };
    let self_api = self_index.and_then(|s| drafts.get(s)).and_then(|d| d.api);
    let tls_files_ok = !c.problems.iter().any(|p| p.key.starts_with("api.tls_"));
    if let (Some(tls), Some(addr), true) = (&api.tls, self_api, tls_files_ok) {
        if let Err(e) = crate::tls::check_own_cert(tls, addr.ip()) {
            c.push(
                e.file.key(),
                e.why,
                "the certificate must be a leaf (CA:FALSE), name this node's [[peer]] api IP as an IP subjectAltName, be valid now, and be signed by a certificate in tls_ca_file (or be self-signed when tls_ca_file is not set)",
            );
        }
    }
    let storage = resolve_storage(&mut c, &raw);
    let log = LogConfig {
        level: raw
            .log
            .level
            .clone()
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_string()),
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
        c.push(
            "log.level",
            format!("{:?} is not a log filter: {e}", log.level),
            "use a level (error, warn, info, debug, trace) or directives such as \"info,openraft=debug\"",
        );
    }

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    // No problems means every address parsed and this node is listed: finish the types.
    let finished = (|| {
        let peers: Vec<Peer> = drafts
            .iter()
            .map(|d| finish_peer(d, node))
            .collect::<Option<_>>()?;
        let self_peer = peers.get(self_index?)?.clone();
        let listen = Listen {
            raft: listen_raft?,
            heartbeat: listen_heartbeat?,
            api: listen_api?,
        };
        Some((peers, self_peer, listen, data_dir?, timing?))
    })();
    let Some((peers, self_peer, listen, data_dir, timing)) = finished else {
        // Unreachable by construction; reported rather than panicking.
        return Err(vec![Problem::new(
            "(internal)",
            "validation found no problem but left a value unresolved",
            "report this as a quorate bug, with the config file",
        )]);
    };
    Ok(Config {
        cluster: raw.cluster,
        node,
        listen,
        peers,
        data_dir,
        secret_file,
        previous_secret_file,
        preferred_primary: raw.preferred_primary,
        timing,
        profile: raw.profile,
        resource,
        failback,
        postgres,
        api,
        storage,
        log,
        source,
        self_peer,
    })
}

/// A PostgreSQL role name the agent splices into SQL and connection strings: lower-case
/// letters, digits and `_`, not starting with a digit, at most 63 bytes (NAMEDATALEN - 1).
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn resolve_postgres(
    c: &mut Checker,
    raw: &RawConfig,
    agent: AgentKind,
    drafts: &[PeerDraft],
) -> Option<PostgresConfig> {
    let Some(p) = &raw.postgres else {
        if agent == AgentKind::Postgres {
            c.push(
                "postgres",
                "[resource] agent is \"postgres\" but there is no [postgres] section",
                "add [postgres] with at least data_dir, superuser_password_file and replication_password_file (see cluster-config/postgres/)",
            );
        }
        return None;
    };
    if agent != AgentKind::Postgres {
        c.push(
            "postgres",
            "a [postgres] section is set but [resource] agent is not \"postgres\"",
            "set agent = \"postgres\" in [resource], or remove [postgres]",
        );
        return None;
    }
    let required = |c: &mut Checker, key: &str, v: Option<&String>| {
        let path = c.optional_path(key, v);
        if v.is_none() {
            c.push(
                key,
                "is required by the postgres agent",
                "set it (an absolute path)",
            );
        }
        path
    };
    let data_dir = required(c, "postgres.data_dir", p.data_dir.as_ref());
    let superuser_password_file = required(
        c,
        "postgres.superuser_password_file",
        p.superuser_password_file.as_ref(),
    );
    let replication_password_file = required(
        c,
        "postgres.replication_password_file",
        p.replication_password_file.as_ref(),
    );
    let bin_dir = c
        .optional_path("postgres.bin_dir", p.bin_dir.as_ref())
        .unwrap_or_else(|| PathBuf::from(defaults::POSTGRES_BIN_DIR));
    let port = p.port.unwrap_or(defaults::POSTGRES_PORT);
    if port == 0 {
        c.push(
            "postgres.port",
            "is 0",
            "give the TCP port PostgreSQL listens on, e.g. 5432",
        );
    }
    let listen = p
        .listen
        .clone()
        .unwrap_or_else(|| defaults::POSTGRES_LISTEN.to_string());
    if listen.is_empty()
        || !listen
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ".:*,-_ ".contains(ch))
    {
        c.push(
            "postgres.listen",
            format!("{listen:?} is not a list of addresses"),
            "write listen_addresses as PostgreSQL takes it: \"*\", or host names or IPs separated by commas",
        );
    }
    let superuser = p
        .superuser
        .clone()
        .unwrap_or_else(|| defaults::POSTGRES_SUPERUSER.to_string());
    let replication_user = p
        .replication_user
        .clone()
        .unwrap_or_else(|| defaults::POSTGRES_REPLICATION_USER.to_string());
    let database = p
        .database
        .clone()
        .unwrap_or_else(|| defaults::POSTGRES_DATABASE.to_string());
    for (key, name) in [
        ("postgres.superuser", &superuser),
        ("postgres.replication_user", &replication_user),
        ("postgres.database", &database),
    ] {
        if !is_plain_identifier(name) {
            c.push(
                key,
                format!("{name:?} is not a plain PostgreSQL name"),
                "use lower-case letters, digits and _ (not starting with a digit), at most 63 characters",
            );
        }
    }
    if let Some(user) = &p.os_user {
        if user.is_empty() || user.contains(['/', ':', ' ']) {
            c.push(
                "postgres.os_user",
                format!("{user:?} is not a user name"),
                "name the OS user PostgreSQL runs as, e.g. postgres",
            );
        }
    }
    for d in drafts {
        if d.role.may_be_primary() && d.service.is_none() {
            c.push(
                format!("peer.{}.service", d.id),
                "is not set, and the postgres agent must know where every voter's PostgreSQL listens",
                "add service = \"HOST:PORT\" (the address other nodes reach its PostgreSQL at) to that [[peer]]",
            );
        }
    }
    let action_timeout = c.duration(
        "postgres.action_timeout",
        p.action_timeout.as_ref(),
        defaults::POSTGRES_ACTION_TIMEOUT,
    );
    let verify_tables = p.verify_tables.clone().unwrap_or_default();
    if verify_tables.len() > super::MAX_VERIFY_TABLES {
        c.push(
            "postgres.verify_tables",
            format!(
                "names {} tables, more than {}",
                verify_tables.len(),
                super::MAX_VERIFY_TABLES
            ),
            "name the tables that matter most, or leave verify_tables out to compare every user table",
        );
    }
    for t in &verify_tables {
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| is_plain_identifier(p)) {
            c.push(
                "postgres.verify_tables",
                format!("{t:?} is not a table name"),
                "write each as table or schema.table with plain names (lower-case letters, digits, _)",
            );
        }
    }
    let log_file = c
        .optional_path("postgres.log_file", p.log_file.as_ref())
        .or_else(|| {
            data_dir.as_ref().map(|d| {
                let mut s = d.clone().into_os_string();
                s.push(".log");
                PathBuf::from(s)
            })
        });
    Some(PostgresConfig {
        data_dir: data_dir?,
        bin_dir,
        port,
        listen,
        os_user: p.os_user.clone(),
        superuser,
        superuser_password_file: superuser_password_file?,
        replication_user,
        replication_password_file: replication_password_file?,
        rejoin: p.rejoin.unwrap_or_default(),
        log_file: log_file?,
        database,
        action_timeout: action_timeout?,
        synchronous: p.synchronous.unwrap_or_default(),
        verify_tables,
    })
}

/// `[api] tls_*`: both cert and key or neither; `tls_ca_file` only with them; every file
/// readable PEM and the key that of the certificate.
fn resolve_api_tls(c: &mut Checker, raw: &RawConfig) -> Option<ApiTls> {
    let a = &raw.api;
    let both_fix = "set both tls_cert_file and tls_key_file (PEM files) to serve the API over HTTPS, or neither for plain HTTP";
    match (&a.tls_cert_file, &a.tls_key_file) {
        (Some(_), None) => c.push(
            "api.tls_key_file",
            "is missing while api.tls_cert_file is set",
            both_fix,
        ),
        (None, Some(_)) => c.push(
            "api.tls_cert_file",
            "is missing while api.tls_key_file is set",
            both_fix,
        ),
        (None, None) if a.tls_ca_file.is_some() => c.push(
            "api.tls_ca_file",
            "is set but the API has no TLS (tls_cert_file and tls_key_file are not set)",
            "set tls_cert_file and tls_key_file too, or remove tls_ca_file",
        ),
        _ => {}
    }
    let cert_file = c.optional_path("api.tls_cert_file", a.tls_cert_file.as_ref());
    let key_file = c.optional_path("api.tls_key_file", a.tls_key_file.as_ref());
    let ca_file = c.optional_path("api.tls_ca_file", a.tls_ca_file.as_ref());
    let tls = ApiTls {
        cert_file: cert_file?,
        key_file: key_file?,
        ca_file,
    };
    if a.tls_ca_file.is_some() && tls.ca_file.is_none() {
        return None; // tls_ca_file was given but unusable (reported above)
    }
    for problem in crate::tls::check_files(&tls) {
        let fix = match problem.file {
            crate::tls::TlsFile::Cert => "point tls_cert_file at a readable PEM certificate chain (leaf first) whose subject alternative names include this node's API IP",
            crate::tls::TlsFile::Key => "point tls_key_file at the readable PEM private key of tls_cert_file's certificate (e.g. chmod 600, owned by the daemon's user)",
            crate::tls::TlsFile::Ca => "point tls_ca_file at a readable PEM file with the CA certificate(s) that signed the nodes' API certificates, or remove it to trust tls_cert_file's certificates",
        };
        c.push(problem.file.key(), problem.why, fix);
    }
    Some(tls)
}

fn finish_peer(d: &PeerDraft, node: NodeSection) -> Option<Peer> {
    let heartbeat = d.heartbeat.iter().copied().collect::<Option<Vec<_>>>()?;
    // This node's entry inherits [node] priority when it gives none (checked equal otherwise).
    let fallback = if d.id == node.id {
        node.priority
    } else {
        DEFAULT_PRIORITY
    };
    Some(Peer {
        id: d.id,
        role: d.role,
        priority: d.priority.unwrap_or(fallback),
        raft: d.raft?,
        heartbeat,
        api: d.api?,
        service: d.service.clone(),
    })
}

fn check_cluster_name(c: &mut Checker, name: &str) {
    let fix = format!(
        "use 1 to {MAX_CLUSTER_NAME_LEN} characters from a-z, 0-9, '-' and '_', e.g. \"demo\""
    );
    if name.is_empty() || name.chars().count() > MAX_CLUSTER_NAME_LEN {
        c.push(
            "cluster",
            format!("\"{name}\" must be 1 to {MAX_CLUSTER_NAME_LEN} characters long"),
            fix,
        );
    } else if let Some(bad) = name
        .chars()
        .find(|ch| !matches!(ch, 'a'..='z' | '0'..='9' | '-' | '_'))
    {
        c.push(
            "cluster",
            format!("\"{name}\" contains {bad:?}, which cluster names may not"),
            fix,
        );
    }
}

fn check_listen_distinct(c: &mut Checker, addrs: [(&str, Option<SocketAddr>); 3]) {
    for (i, (name, addr)) in addrs.iter().enumerate() {
        let Some(addr) = addr else { continue };
        if let Some((earlier, _)) = addrs[..i].iter().find(|(_, a)| *a == Some(*addr)) {
            c.push(
                format!("listen.{name}"),
                format!("{addr} is also listen.{earlier}"),
                "give raft, heartbeat and api each their own port",
            );
        }
    }
}

fn draft_peer(c: &mut Checker, i: usize, p: &RawPeer) -> PeerDraft {
    let key = |field: &str| format!("peer[{i}].{field}");
    if p.id == 0 {
        c.push(
            key("id"),
            "is 0; node ids start at 1",
            "give every member a unique id of 1 or more",
        );
    }
    let links = &p.heartbeat.0;
    if links.is_empty() {
        c.push(
            key("heartbeat"),
            "lists no address",
            "give at least one heartbeat address, e.g. heartbeat = \"10.0.0.1:7421\"",
        );
    }
    if links.len() > MAX_HEARTBEAT_LINKS {
        c.push(
            key("heartbeat"),
            format!(
                "lists {} links, more than the {MAX_HEARTBEAT_LINKS} allowed",
                links.len()
            ),
            format!(
                "keep at most {MAX_HEARTBEAT_LINKS} heartbeat addresses (one per network link)"
            ),
        );
    }
    let heartbeat = links
        .iter()
        .take(MAX_HEARTBEAT_LINKS)
        .enumerate()
        .map(|(j, text)| {
            let k = if links.len() == 1 {
                key("heartbeat")
            } else {
                format!("peer[{i}].heartbeat[{j}]")
            };
            c.addr(&k, text, AddrUse::Advertised)
        })
        .collect();
    PeerDraft {
        id: p.id,
        role: p.role,
        priority: p.priority,
        raft: c.addr(&key("raft"), &p.raft.0, AddrUse::Advertised),
        heartbeat,
        api: c.addr(&key("api"), &p.api.0, AddrUse::Advertised),
        service: p
            .service
            .as_deref()
            .and_then(|text| match service_address_problem(text) {
                None => Some(text.to_string()),
                Some(problem) => {
                    c.push(
                    key("service"),
                    problem,
                    "give the address clients use to reach this member's service, as HOST:PORT, \
                     e.g. service = \"10.0.0.1:5432\"",
                );
                    None
                }
            }),
    }
}

/// Longest `[[peer]] service` accepted (a DNS name is at most 253 characters, plus the port).
pub const MAX_SERVICE_ADDRESS_CHARS: usize = 260;

/// What is wrong with a `HOST:PORT` service address, if anything. Hosts are names or IP
/// addresses (IPv6 in brackets); nothing is resolved here (the service's own tools do that).
pub fn service_address_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("is empty".into());
    }
    if text.len() > MAX_SERVICE_ADDRESS_CHARS {
        return Some(format!(
            "is {} characters long, more than {MAX_SERVICE_ADDRESS_CHARS}",
            text.len()
        ));
    }
    if text.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Some(format!(
            "{text:?} contains whitespace or control characters"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Some(format!("{text:?} has no port"));
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'))
    };
    if !host_ok {
        return Some(format!(
            "{text:?} has no valid host (a name, an IPv4 address, or [IPv6])"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{text:?} has no valid port (1 to 65535)")),
    }
}

/// Membership rules; returns the index of this node's entry when it is listed.
fn check_membership(
    c: &mut Checker,
    node: &NodeSection,
    peers: &[PeerDraft],
    preferred_primary: Option<NodeId>,
) -> Option<usize> {
    if peers.is_empty() {
        c.push(
            "peer",
            "no [[peer]] entries",
            format!(
                "list every member, this node (id {}) included, as a [[peer]] table",
                node.id
            ),
        );
        return None;
    }
    if peers.len() > MAX_PEERS {
        c.push(
            "peer",
            format!("{} members, more than the {MAX_PEERS} allowed", peers.len()),
            format!("keep at most {MAX_PEERS} [[peer]] entries"),
        );
    }

    // Duplicate ids: reported on the later entry.
    for (i, p) in peers.iter().enumerate() {
        if let Some(j) = peers[..i].iter().position(|q| q.id == p.id) {
            let whose = if p.id == node.id {
                " (this node's id, which must be listed once)"
            } else {
                ""
            };
            c.push(
                format!("peer[{i}].id"),
                format!("id {} is already used by peer[{j}]{whose}", p.id),
                "give every member a unique id and list each member once",
            );
        }
    }

    // Duplicate addresses across every raft, heartbeat and api address of every member.
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    for (i, p) in peers.iter().enumerate() {
        let many_links = p.heartbeat.len() > 1;
        let mut addrs: Vec<(String, Option<SocketAddr>)> =
            vec![(format!("peer[{i}].raft"), p.raft)];
        for (j, hb) in p.heartbeat.iter().enumerate() {
            let k = if many_links {
                format!("peer[{i}].heartbeat[{j}]")
            } else {
                format!("peer[{i}].heartbeat")
            };
            addrs.push((k, *hb));
        }
        addrs.push((format!("peer[{i}].api"), p.api));
        for (key, addr) in addrs {
            let Some(addr) = addr else { continue };
            match seen.get(&addr) {
                Some(first) => c.push(
                    key,
                    format!("address {addr} is also used by {first}"),
                    "give each member's raft, heartbeat and api its own address (IP or port)",
                ),
                None => {
                    seen.insert(addr, key);
                }
            }
        }
    }

    let self_index = peers.iter().position(|p| p.id == node.id);
    if self_index.is_none() {
        c.push(
            "node.id",
            format!("this node's id {} is not in the [[peer]] list", node.id),
            format!(
                "add a [[peer]] entry with id = {} (every member, this node included, is listed), or correct [node] id",
                node.id
            ),
        );
    }

    let voting = peers.iter().filter(|p| p.role.votes()).count();
    let voters = peers.iter().filter(|p| p.role.may_be_primary()).count();
    if voters == 0 {
        c.push(
            "peer",
            "no member has role = \"voter\", so no node can ever become primary",
            "make at least one member (normally three) role = \"voter\"",
        );
    }
    if peers.len() != 1 && voting < 3 {
        c.push(
            "peer",
            format!(
                "only {voting} voting member(s) (voters + witnesses); with fewer than 3, losing one node loses the majority"
            ),
            "add a voter or a witness (a cheap tie-breaker) to reach 3, or list only this node for single-node dev mode",
        );
    }

    if let Some(home) = preferred_primary {
        match peers.iter().find(|p| p.id == home) {
            None => c.push(
                "preferred_primary",
                format!("node {home} is not a member of the cluster"),
                "name the id of a [[peer]] with role = \"voter\", or remove preferred_primary",
            ),
            Some(p) if !p.role.may_be_primary() => c.push(
                "preferred_primary",
                format!("node {home} is a {}, which can never be primary", p.role),
                "name a member with role = \"voter\", or remove preferred_primary",
            ),
            Some(_) => {}
        }
    }
    self_index
}

/// A bind address serves an advertised one when they are equal, or when the bind IP is
/// unspecified (0.0.0.0 / [::], all interfaces) and the ports agree.
fn serves(bind: SocketAddr, advertised: SocketAddr) -> bool {
    bind == advertised || (bind.ip().is_unspecified() && bind.port() == advertised.port())
}

fn check_self_entry(
    c: &mut Checker,
    node: &NodeSection,
    s: usize,
    entry: &PeerDraft,
    listen: [Option<SocketAddr>; 3],
) {
    let fix_addr = "use the same address in [listen] and in this node's [[peer]] entry (or 0.0.0.0 with the same port in [listen])";
    if entry.role != node.role {
        c.push(
            "node.role",
            format!(
                "[node] says {} but this node's entry peer[{s}] says {}",
                node.role, entry.role
            ),
            "make [node] role and this node's [[peer]] role the same",
        );
    }
    if let Some(p) = entry.priority {
        if p != node.priority {
            c.push(
                "node.priority",
                format!(
                    "[node] says {} but this node's entry peer[{s}] says {p}",
                    node.priority
                ),
                "make them the same, or drop priority from this node's [[peer]] entry",
            );
        }
    }
    let [raft, heartbeat, api] = listen;
    for (name, bind, advertised) in [("raft", raft, entry.raft), ("api", api, entry.api)] {
        if let (Some(bind), Some(adv)) = (bind, advertised) {
            if !serves(bind, adv) {
                c.push(
                    format!("listen.{name}"),
                    format!("{bind} does not serve this node's advertised peer[{s}].{name} {adv}"),
                    fix_addr,
                );
            }
        }
    }
    if let Some(bind) = heartbeat {
        for adv in entry.heartbeat.iter().flatten() {
            if !serves(bind, *adv) {
                c.push(
                    "listen.heartbeat",
                    format!("{bind} does not receive this node's advertised heartbeat link {adv} (peer[{s}])"),
                    "bind 0.0.0.0 with the links' common port when this node has several links, or make the addresses equal",
                );
            }
        }
    }
}

fn resolve_timing(c: &mut Checker, raw: &RawConfig) -> Option<Timing> {
    let base = raw.profile.timing();
    let t = &raw.timing;
    let mut get = |name: &str, text: Option<&DurationText>, default| {
        c.duration(&format!("timing.{name}"), text, default)
    };
    let resolved = (
        get(
            "heartbeat_interval",
            t.heartbeat_interval.as_ref(),
            base.heartbeat_interval,
        ),
        get(
            "suspect_after",
            t.suspect_after.as_ref(),
            base.suspect_after,
        ),
        get("dead_after", t.dead_after.as_ref(), base.dead_after),
        get(
            "raft_heartbeat",
            t.raft_heartbeat.as_ref(),
            base.raft_heartbeat,
        ),
        get(
            "election_timeout_min",
            t.election_timeout_min.as_ref(),
            base.election_timeout_min,
        ),
        get(
            "election_timeout_max",
            t.election_timeout_max.as_ref(),
            base.election_timeout_max,
        ),
        get("lease", t.lease.as_ref(), base.lease),
    );
    // Relations are checked only when every value parsed: a bad value would make them noise.
    let (
        Some(hb),
        Some(suspect),
        Some(dead),
        Some(raft_hb),
        Some(et_min),
        Some(et_max),
        Some(lease),
    ) = resolved
    else {
        return None;
    };
    // openraft takes these three in whole milliseconds; refuse rather than truncate.
    for (name, d) in [
        ("raft_heartbeat", raft_hb),
        ("election_timeout_min", et_min),
        ("election_timeout_max", et_max),
    ] {
        if d.subsec_nanos() % 1_000_000 != 0 {
            c.push(
                format!("timing.{name}"),
                format!(
                    "{} is not a whole number of milliseconds, which Raft timers count in",
                    format_duration(d)
                ),
                format!(
                    "round it to whole milliseconds, e.g. \"{}ms\"",
                    d.as_millis().max(1)
                ),
            );
        }
    }
    let timing = Timing {
        heartbeat_interval: hb,
        suspect_after: suspect,
        dead_after: dead,
        raft_heartbeat: raft_hb,
        election_timeout_min: et_min,
        election_timeout_max: et_max,
        lease,
    };
    for p in timing_problems(&timing) {
        c.problems.push(p);
    }
    Some(timing)
}

/// The timing safety rules. Public to the module so tests can check the profiles directly.
pub(super) fn timing_problems(t: &Timing) -> Vec<Problem> {
    let f = format_duration;
    let mut out = Vec::new();
    let margin = t.clock_drift_margin();
    // Rule 3: the old primary must have stopped before any voter can elect a successor.
    if !crate::rules::lease_ends_before_election(t.lease, t.election_timeout_min) {
        out.push(Problem::new(
            "timing.lease",
            format!(
                "lease {} + clock-drift margin {} is not below election_timeout_min {}: an old primary could still act after a new one is elected",
                f(t.lease), f(margin), f(t.election_timeout_min)
            ),
            format!(
                "lower timing.lease below {} or raise timing.election_timeout_min to at least {}",
                f(t.election_timeout_min.saturating_sub(margin)),
                f(crate::rules::min_safe_election_timeout(t.lease))
            ),
        ));
    }
    // The primary renews its lease on quorum acknowledgements, which come once per Raft
    // heartbeat; a lease shorter than two of them demotes on a single late heartbeat.
    if !crate::rules::lease_covers_heartbeats(t.lease, t.raft_heartbeat) {
        out.push(Problem::new(
            "timing.lease",
            format!("lease {} is shorter than two raft heartbeats ({} each): one late heartbeat would demote the primary", f(t.lease), f(t.raft_heartbeat)),
            format!("raise timing.lease to at least {} or lower timing.raft_heartbeat", f(t.raft_heartbeat * 2)),
        ));
    }
    // One lost heartbeat datagram must not make a peer dead.
    if t.dead_after < t.heartbeat_interval * 2 {
        out.push(Problem::new(
            "timing.dead_after",
            format!("dead_after {} is less than two heartbeat intervals ({} each): one lost heartbeat would declare a live node dead", f(t.dead_after), f(t.heartbeat_interval)),
            format!("raise timing.dead_after to at least {}", f(t.heartbeat_interval * 2)),
        ));
    }
    if t.suspect_after >= t.dead_after {
        out.push(Problem::new(
            "timing.suspect_after",
            format!("suspect_after {} is not below dead_after {}: a peer would never be seen as suspect first", f(t.suspect_after), f(t.dead_after)),
            "make timing.suspect_after smaller than timing.dead_after",
        ));
    }
    if t.suspect_after < t.heartbeat_interval {
        out.push(Problem::new(
            "timing.suspect_after",
            format!("suspect_after {} is shorter than one heartbeat interval {}: every peer would look suspect between heartbeats", f(t.suspect_after), f(t.heartbeat_interval)),
            format!("raise timing.suspect_after to at least {}", f(t.heartbeat_interval)),
        ));
    }
    if t.election_timeout_min <= t.raft_heartbeat {
        out.push(Problem::new(
            "timing.election_timeout_min",
            format!("election_timeout_min {} is not above raft_heartbeat {}: followers would start elections under a healthy leader", f(t.election_timeout_min), f(t.raft_heartbeat)),
            "make timing.election_timeout_min several times timing.raft_heartbeat (the profiles use 3x)",
        ));
    }
    if t.election_timeout_max <= t.election_timeout_min {
        out.push(Problem::new(
            "timing.election_timeout_max",
            format!("election_timeout_max {} is not above election_timeout_min {}: without a random spread, candidates split the vote", f(t.election_timeout_max), f(t.election_timeout_min)),
            "make timing.election_timeout_max larger than timing.election_timeout_min (the profiles use 2x)",
        ));
    }
    out
}

fn resolve_resource(c: &mut Checker, raw: &RawConfig) -> ResourceConfig {
    let r = &raw.resource;
    let promote = c.optional_path("resource.promote", r.promote.as_ref());
    let demote = c.optional_path("resource.demote", r.demote.as_ref());
    let monitor = c.optional_path("resource.monitor", r.monitor.as_ref());
    let fence = c.optional_path("resource.fence", r.fence.as_ref());
    let rejoin = c.optional_path("resource.rejoin", r.rejoin.as_ref());
    let follow = c.optional_path("resource.follow", r.follow.as_ref());
    let notify = c.optional_path("resource.notify", r.notify.as_ref());
    let start = c.optional_path("resource.start", r.start.as_ref());
    let stop = c.optional_path("resource.stop", r.stop.as_ref());
    let snapshot = c.optional_path("resource.snapshot", r.snapshot.as_ref());
    let verify = c.optional_path("resource.verify", r.verify.as_ref());
    let hook_timeout = c.duration(
        "resource.hook_timeout",
        r.hook_timeout.as_ref(),
        defaults::HOOK_TIMEOUT,
    );
    let monitor_interval = c.duration(
        "resource.monitor_interval",
        r.monitor_interval.as_ref(),
        defaults::MONITOR_INTERVAL,
    );
    let restart_window = c.duration(
        "resource.restart_window",
        r.restart_window.as_ref(),
        defaults::RESTART_WINDOW,
    );
    let failure_threshold = c.count(
        "resource.failure_threshold",
        r.failure_threshold,
        defaults::FAILURE_THRESHOLD,
        1,
    );
    let local_restarts = c.count(
        "resource.local_restarts",
        r.local_restarts,
        defaults::LOCAL_RESTARTS,
        0,
    );
    let fencing = r.fencing.unwrap_or(defaults::FENCING);
    if fencing == FencingMode::Required && r.fence.is_none() {
        c.push(
            "resource.fencing",
            "is \"required\" but no resource.fence hook is configured: a failover could never promote",
            "set resource.fence to the fencing hook, or use fencing = \"best-effort\"",
        );
    }
    let agent = r.agent.unwrap_or_default();
    ResourceConfig {
        agent,
        promote,
        demote,
        monitor,
        fence,
        rejoin,
        follow,
        notify,
        start,
        stop,
        snapshot,
        verify,
        hook_timeout: hook_timeout.unwrap_or(defaults::HOOK_TIMEOUT),
        monitor_interval: monitor_interval.unwrap_or(defaults::MONITOR_INTERVAL),
        failure_threshold,
        local_restarts,
        restart_window: restart_window.unwrap_or(defaults::RESTART_WINDOW),
        fencing,
        max_lag_on_failover: r
            .max_lag_on_failover
            .unwrap_or(defaults::MAX_LAG_ON_FAILOVER),
        max_service_lag_bytes: r
            .max_service_lag_bytes
            .unwrap_or(defaults::MAX_SERVICE_LAG_BYTES),
    }
}

fn resolve_failback(
    c: &mut Checker,
    raw: &RawConfig,
    monitor_interval: Duration,
) -> FailbackConfig {
    let fb = &raw.failback;
    let delay = c.duration(
        "failback.delay",
        fb.delay.as_ref(),
        defaults::FAILBACK_DELAY,
    );
    let verify_timeout = c.duration(
        "failback.verify_timeout",
        fb.verify_timeout.as_ref(),
        defaults::VERIFY_TIMEOUT,
    );
    let verify_checks = c.count(
        "failback.verify_checks",
        fb.verify_checks,
        defaults::VERIFY_CHECKS,
        1,
    );
    if let Some(timeout) = verify_timeout {
        let needed = monitor_interval * verify_checks;
        if (1..=MAX_COUNT_SETTING).contains(&verify_checks) && needed > timeout {
            c.push(
                "failback.verify_timeout",
                format!(
                    "{} is shorter than {verify_checks} monitor checks every {} ({} in all): verification could never pass",
                    format_duration(timeout),
                    format_duration(monitor_interval),
                    format_duration(needed)
                ),
                format!("raise failback.verify_timeout to at least {}, or lower failback.verify_checks", format_duration(needed)),
            );
        }
    }
    FailbackConfig {
        mode: fb.mode.unwrap_or(defaults::FAILBACK_MODE),
        delay: delay.unwrap_or(defaults::FAILBACK_DELAY),
        commit: fb.commit.unwrap_or(defaults::FAILBACK_COMMIT),
        verify_checks,
        verify_timeout: verify_timeout.unwrap_or(defaults::VERIFY_TIMEOUT),
    }
}

fn resolve_storage(c: &mut Checker, raw: &RawConfig) -> StorageConfig {
    let s = &raw.storage;
    let snapshot_every = s.snapshot_every.unwrap_or(defaults::SNAPSHOT_EVERY);
    if snapshot_every == 0 {
        c.push(
            "storage.snapshot_every",
            "is 0; the log would never be compacted",
            format!(
                "set a positive number of entries (default {})",
                defaults::SNAPSHOT_EVERY
            ),
        );
    }
    let max_value_bytes = s.max_value_bytes.unwrap_or(defaults::MAX_VALUE_BYTES);
    if max_value_bytes == 0 || max_value_bytes > MAX_VALUE_BYTES_LIMIT {
        c.push(
            "storage.max_value_bytes",
            format!("is {max_value_bytes}, outside the allowed 1..={MAX_VALUE_BYTES_LIMIT}"),
            format!(
                "set a value from 1 to {MAX_VALUE_BYTES_LIMIT} (default {})",
                defaults::MAX_VALUE_BYTES
            ),
        );
    }
    let max_kv_bytes = s.max_kv_bytes.unwrap_or(defaults::MAX_KV_BYTES);
    if max_kv_bytes == 0 || max_kv_bytes > defaults::MAX_KV_BYTES {
        c.push(
            "storage.max_kv_bytes",
            format!(
                "is {max_kv_bytes}, outside the allowed 1..={} (MAX_KV_TOTAL_BYTES: snapshots must stay loadable)",
                defaults::MAX_KV_BYTES
            ),
            format!(
                "set a value from 1 to {0} (default {0})",
                defaults::MAX_KV_BYTES
            ),
        );
    }
    StorageConfig {
        snapshot_every,
        keep_logs: s.keep_logs.unwrap_or(defaults::KEEP_LOGS),
        max_value_bytes,
        max_kv_bytes,
    }
}

pub(super) fn check_hooks(config: &Config) -> Vec<Problem> {
    let folder = config
        .source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, path) in config.resource.hooks() {
        let Some(path) = path else { continue };
        let key = format!("resource.{name}");
        let shown = path.display();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(Problem::new(
                key,
                format!("hook file {shown} does not exist"),
                format!(
                    "create it, or correct the path (relative paths resolve against {})",
                    folder.display()
                ),
            )),
            Err(e) => out.push(Problem::new(
                key,
                format!("hook file {shown} cannot be inspected: {e}"),
                "check the path and the permissions of its folders",
            )),
            Ok(m) if !m.is_file() => out.push(Problem::new(
                key,
                format!("{shown} is not a regular file"),
                "point the hook at an executable file",
            )),
            Ok(m) => {
                if !is_executable(&m) {
                    out.push(Problem::new(
                        key,
                        format!("hook file {shown} is not executable"),
                        format!("chmod +x {shown}"),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_m: &std::fs::Metadata) -> bool {
    true
}
