//! virtio-rng (virtio 1.2 section 5.4): an entropy source for the guest. One request queue;
//! the driver makes device-writable buffers available and the device fills them with random
//! bytes (the hypervisor's: the CPU's RNDR), answering with how many it wrote. No features
//! beyond the ring's, no config space.
//!
//! The buffers are the guest's and untrusted: only device-writable ones are written, each
//! through GuestRam's checks, and a request gets at most REQUEST_MAX bytes, so a driver
//! cannot make one notification cost unbounded time.

use crate::virtio_mmio::{VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC};
use crate::virtqueue::{Chain, GuestRam, OutOfRam};

pub const DEVICE_ID: u32 = 4;
pub const QUEUE_SIZE: u16 = 64;
/// Bytes one request gets at most (Linux's virtio-rng asks for 64 at a time).
pub const REQUEST_MAX: usize = 4096;

pub struct RngDevice;

impl VirtioDevice for RngDevice {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }

    fn queue_max(&self, q: usize) -> u16 {
        if q == 0 {
            QUEUE_SIZE
        } else {
            0
        }
    }

    fn read_config(&self, _offset: u64, _size: u8) -> u64 {
        0
    }

    fn write_config(&mut self, _offset: u64, _size: u8, _value: u64) {}

    fn reset(&mut self) {}
}

/// Fills the request's device-writable buffers with bytes from `random` (which fills what it
/// is given and returns how much it could: fewer on a source that ran dry), at most
/// REQUEST_MAX in all. Returns the bytes written, for the used ring.
pub fn serve(chain: &Chain, ram: &impl GuestRam, random: &mut impl FnMut(&mut [u8]) -> usize) -> Result<u32, OutOfRam> {
    let mut written = 0usize;
    let mut bytes = [0u8; 256];
    for b in chain.buffers.iter().filter(|b| b.device_writes) {
        let mut at = 0usize;
        while at < b.len as usize && written < REQUEST_MAX {
            let want = (b.len as usize - at).min(REQUEST_MAX - written).min(bytes.len());
            let got = random(&mut bytes[..want]).min(want);
            if got == 0 {
                return Ok(written as u32);
            }
            ram.write(b.addr + at as u64, &bytes[..got])?;
            at += got;
            written += got;
        }
    }
    Ok(written as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtqueue::test_ram::{Ram, BASE};
    use crate::virtqueue::Buffer;
    use std::vec;

    fn counting() -> impl FnMut(&mut [u8]) -> usize {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                n = n.wrapping_add(1);
                *b = n;
            }
            buf.len()
        }
    }

    #[test]
    fn fills_only_writable_buffers_up_to_the_limit() {
        let ram = Ram::sized(64 << 10);
        ram.put(BASE + 0x100, &[0xee; 16]);
        let chain = Chain {
            head: 0,
            buffers: vec![
                Buffer { addr: BASE + 0x100, len: 16, device_writes: false },
                Buffer { addr: BASE + 0x1000, len: 300, device_writes: true },
                Buffer { addr: BASE + 0x2000, len: 8000, device_writes: true },
            ].into(),
        };
        assert_eq!(serve(&chain, &ram, &mut counting()), Ok(REQUEST_MAX as u32));
        assert_eq!(ram.get(BASE + 0x100, 16), vec![0xee; 16], "a device-readable buffer is not written");
        assert_eq!(ram.get(BASE + 0x1000, 3), vec![1, 2, 3]);
        assert_eq!(ram.get(BASE + 0x2000, 1), vec![(301 % 256) as u8]);
        let last = BASE + 0x2000 + (REQUEST_MAX - 300) as u64;
        assert_eq!(ram.get(last, 1), vec![0], "nothing past REQUEST_MAX");
    }

    #[test]
    fn a_dry_source_and_bad_buffers() {
        let ram = Ram::sized(64 << 10);
        let chain = Chain { head: 0, buffers: vec![Buffer { addr: BASE + 0x1000, len: 100, device_writes: true }].into() };
        let mut dry = |buf: &mut [u8]| buf.len().min(10);
        assert_eq!(serve(&chain, &ram, &mut dry), Ok(100), "short fills are gathered");
        let mut empty = |_: &mut [u8]| 0;
        assert_eq!(serve(&chain, &ram, &mut empty), Ok(0));
        let outside = Chain { head: 0, buffers: vec![Buffer { addr: BASE + (64 << 10) - 8, len: 64, device_writes: true }].into() };
        assert_eq!(serve(&outside, &ram, &mut counting()), Err(OutOfRam));
        assert_eq!(serve(&Chain { head: 0, buffers: vec![].into() }, &ram, &mut counting()), Ok(0));
    }
}
