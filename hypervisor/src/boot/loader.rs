//! Places a guest's kernel, initrd and device tree in its RAM (arm64 boot protocol):
//! kernel at the RAM base + text_offset, device tree in the last 2 MiB of RAM, initrd just
//! below it. It writes through the guest memory it is handed.

use crate::mm::guest::GuestMemory;
use core::fmt;
use hv_core::guest_dt::{self, layout, GuestDtConfig, RamoopsSizes, RAMOOPS_SIZE};
use hv_core::image::{ImageError, ImageHeader, HEADER_SIZE};
use hv_core::pgtable::PAGE_SIZE;
use hv_core::ranges::Range;

/// The device tree's slot at the top of RAM (Linux caps a DTB at 2 MiB).
const DTB_SLOT: u64 = 2 << 20;

#[derive(Debug)]
pub enum LoadError {
    NotAnImage(ImageError),
    /// Kernel, initrd and device tree do not fit in the VM's RAM.
    TooBig { what: &'static str, need: u64, ram: u64 },
    OutOfMemory,
    TooManyVcpus { asked: usize, cpus: usize },
    DeviceTree,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotAnImage(e) => write!(f, "kernel is not an arm64 Image: {e}"),
            LoadError::TooBig { what, need, ram } => {
                write!(f, "{what} does not fit: needs {} KiB of the VM's {} MiB RAM", need >> 10, ram >> 20)
            }
            LoadError::OutOfMemory => f.write_str("not enough host memory for the VM"),
            LoadError::TooManyVcpus { asked, cpus } => {
                write!(f, "{asked} vCPUs asked but the machine has {cpus} physical CPU(s) for them (overcommit=on lets vCPUs share CPUs)")
            }
            LoadError::DeviceTree => f.write_str("could not build the guest device tree"),
        }
    }
}

pub struct BootInfo {
    pub entry: u64,
    pub dtb: u64,
    pub initrd: Option<(u64, u64)>,
    /// What loading the images wrote.
    pub copied: Copied,
}

/// What loading the boot modules wrote into guest RAM: pages written, and at a warm reset
/// the pages found unchanged (left alone) and the bytes stored into the changed ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct Copied {
    pub pages: u64,
    pub unchanged: u64,
    pub bytes: u64,
}

impl core::ops::Add for Copied {
    type Output = Copied;
    fn add(self, o: Copied) -> Copied {
        Copied { pages: self.pages + o.pages, unchanged: self.unchanged + o.unchanged, bytes: self.bytes + o.bytes }
    }
}

/// Bytes of a boot module (reserved host memory that nothing else uses).
fn module_bytes(r: Range) -> &'static [u8] {
    // SAFETY: module ranges come from the host device tree, are reserved from the frame
    // allocator and identity-mapped for the hypervisor's life.
    unsafe { core::slice::from_raw_parts(r.start as *const u8, r.size() as usize) }
}

/// Copies a boot module into guest RAM at `ipa`, a page at a time. Where the module sits at
/// the same offset from a 2 MiB boundary as its destination (the guest's RAM comes in 2 MiB
/// blocks), each source page and its destination share a slot of QEMU's direct-mapped TLB,
/// and a direct copy evicts one with every access to the other (33 MB took 300 ms): the page
/// goes through a buffer on the stack then. scripts/qemu.py places modules 4 KiB past a
/// 2 MiB boundary, so that the copy is direct. After a warm reset (`warm`) only the words
/// that no longer hold the module's bytes are stored (`GuestMemory::write_changed`): a
/// store to a page QEMU translated code from throws translations away (about 200 us per
/// kernel page when whole pages were rewritten), and the translations of unchanged code
/// stay valid for the next boot.
fn copy_module(mem: &GuestMemory, ipa: u64, bytes: &[u8], warm: bool) -> Result<Copied, LoadError> {
    const SLOTS: u64 = (2 << 20) - PAGE_SIZE;
    // Word-aligned, so that `write_changed` compares whole words from it too.
    #[repr(C, align(8))]
    struct PageBuf([u8; PAGE_SIZE as usize]);
    let mut page = PageBuf([0; PAGE_SIZE as usize]);
    let buf = &mut page.0;
    let mut copied = Copied::default();
    let aliased = (bytes.as_ptr() as u64 ^ ipa) & SLOTS == 0;
    for (i, piece) in bytes.chunks(buf.len()).enumerate() {
        let at = ipa + i as u64 * PAGE_SIZE;
        let from = if aliased {
            buf[..piece.len()].copy_from_slice(piece);
            &buf[..piece.len()]
        } else {
            piece
        };
        if warm {
            match mem.write_changed(at, from).map_err(|_| LoadError::OutOfMemory)? {
                0 => copied.unchanged += 1,
                n => {
                    copied.pages += 1;
                    copied.bytes += n as u64;
                }
            }
            continue;
        }
        mem.write(at, from).map_err(|_| LoadError::OutOfMemory)?;
        copied.pages += 1;
    }
    Ok(copied)
}

