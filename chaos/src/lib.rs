//! quorate's chaos harness and benchmark library: a launcher for real `quorate` processes on
//! 127.0.0.1, and measurement helpers.

pub mod hooklog;
pub use quorate::localcluster as launcher;
pub mod stats;
