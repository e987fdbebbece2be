//! Boot-time inputs: the host device tree and the guest images it points at.

pub mod host_dt;
pub mod loader;
