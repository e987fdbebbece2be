//! Memory: physical frames, the heap, and translation tables in real memory.

pub mod frames;
pub mod hyp_map;
pub mod tables;
