//! A guest's own virtio-blk driver against the hypervisor's device model: the device in
//! slot 31 (the VM's disk 0, a 1 MiB image whose first sector the test filled), brought up
//! through the modern virtio-mmio transport; every request type (discard and write-zeroes
//! too, with their limits and refusals); requests the device must refuse (past the end,
//! not whole sectors, unknown type, a buffer outside RAM); a reset with a read in flight;
//! rings it
//! must refuse (a descriptor index past the queue, a loop) by DEVICE_NEEDS_RESET with a
//! config interrupt, after which a reset brings it back. A second disk in slot 30 answers
//! with its own serial and size. Prints `observe ...` lines for the differential run on
//! bare QEMU (its own virtio-blk, modern transport, same images and serials).
//!
//! Requests complete shortly after the notifying write, under the hypervisor (when the
//! host disk's interrupt comes) as on bare QEMU, so the driver polls the used index
//! (bounded).

#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use guest_rt::virtio_driver::{Dev, Queue, F_DISCARD, F_WRITE_ZEROES, QSIZE};
use guest_rt::{check, check_eq, println, BootInfo};
use hv_core::virtio::blk::{T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES};
use hv_core::virtio_mmio::reg;
use hv_core::virtio_mmio::status::DEVICE_NEEDS_RESET as NEEDS_RESET;

/// The queues of the two disks, and the request's buffers, in the guest's RAM
/// (identity-mapped: address = IPA).
static mut QUEUES: [Queue; 2] = [Queue::new(), Queue::new()];

#[repr(C)]
struct Area {
    header: [u8; 16],
    status: [u8; 16],
    data: [u8; 8192],
}

static mut AREA: Area = Area { header: [0; 16], status: [0; 16], data: [0; 8192] };

fn area() -> *mut Area {
    &raw mut AREA
}

fn queue(i: usize) -> *mut Queue {
    // SAFETY: only the address is taken.
    unsafe { &raw mut QUEUES[i] }
}

trait Requests {
    fn request(&mut self, kind: u32, sector: u64, data: Option<(u64, u32)>) -> Option<(u32, u8)>;
}

impl Requests for Dev {
    /// A request: header (type, sector), one data buffer of `len` bytes at `data` (device
    /// writes it for reads and GET_ID), the status byte. (used length, status byte).
    fn request(&mut self, kind: u32, sector: u64, data: Option<(u64, u32)>) -> Option<(u32, u8)> {
        let a = area();
        // SAFETY: the driver's header and status buffers.
        unsafe {
            write_volatile(&raw mut (*a).header, hv_core::virtio::blk::header(kind, sector));
            write_volatile(&raw mut (*a).status[0], 0xff);
        }
        let device_writes = kind == T_IN || kind == T_GET_ID;
        // SAFETY: only the addresses are taken.
        let (header, status) = unsafe { (&raw const (*a).header as u64, &raw const (*a).status as u64) };
        self.desc(0, header, 16, 1, 1);
        let status_desc = match data {
            Some((addr, len)) => {
                self.desc(1, addr, len, 1 | if device_writes { 2 } else { 0 }, 2);
                2
            }
            None => 1,
        };
        self.desc(status_desc, status, 1, 2, 0);
        let used = self.submit(0)?;
        // SAFETY: the status byte the device wrote.
        Some((used, unsafe { read_volatile(&raw const (*a).status[0]) }))
    }

}

/// The request header (set to `kind`, `sector`) and the status byte's addresses.
fn header_addr(kind: u32, sector: u64) -> u64 {
    let a = area();
    // SAFETY: the driver's header, not in the device's hands now; then only its address.
    unsafe {
        write_volatile(&raw mut (*a).header, hv_core::virtio::blk::header(kind, sector));
        &raw const (*a).header as u64
    }
}

fn status_addr() -> u64 {
    // SAFETY: only the address is taken.
    unsafe { &raw const (*area()).status as u64 }
}

fn data_addr() -> u64 {
    // SAFETY: only the address is taken.
    unsafe { &raw const (*area()).data as u64 }
}

fn data() -> &'static mut [u8; 8192] {
    // SAFETY: the driver's data buffer; the device writes it only during a request.
    unsafe { &mut *(&raw mut (*area()).data) }
}

