//! quorate: a high-availability cluster manager (see DESIGN.md for the map).

pub mod consensus;
pub mod types;
pub mod util;
