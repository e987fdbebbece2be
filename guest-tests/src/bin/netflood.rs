//! A hostile network card driver: floods the hypervisor's switch with garbage for `ms=`
//! milliseconds (default 20000) while other VMs talk. Frames of random length (also shorter
//! than an Ethernet header and longer than the MTU allows), to random, broadcast and the
//! other cards' addresses, from random addresses and from the other cards' own (spoofing),
//! with random header flags (checksum and segmentation requests that were not negotiated);
//! now and then a buffer outside its RAM (refused) or a chain running past the descriptor
//! table, which breaks the queue: the card is reset and brought up again. It never posts a receive buffer (its backlog overflows). Prints what it
//! sent; passes if it got to the end (the hypervisor kept answering).

#![no_std]
#![no_main]

use guest_rt::virtio_driver::{Dev, Queue};
use guest_rt::{check, check_eq, println, BootInfo};
use hv_core::rng::Rng;
use hv_core::virtio_mmio::reg;

const SLOT: u64 = 3;
const TX: u16 = 1;
const DEVICE_ID: u32 = 1;
const HEADER: usize = 12;

static mut QUEUE: Queue = Queue::new();
static mut FRAME: [u8; 4096] = [0; 4096];

fn main(info: &BootInfo) -> ! {
    let ms = info.arg("ms").unwrap_or(20_000);
    let mut rng = Rng::new(info.arg("seed").unwrap_or(7));
    let (q, frame) = (&raw mut QUEUE, &raw mut FRAME);
    let mut dev = Dev::new(SLOT, q).using(TX, 0);
    check_eq!(dev.r(reg::DEVICE_ID), DEVICE_ID, "a network card in slot 3");
    check!(dev.bring_up().is_ok(), "bring-up");
    let (start, freq) = guest_rt::counter();
    let end = start + ms * freq / 1000;
    let (mut sent, mut broken, mut resets) = (0u64, 0u64, 0u64);
    while guest_rt::counter().0 < end {
        let len = match rng.below(8) {
            0 => rng.below(HEADER as u64 + 14) as usize,
            1 => 1600 + rng.below(2000) as usize,
            _ => HEADER + 14 + rng.below(1500) as usize,
        };
        // SAFETY: the driver's own buffer, not in the device's hands until published.
        let bytes = unsafe { &mut *frame };
        for b in bytes[..len].iter_mut() {
            *b = rng.next() as u8;
        }
        if len >= HEADER + 12 {
            if rng.below(2) == 0 {
                bytes[..HEADER].fill(0);
            }
            match rng.below(4) {
                0 => bytes[HEADER..HEADER + 6].fill(0xff),
                1 => bytes[HEADER..HEADER + 6].copy_from_slice(&[0x52, 0x54, 0, 0xab, 0, rng.below(2) as u8]),
                _ => {}
            }
            if rng.below(4) == 0 {
                // Another card's address as the source.
                bytes[HEADER + 6..HEADER + 12].copy_from_slice(&[0x52, 0x54, 0, 0xab, 0, rng.below(2) as u8]);
            }
        }
        match rng.below(500) {
            // A buffer outside its RAM: the frame is refused.
            0 => dev.desc(0, info.ram_base + info.ram_size + 0x1000, len as u32, 0, 0),
            // A chain going on past the descriptor table: the queue breaks.
            1 => dev.desc(0, frame as u64, len as u32, 1, 200),
            _ => dev.desc(0, frame as u64, len as u32, 0, 0),
        }
        if dev.submit(0).is_none() {
            broken += 1;
            // The device gave up on the queue (a chain outside RAM): reset and start again.
            resets += 1;
            check!(dev.bring_up().is_ok(), "bring-up after a reset");
        }
        sent += 1;
    }
    println!("flooded {} frames, {} broke the queue, {} resets", sent, broken, resets);
    check!(sent > 1000, "kept sending");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
