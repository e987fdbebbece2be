//! Portable logic of the hypervisor.
//!
//! Everything here is plain `no_std` Rust with no hardware access, so it builds for the
//! EL2 image, for the test guests and for the host, where `cargo test` exercises it.

#![no_std]
// Portable logic only: no hardware, no raw memory. Unsafe code belongs to the EL2 crate's arch
// and mm layers.
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(test)]
extern crate std;

#[cfg(feature = "alloc")]
pub mod access;
pub mod byte_ring;
pub mod cmdline;
pub mod console_input;
pub mod dtb_check;
pub mod esr;
#[cfg(feature = "alloc")]
pub mod fdt_writer;
#[cfg(feature = "alloc")]
pub mod gpa_cache;
pub mod guest_dt;
pub mod hypercall;
pub mod idregs;
pub mod image;
pub mod mmio;
#[cfg(feature = "alloc")]
pub mod net_switch;
#[cfg(feature = "alloc")]
pub mod notifier;
pub mod outcome;
pub mod panic_watch;
pub mod pauth;
pub mod pgtable;
pub mod pl011;
#[cfg(feature = "alloc")]
pub mod page_bits;
#[cfg(feature = "alloc")]
pub mod pristine;
pub mod pstore;
#[cfg(feature = "alloc")]
pub mod ranges;
pub mod ratelimit;
pub mod rng;
#[cfg(feature = "alloc")]
pub mod ramoops_store;
#[cfg(feature = "alloc")]
pub mod s2trace;
pub mod sched;
#[cfg(feature = "alloc")]
pub mod small_vec;
#[cfg(feature = "alloc")]
pub mod stage2;
pub mod sysreg;
pub mod timer;
#[cfg(test)]
mod testmem;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod pgtable_model;
pub mod vgic;
pub mod virtio;
#[cfg(feature = "alloc")]
pub mod virtio_balloon_device;
#[cfg(feature = "alloc")]
pub mod virtio_blk_device;
#[cfg(feature = "alloc")]
pub mod virtio_console_device;
#[cfg(feature = "alloc")]
pub mod virtio_net_device;
#[cfg(feature = "alloc")]
pub mod virtio_rng_device;
pub mod virtio_mmio;
#[cfg(feature = "alloc")]
pub mod virtqueue;
