//! quorate: a high-availability cluster manager (see DESIGN.md for the map).

pub mod api;
pub mod cli_kv;
pub mod cli_ops;
pub mod cli_table;
pub mod client;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod datadir;
pub mod demo;
pub mod disk_probe;
pub mod executor;
pub mod failstop;
pub mod fault;
pub mod heartbeat;
pub mod localcluster;
pub mod logging;
pub mod node;
pub mod policy;
pub mod recover;
pub mod resource;
pub mod systemd;
pub mod types;
pub mod util;
