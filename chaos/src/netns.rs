//! The netns backend's network: one network namespace per node on a bridge the harness
//! creates, each node with its own address in a /24 that has no route out; the harness
//! reaches the nodes through the bridge's own address. Faults are nftables rules inside the
//! node namespaces (partitions, one-way partitions, random loss) and link down/up on the
//! bridge side of a node's veth. No netem: this kernel has none.
//!
//! Everything created is recorded as it is created and removed in reverse order on
//! `cleanup` and on drop (so also on error and on Ctrl-C, which drops the run). Deleting a
//! namespace deletes its veth end, its nft table and (with it) its rules.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The nft table the harness owns inside each node namespace.
const TABLE: &str = "quorate_chaos";
/// Subnets 10.213.<n>.0/24; n is picked from the PID so concurrent runs do not collide.
const SUBNET_FIRST: u8 = 10;
const SUBNET_SECOND: u8 = 213;
/// The bridge's (harness's) host number in the subnet.
const BRIDGE_HOST: u8 = 254;
/// Most nodes a netns cluster may have (host numbers 1..=MAX_NODES).
pub const MAX_NODES: u64 = 9;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the netns backend needs root (it creates namespaces, a bridge and nftables rules); run as root or use --backend local")]
    NotRoot,
    #[error("`{tool}` is not installed; install iproute2 and nftables (apt-get install iproute2 nftables)")]
    MissingTool { tool: &'static str },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("node id {0} is out of range 1..={MAX_NODES} for the netns backend")]
    BadNode(u64),
}

enum Created {
    Bridge(String),
    Namespace(String),
    Veth(String),
}

pub struct Netns {
    prefix: String,
    subnet: u8,
    nodes: Vec<u64>,
    created: Vec<Created>,
}

fn run(args: &[&str]) -> Result<(), NetnsError> {
    run_input(args, None)
}

fn run_input(args: &[&str], input: Option<&str>) -> Result<(), NetnsError> {
    use std::io::Write;
    let command = args.join(" ");
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetnsError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetnsError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Why the netns backend cannot run here, if it cannot.
pub fn preflight() -> Result<(), NetnsError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NetnsError::NotRoot);
    }
    if !have("ip") {
        return Err(NetnsError::MissingTool { tool: "ip" });
    }
    if !have("nft") {
        return Err(NetnsError::MissingTool { tool: "nft" });
    }
    Ok(())
}