/// What is loaded into a VM, and what its device tree tells it.
pub struct Guest<'a> {
    pub id: usize,
    pub vcpus: usize,
    /// Boot modules in host memory.
    pub kernel: Range,
    pub initrd: Option<Range>,
    pub bootargs: &'a str,
    /// Reboots so far.
    pub boot_count: u32,
    /// The device tree lists a PMU.
    pub pmu: bool,
    /// The RAM is the previous boot's (a warm reset): unchanged pages need no copy.
    pub warm: bool,
    /// A ramoops region below the device tree (guest_dt::RAMOOPS_SIZE), divided so.
    pub ramoops: Option<RamoopsSizes>,
}

/// Where a VM with `ram` bytes of RAM has its ramoops region, if it has one: right below
/// its device tree.
pub fn ramoops_region(ram: u64) -> (u64, u64) {
    let dtb = layout::RAM_BASE + ram - DTB_SLOT;
    (dtb - RAMOOPS_SIZE, dtb)
}

pub fn load(guest: &Guest, mem: &GuestMemory) -> Result<BootInfo, LoadError> {
    let kernel = module_bytes(guest.kernel);
    let header = ImageHeader::parse(&kernel[..kernel.len().min(HEADER_SIZE)], kernel.len() as u64).map_err(LoadError::NotAnImage)?;
    let ram = mem.size();
    let dtb = layout::RAM_BASE + ram - DTB_SLOT;
    // Below the device tree: the ramoops region (if any), then the initrd.
    let ramoops = guest.ramoops.map(|sizes| (ramoops_region(ram), sizes));
    let top = ramoops.map_or(dtb, |((start, _), _)| start);
    let reserved = DTB_SLOT + (dtb - top);
    let entry = layout::RAM_BASE + header.text_offset;
    let kernel_end = entry + header.image_size;
    if kernel_end > top {
        return Err(LoadError::TooBig { what: "kernel", need: header.text_offset + header.image_size + reserved, ram });
    }
    let mut copied = copy_module(mem, entry, kernel, guest.warm)?;

    let initrd = match guest.initrd {
        Some(r) => {
            let start = (top - r.size()) & !(PAGE_SIZE - 1);
            if r.size() > top - kernel_end || start < kernel_end {
                return Err(LoadError::TooBig { what: "initrd", need: header.text_offset + header.image_size + r.size() + reserved, ram });
            }
            let c = copy_module(mem, start, module_bytes(r), guest.warm)?;
            copied = copied + c;
            Some((start, start + r.size()))
        }
        None => None,
    };

    let blob = guest_dt::build(&GuestDtConfig {
        vm_id: guest.id,
        ram_size: ram,
        vcpus: guest.vcpus,
        bootargs: guest.bootargs,
        initrd,
        boot_count: guest.boot_count,
        pmu: guest.pmu,
        ramoops,
    })
    .map_err(|_| LoadError::DeviceTree)?;
    if blob.len() as u64 > DTB_SLOT {
        return Err(LoadError::DeviceTree);
    }
    mem.write(dtb, &blob).map_err(|_| LoadError::OutOfMemory)?;
    Ok(BootInfo { entry, dtb, initrd, copied })
}
