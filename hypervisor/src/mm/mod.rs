//! Memory: physical frames and the heap, the hypervisor's own EL2 tables, translation
//! tables in real frames, and guest RAM (its stage-2 space, its pages, and the only code
//! that touches guest memory through host addresses).

pub mod frames;
pub mod guest;
pub mod hyp_map;
pub mod tables;