impl Netns {
    /// Creates the bridge, one namespace per node with its veth and address, and an empty
    /// nft table in each namespace.
    pub fn create(nodes: &[u64]) -> Result<Netns, NetnsError> {
        preflight()?;
        if let Some(bad) = nodes.iter().find(|n| **n == 0 || **n > MAX_NODES) {
            return Err(NetnsError::BadNode(*bad));
        }
        let pid = std::process::id();
        let mut net = Netns {
            prefix: format!("qc{}", pid % 100_000),
            subnet: (pid % 200) as u8 + 20,
            nodes: nodes.to_vec(),
            created: Vec::new(),
        };
        // On error, `net` is dropped here and removes what was already made.
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), NetnsError> {
        let br = format!("{}br", self.prefix);
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        self.created.push(Created::Bridge(br.clone()));
        let br_addr = format!("{}/24", self.bridge_ip());
        run(&["ip", "addr", "add", &br_addr, "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for id in self.nodes.clone() {
            let ns = self.namespace(id);
            run(&["ip", "netns", "add", &ns])?;
            self.created.push(Created::Namespace(ns.clone()));
            let host = self.veth(id);
            let peer = format!("{host}p");
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
            ])?;
            self.created.push(Created::Veth(host.clone()));
            run(&["ip", "link", "set", &peer, "netns", &ns])?;
            run(&["ip", "link", "set", &host, "master", &br])?;
            run(&["ip", "link", "set", &host, "up"])?;
            let addr = format!("{}/24", self.ip(id));
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &peer,
            ])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &peer, "up"])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            let table = format!(
                "table inet {TABLE} {{\n chain input {{ type filter hook input priority 0; policy accept; }}\n}}\n"
            );
            run_input(
                &["ip", "netns", "exec", &ns, "nft", "-f", "-"],
                Some(&table),
            )?;
        }
        Ok(())
    }

    pub fn namespace(&self, id: u64) -> String {
        format!("{}{id}", self.namespace_prefix())
    }

    /// Namespace names are this followed by the node id.
    pub fn namespace_prefix(&self) -> String {
        format!("{}n", self.prefix)
    }

    fn veth(&self, id: u64) -> String {
        format!("{}v{id}", self.prefix)
    }

    pub fn ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_FIRST, SUBNET_SECOND, self.subnet, id as u8)
    }

    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_FIRST, SUBNET_SECOND, self.subnet, BRIDGE_HOST)
    }

    /// Replaces the input rules of `to`'s namespace: drop everything from `from` (one way:
    /// `to` still sends to them), and drop `loss_percent` of all other packets at random.
    pub fn set_rules(&self, to: u64, from: &[u64], loss_percent: u32) -> Result<(), NetnsError> {
        let ns = self.namespace(to);
        let mut script = format!("flush chain inet {TABLE} input\n");
        if !from.is_empty() {
            let ips: Vec<String> = from.iter().map(|f| self.ip(*f).to_string()).collect();
            script.push_str(&format!(
                "add rule inet {TABLE} input ip saddr {{ {} }} drop\n",
                ips.join(", ")
            ));
        }
        if loss_percent > 0 {
            script.push_str(&format!(
                "add rule inet {TABLE} input numgen random mod 100 < {} drop\n",
                loss_percent.min(100)
            ));
        }
        run_input(
            &["ip", "netns", "exec", &ns, "nft", "-f", "-"],
            Some(&script),
        )
    }

    /// Blocks traffic both ways between every node of `a` and every node of `b`.
    pub fn split(&self, a: &[u64], b: &[u64]) -> Result<(), NetnsError> {
        for x in a {
            self.set_rules(*x, b, 0)?;
        }
        for y in b {
            self.set_rules(*y, a, 0)?;
        }
        Ok(())
    }

    pub fn link(&self, id: u64, up: bool) -> Result<(), NetnsError> {
        let v = self.veth(id);
        run(&["ip", "link", "set", &v, if up { "up" } else { "down" }])
    }

    /// Removes every rule and brings every link up: the network is whole again.
    pub fn heal(&self) -> Result<(), NetnsError> {
        let mut first_err = None;
        for id in &self.nodes {
            if let Err(e) = self
                .set_rules(*id, &[], 0)
                .and_then(|_| self.link(*id, true))
            {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Deletes everything created, newest first; safe to call twice.
    pub fn cleanup(&mut self) {
        while let Some(c) = self.created.pop() {
            let _ = match c {
                Created::Bridge(b) => run(&["ip", "link", "del", &b]),
                Created::Namespace(n) => run(&["ip", "netns", "del", &n]),
                // Usually already gone with its peer's namespace.
                Created::Veth(v) => run(&["ip", "link", "del", &v]).or(Ok(())),
            };
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// How a partition step divides the nodes, chosen by the step's `variant`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionPlan {
    /// Two sides, no traffic between them (the minority side holds `target` when it is
    /// "isolate"; "majority/minority" splits at random).
    Split { a: Vec<u64>, b: Vec<u64> },
    /// `middle` sees both sides; the sides do not see each other.
    Bridge {
        left: Vec<u64>,
        middle: u64,
        right: Vec<u64>,
    },
    /// `deaf` receives nothing from the others but can still send to them.
    OneWay { deaf: u64 },
}

impl PartitionPlan {
    /// Pure: a plan for `nodes` (sorted ids), around `target`, from `variant`.
    pub fn choose(nodes: &[u64], target: u64, variant: u32) -> PartitionPlan {
        let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != target).collect();
        match variant % 4 {
            // Isolate the target alone.
            0 => PartitionPlan::Split {
                a: vec![target],
                b: others,
            },
            // Minority with the target, majority without.
            1 => {
                let minority = (nodes.len() - 1) / 2;
                let mut a = vec![target];
                let rot = (variant as usize / 4) % others.len().max(1);
                a.extend(
                    others
                        .iter()
                        .cycle()
                        .skip(rot)
                        .take(minority.saturating_sub(1)),
                );
                let b = nodes.iter().copied().filter(|n| !a.contains(n)).collect();
                PartitionPlan::Split { a, b }
            }
            2 if others.len() >= 2 => {
                let half = others.len() / 2;
                PartitionPlan::Bridge {
                    left: others[..half].to_vec(),
                    middle: target,
                    right: others[half..].to_vec(),
                }
            }
            _ => PartitionPlan::OneWay { deaf: target },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PartitionPlan::Split { a, b } => format!("split {a:?} | {b:?}"),
            PartitionPlan::Bridge {
                left,
                middle,
                right,
            } => format!("bridge {left:?} - {middle} - {right:?}"),
            PartitionPlan::OneWay { deaf } => format!("one-way: {deaf} hears nobody"),
        }
    }

    pub fn apply(&self, net: &Netns, all: &[u64]) -> Result<(), NetnsError> {
        match self {
            PartitionPlan::Split { a, b } => net.split(a, b),
            PartitionPlan::Bridge { left, right, .. } => net.split(left, right),
            PartitionPlan::OneWay { deaf } => {
                let others: Vec<u64> = all.iter().copied().filter(|n| n != deaf).collect();
                net.set_rules(*deaf, &others, 0)
            }
        }
    }
}

/// Applies the network fault of kind `kind` (partition, loss or link) aimed at `node`, its
/// shape picked by `variant`: the result and a description for the fault log.
pub fn apply_fault(
    net: &Netns,
    kind: crate::nemesis::FaultKind,
    all: &[u64],
    node: u64,
    variant: u32,
) -> (Result<(), NetnsError>, String) {
    use crate::nemesis::FaultKind;
    match kind {
        FaultKind::Partition => {
            let plan = PartitionPlan::choose(all, node, variant);
            (plan.apply(net, all), plan.describe())
        }
        FaultKind::Loss => {
            let pct = 20 + variant % 30;
            (
                net.set_rules(node, &[], pct),
                format!("{pct}% loss into node {node}"),
            )
        }
        _ => (net.link(node, false), format!("link of node {node} down")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_plans_cover_every_shape_and_keep_every_node() {
        let nodes = [1, 2, 3, 4, 5];
        let mut shapes = std::collections::BTreeSet::new();
        for v in 0..16 {
            let p = PartitionPlan::choose(&nodes, 2, v);
            let mut seen: Vec<u64> = match &p {
                PartitionPlan::Split { a, b } => {
                    assert!(a.contains(&2));
                    assert!(a.len() < b.len(), "target side is the minority: {p:?}");
                    shapes.insert("split");
                    a.iter().chain(b).copied().collect()
                }
                PartitionPlan::Bridge {
                    left,
                    middle,
                    right,
                } => {
                    assert_eq!(*middle, 2);
                    assert!(!left.is_empty() && !right.is_empty());
                    shapes.insert("bridge");
                    left.iter().chain(right).chain([middle]).copied().collect()
                }
                PartitionPlan::OneWay { deaf } => {
                    assert_eq!(*deaf, 2);
                    shapes.insert("oneway");
                    nodes.to_vec()
                }
            };
            seen.sort_unstable();
            assert_eq!(seen, nodes.to_vec(), "{p:?}");
        }
        assert_eq!(shapes.len(), 3);
        // Minority of 5 with the target: 2 nodes.
        match PartitionPlan::choose(&nodes, 2, 1) {
            PartitionPlan::Split { a, .. } => assert_eq!(a.len(), 2),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn three_nodes_never_get_a_bridge_without_two_sides() {
        let p = PartitionPlan::choose(&[1, 2], 1, 2);
        assert_eq!(p, PartitionPlan::OneWay { deaf: 1 });
    }
}