fn main(info: &BootInfo) -> ! {
    let mut dev = Dev::new(31, queue(0));
    check_eq!(dev.r(reg::MAGIC), 0x7472_6976, "magic in slot 31");
    println!("observe slot 31: version {} device {}", dev.r(reg::VERSION), dev.r(reg::DEVICE_ID));
    check_eq!(dev.r(reg::DEVICE_ID), 2, "a block device in slot 31");
    if let Err(why) = dev.bring_up() {
        check!(false, "bring-up: {}", why);
    }
    let capacity = dev.r(reg::CONFIG) as u64 | (dev.r(reg::CONFIG + 4) as u64) << 32;
    println!("observe capacity {} sectors, blk_size {}", capacity, dev.r(reg::CONFIG + 20));

    // GET_ID: the serial.
    let (used, status) = dev.request(T_GET_ID, 0, Some((data_addr(), 20))).unwrap_or((0, 0xee));
    let serial = &data()[..9];
    println!("observe GET_ID status {} serial {:?} used {}", status, core::str::from_utf8(serial).unwrap_or("?"), used);
    // The pattern the test wrote into sector 0.
    let (_, status) = dev.request(T_IN, 0, Some((data_addr(), 512))).unwrap_or((0, 0xee));
    println!("observe read sector 0: status {} starts {:?}", status, core::str::from_utf8(&data()[..16]).unwrap_or("?"));
    // Write two sectors, flush, read them back.
    for (i, b) in data()[..1024].iter_mut().enumerate() {
        *b = (i * 13 % 251) as u8;
    }
    let (_, w) = dev.request(T_OUT, 6, Some((data_addr(), 1024))).unwrap_or((0, 0xee));
    let (_, f) = dev.request(T_FLUSH, 0, None).unwrap_or((0, 0xee));
    data()[..1024].fill(0);
    let (used, r) = dev.request(T_IN, 6, Some((data_addr(), 1024))).unwrap_or((0, 0xee));
    let same = data()[..1024].iter().enumerate().all(|(i, &b)| b == (i * 13 % 251) as u8);
    println!("observe write {} flush {} read {} used {} same {}", w, f, r, used, same);
    let irq = dev.ack_interrupts();
    println!("observe used-buffer interrupt status {}", irq & 1);

    // Discard and write-zeroes (QEMU offers both): their limits, a write-zeroes the next
    // read sees, a discard, and what the device refuses, in QEMU's order of checks.
    let has = |f: u32| dev.features & f != 0;
    println!("observe discard {} write-zeroes {}", has(F_DISCARD), has(F_WRITE_ZEROES));
    if has(F_DISCARD) && has(F_WRITE_ZEROES) {
        let cfg = |off: u64| dev.r(reg::CONFIG + off);
        println!(
            "observe discard limits {} {} {} write-zeroes limits {} {} {}",
            cfg(36), cfg(40), cfg(44), cfg(48), cfg(52), dev.r8(reg::CONFIG + 56)
        );
        let ranges = data_addr() + 4096;
        let range = |dev: &mut Dev, kind: u32, sector: u64, sectors: u32, flags: u32, count: u32| {
            for i in 0..count as usize {
                let r = &mut data()[4096 + 16 * i..4096 + 16 * (i + 1)];
                r[0..8].copy_from_slice(&sector.to_le_bytes());
                r[8..12].copy_from_slice(&sectors.to_le_bytes());
                r[12..16].copy_from_slice(&flags.to_le_bytes());
            }
            dev.request(kind, 0, Some((ranges, 16 * count))).map(|x| x.1)
        };
        let wz = range(&mut dev, T_WRITE_ZEROES, 6, 2, 0, 1);
        data()[..1024].fill(0xaa);
        let (_, r) = dev.request(T_IN, 6, Some((data_addr(), 1024))).unwrap_or((0, 0xee));
        println!("observe write-zeroes {:?} then read {} zeroed {}", wz, r, data()[..1024].iter().all(|b| *b == 0));
        let discard = range(&mut dev, T_DISCARD, 16, 8, 0, 1);
        let unmap_flag = range(&mut dev, T_DISCARD, 16, 8, 1, 1);
        let bad_flags = range(&mut dev, T_WRITE_ZEROES, 16, 8, 2, 1);
        let past_end = range(&mut dev, T_DISCARD, capacity - 4, 8, 0, 1);
        let bad_both = range(&mut dev, T_WRITE_ZEROES, capacity, 1, 2, 1);
        let empty = range(&mut dev, T_DISCARD, 0, 0, 0, 1);
        let two = range(&mut dev, T_DISCARD, 16, 1, 0, 2);
        println!(
            "observe discard {:?} with unmap flag {:?} write-zeroes bad flags {:?} past the end {:?} both {:?} empty {:?} two ranges {:?}",
            discard, unmap_flag, bad_flags, past_end, bad_both, empty, two
        );
    }

    // A reset with a read in flight: the device finishes or drops it (never writes the
    // buffer afterwards) and comes back.
    dev.desc(0, header_addr(T_IN, 0), 16, 1, 1);
    dev.desc(1, data_addr(), 8192, 1 | 2, 2);
    dev.desc(2, status_addr(), 1, 2, 0);
    dev.publish(0);
    if let Err(why) = dev.bring_up() {
        check!(false, "bring-up after a reset with a read in flight: {}", why);
    }
    let (_, s) = dev.request(T_IN, 0, Some((data_addr(), 512))).unwrap_or((0, 0xee));
    println!("observe reset with a read in flight, then a read: status {} starts {:?}", s, core::str::from_utf8(&data()[..16]).unwrap_or("?"));

    // Requests the device refuses.
    let past_end = dev.request(T_IN, capacity - 1, Some((data_addr(), 1024))).map(|x| x.1);
    let not_whole = dev.request(T_IN, 0, Some((data_addr(), 100))).map(|x| x.1);
    let unknown = dev.request(0x55, 0, None).map(|x| x.1);
    println!("observe past the end {:?} not whole sectors {:?} unknown type {:?}", past_end, not_whole, unknown);
    // A data buffer past the end of RAM: the hypervisor's device answers IOERR (QEMU's
    // bounces the data to nowhere and says OK): not an observation.
    let outside = dev.request(T_IN, 0, Some((info.ram_base + info.ram_size + 0x10_0000, 512)));
    if info.hypervisor {
        check_eq!(outside.map(|x| x.1), Some(1), "a read into no RAM gets IOERR");
    }
    if dev.r(reg::STATUS) & NEEDS_RESET != 0 && dev.bring_up().is_err() {
        check!(false, "bring-up after the outside-RAM request");
    }

    // Broken rings: a descriptor naming an index past the queue, a loop, a device-readable
    // buffer after a writable one, an indirect table of a length that is not whole
    // descriptors. The device must give up on the queue (DEVICE_NEEDS_RESET, config
    // interrupt); a reset revives it.
    let broken: [(&str, &dyn Fn(&Dev)); 4] = [
        ("index past the queue", &|d: &Dev| d.desc(0, data_addr(), 16, 1, QSIZE + 3)),
        ("loop", &|d: &Dev| d.desc(0, data_addr(), 16, 1, 0)),
        ("readable after writable", &|d: &Dev| {
            d.desc(0, data_addr(), 512, 1 | 2, 1);
            d.desc(1, data_addr() + 512, 16, 0, 0);
        }),
        ("indirect table of 24 bytes", &|d: &Dev| d.desc(0, data_addr(), 24, 4, 0)),
    ];
    for (what, set_up) in broken {
        set_up(&dev);
        let answer = dev.submit(0);
        let status = dev.r(reg::STATUS);
        let irq = dev.ack_interrupts();
        println!("observe {}: answered {} needs reset {} config interrupt {}", what, answer.is_some(), status & NEEDS_RESET != 0, irq & 2 != 0);
        if let Err(why) = dev.bring_up() {
            check!(false, "bring-up after the broken ring: {}", why);
        }
        let (_, s) = dev.request(T_IN, 6, Some((data_addr(), 512))).unwrap_or((0, 0xee));
        println!("observe after the reset, a read: status {}", s);
    }

    // The second disk, in slot 30.
    let mut second = Dev::new(30, queue(1));
    if second.r(reg::DEVICE_ID) == 2 && second.bring_up().is_ok() {
        let cap = second.r(reg::CONFIG) as u64;
        let (_, s) = second.request(T_GET_ID, 0, Some((data_addr(), 20))).unwrap_or((0, 0xee));
        println!("observe slot 30: capacity {} GET_ID status {} serial {:?}", cap, s, core::str::from_utf8(&data()[..9]).unwrap_or("?"));
    } else {
        println!("observe slot 30: no block device");
    }
    if info.hypervisor {
        // The device's registers and the UART's flag register are read from their images
        // in the VM's stage-2: not one of these reads exits (writes, such as a line
        // printed, would).
        use hv_core::hypercall::Counter;
        let before = guest_rt::hvc::counter(Counter::MmioAccesses);
        let mut seen = 0u64;
        for _ in 0..100 {
            seen = seen.wrapping_add((dev.r(reg::INTERRUPT_STATUS) + dev.r(reg::STATUS) + dev.r(reg::CONFIG)) as u64);
            // SAFETY: a load of the UART's flag register (identity-mapped device memory).
            seen = seen.wrapping_add(unsafe { read_volatile((hv_core::guest_dt::layout::UART_BASE + 0x18) as *const u32) } as u64);
        }
        let exits = guest_rt::hvc::counter(Counter::MmioAccesses) - before;
        println!("register reads: 400, exits {} (sum {})", exits, seen);
        check_eq!(exits, 0, "register reads that exited");
    }
    println!("virtio-blk driver done");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
