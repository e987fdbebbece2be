//! The memory balloon (virtio-balloon in slot 2) driven by a guest of its own: free page
//! reports and inflated pages go back to the host (the VM's released-pages counter grows by
//! each page that had memory) and read as zero when the guest touches them again; reports
//! the device must refuse (outside RAM, unaligned, overlapping, device-readable) are
//! answered and change nothing; PFNs outside RAM are ignored; the config space holds the
//! host's target (`target=MiB` in the bootargs says what to expect).

#![no_std]
#![no_main]

use guest_rt::hvc;
use guest_rt::virtio_driver::{Dev, Queue};
use guest_rt::{check, check_eq, println, BootInfo};
use hv_core::hypercall::Counter;
use hv_core::virtio_mmio::reg;

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;
const SLOT: u64 = 2;
const DEVICE_ID: u32 = 5;
const F_REPORTING: u32 = 1 << 5;
/// Queues with only REPORTING negotiated: inflate 0, deflate 1, reporting 2.
const INFLATE: u16 = 0;
const REPORTING: u16 = 2;
/// Descriptor flag: the device writes the buffer (a report's ranges are device-writable).
const WRITE: u16 = 2;
const NEXT: u16 = 1;

static mut QUEUE: Queue = Queue::new();
/// The PFNs of an inflate request.
static mut PFNS: [u32; 4] = [0; 4];

fn read(addr: u64) -> u64 {
    // SAFETY: `addr` is in this guest's RAM (identity-mapped), in a test region nothing
    // else of the program uses.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

fn write(addr: u64, v: u64) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

/// Writes `v` into the first word of each page of the range.
fn fill(start: u64, len: u64, v: u64) {
    for p in (start..start + len).step_by(PAGE as usize) {
        write(p, v);
    }
}

/// How many pages of the range have `v` as their first word.
fn pages_holding(start: u64, len: u64, v: u64) -> u64 {
    (start..start + len).step_by(PAGE as usize).filter(|&p| read(p) == v).count() as u64
}

/// Publishes a chain of device-writable ranges on the reporting queue and waits for it.
fn report(dev: &mut Dev, ranges: &[(u64, u32, u16)]) -> Option<u32> {
    for (i, &(addr, len, flags)) in ranges.iter().enumerate() {
        let next = if i + 1 < ranges.len() { NEXT } else { 0 };
        dev.desc(i as u16, addr, len, flags | next, i as u16 + 1);
    }
    dev.submit(0)
}

fn main(info: &BootInfo) -> ! {
    let target_mib = info.arg("target").unwrap_or(0);
    // Test region: 2 MiB blocks below the device tree's slot (the last 2 MiB) and the
    // ramoops region (1 MiB below it, rounded to a block).
    let top = info.ram_base + info.ram_size - 2 * MIB2;
    let region = top - 4 * MIB2;
    // The queue and PFN buffer are this program's, used only through the driver.
    let (q, pfns) = (&raw mut QUEUE, &raw mut PFNS);
    let mut dev = Dev::new(SLOT, q).using(REPORTING, F_REPORTING);
    check_eq!(dev.r(reg::DEVICE_ID), DEVICE_ID, "a balloon in slot 2");
    check!(dev.bring_up().is_ok(), "bring-up with free page reporting");
    check!(dev.features & F_REPORTING != 0, "free page reporting offered");
    check_eq!(dev.r(reg::CONFIG) as u64 * PAGE, target_mib << 20, "the host's target in num_pages");
    check_eq!(dev.r(reg::CONFIG + 4), 0, "actual starts at 0");
    dev.w(reg::CONFIG + 4, 7);
    check_eq!(dev.r(reg::CONFIG + 4), 7, "actual is the driver's to write");
    dev.w(reg::CONFIG, 1);
    check_eq!(dev.r(reg::CONFIG) as u64 * PAGE, target_mib << 20, "num_pages is not");
    println!("balloon: device ready, target {} MiB", target_mib);

    // 1. Two reported 2 MiB runs holding data: their memory goes back (1024 pages that had
    // frames), and they read as zero afterwards (faulting in fresh pages).
    fill(region, 2 * MIB2, 0xa5a5);
    let released = hvc::counter(Counter::PagesReleased);
    check!(report(&mut dev, &[(region, MIB2 as u32, WRITE), (region + MIB2, MIB2 as u32, WRITE)]).is_some(), "the report is answered");
    check_eq!(hvc::counter(Counter::PagesReleased) - released, 1024, "pages whose memory went back");
    check_eq!(pages_holding(region, 2 * MIB2, 0), 1024, "reported pages read as zero when used again");
    println!("balloon: reported 4 MiB went back to the host and read as zero");

    // 2. Reports the device must refuse: answered, nothing unmapped.
    fill(region, MIB2, 0x5a5a);
    let released = hvc::counter(Counter::PagesReleased);
    let bad = [
        (0x1000_0000, MIB2 as u32, WRITE),               // not RAM
        (region + 8, PAGE as u32, WRITE),                // unaligned
        (region + 16 * PAGE, 0, WRITE),                  // empty
        (info.ram_base + info.ram_size - PAGE, 2 * PAGE as u32, WRITE), // runs past RAM
    ];
    check!(report(&mut dev, &bad).is_some(), "a report of bad ranges is answered");
    // A device-readable range (alone: one before a device-writable one breaks the queue).
    check!(report(&mut dev, &[(region + 32 * PAGE, PAGE as u32, 0)]).is_some(), "a device-readable report is answered");
    check_eq!(hvc::counter(Counter::PagesReleased) - released, 0, "nothing released for bad ranges");
    check_eq!(pages_holding(region, MIB2, 0x5a5a), 512, "nothing changed for bad ranges");
    // Overlapping ranges: the first is taken, the one overlapping it refused.
    let released = hvc::counter(Counter::PagesReleased);
    check!(report(&mut dev, &[(region, 2 * PAGE as u32, WRITE), (region + PAGE, 4 * PAGE as u32, WRITE)]).is_some(), "overlapping report answered");
    check_eq!(hvc::counter(Counter::PagesReleased) - released, 2, "only the first of two overlapping ranges");
    check_eq!(pages_holding(region, MIB2, 0x5a5a), 510, "the rest of the block keeps its data");
    println!("balloon: bad reports refused, nothing changed");

    // 3. The balloon proper (reset, queue 0): inflated pages go back, PFNs outside RAM are
    // ignored; a page taken back (deflate without telling: no MUST_TELL_HOST) reads zero.
    let mut dev = Dev::new(SLOT, q).using(INFLATE, 0);
    check!(dev.bring_up().is_ok(), "bring-up again for the inflate queue");
    let page = region + MIB2 + 8 * PAGE;
    fill(region + MIB2, MIB2, 0x77);
    // SAFETY: the driver's own buffer, not in the device's hands until published.
    unsafe { *pfns = [(page / PAGE) as u32, (page / PAGE) as u32 + 1, 0xffff_fff0, 0x10] };
    let released = hvc::counter(Counter::PagesReleased);
    dev.desc(0, pfns as u64, 16, 0, 0);
    check!(dev.submit(0).is_some(), "the inflate request is answered");
    check_eq!(hvc::counter(Counter::PagesReleased) - released, 2, "two inflated pages released");
    check_eq!(pages_holding(region + MIB2, MIB2, 0x77), 510, "the others keep their data");
    check_eq!((read(page), read(page + PAGE)), (0, 0), "inflated pages read zero when taken back");
    println!("balloon: inflated pages went back, PFNs outside RAM ignored");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
