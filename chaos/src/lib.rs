//! quorate's chaos harness and benchmark library: a launcher for real `quorate` processes on
//! 127.0.0.1, the chaos run (workloads, nemesis, recording), the checkers, and the report.

pub mod append;
pub mod checks;
pub mod history;
pub mod hooklog;
pub mod http;
pub mod linearizable;
pub mod nemesis;
pub mod netns;
pub mod pgchaos;
pub mod pgwrite;
pub mod positions;
pub mod report;
pub mod run;
pub use quorate::cli::localcluster as launcher;
pub mod stats;
