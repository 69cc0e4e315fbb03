//! quorate: a high-availability cluster manager (see DESIGN.md for the map).
//!
//! Layers, top to bottom; a module imports only from layers below it:
//! `cli` | `daemon` → `api`, `policy`, `consensus`, `heartbeat`, `resource` →
//! `cluster`, `kv`, `config`, `rules` → `types`, `tls`, `datadir` and the small leaves
//! (`util`, `fault`, `logging`).

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod daemon;
pub mod datadir;
pub mod fault;
pub mod heartbeat;
pub mod kv;
pub mod logging;
pub mod policy;
pub mod resource;
pub mod rules;
pub mod tls;
pub mod types;
pub mod util;
