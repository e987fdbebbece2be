//! Architecture-specific code. Only AArch64 exists; everything that executes special
//! instructions or touches system registers lives below `aarch64/`.

pub mod aarch64;
pub use aarch64::*;
