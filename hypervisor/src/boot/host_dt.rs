//! The device tree QEMU hands the hypervisor (x0 at entry): RAM, CPUs, UART, GIC, the
//! hypervisor's command line, and guest images from `-device guest-loader` (Xen's
//! convention: /chosen/module@ADDR nodes, "multiboot,kernel" or "multiboot,ramdisk").

use alloc::vec::Vec;
use fdt::Fdt;
use hv_core::ranges::Range;

/// Largest device tree accepted (QEMU's are a few KiB; Linux allows 2 MiB).
const MAX_DTB_SIZE: u32 = 2 << 20;

#[derive(Debug)]
pub enum DtError {
    /// No device tree at the address (bad magic or size).
    NotADeviceTree,
    Malformed(hv_core::dtb_check::DtbError),
}

impl core::fmt::Display for DtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DtError::NotADeviceTree => f.write_str("no device tree magic, or an impossible size"),
            DtError::Malformed(e) => write!(f, "{e}"),
        }
    }
}

pub struct HostDt {
    fdt: Fdt<'static>,
    range: Range,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Kernel,
    Ramdisk,
}

#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub kind: ModuleKind,
    pub range: Range,
    /// bootargs of a kernel module: the guest's command line.
    pub bootargs: &'static str,
}

impl HostDt {
    /// Reads the device tree at physical address `addr`; it must stay untouched (reserved)
    /// for as long as the hypervisor runs.
    pub fn new(addr: u64) -> Result<HostDt, DtError> {
        if addr == 0 || addr % 8 != 0 {
            return Err(DtError::NotADeviceTree);
        }
        // SAFETY: QEMU placed a device tree at `addr` in RAM, which the boot tables map;
        // only the 8-byte header is read before its size is known.
        let (magic, size) = unsafe {
            let p = addr as *const u32;
            (u32::from_be(p.read_volatile()), u32::from_be(p.add(1).read_volatile()))
        };
        if magic != hv_core::dtb_check::fdt::MAGIC || !(40..=MAX_DTB_SIZE).contains(&size) {
            return Err(DtError::NotADeviceTree);
        }
        // SAFETY: the header says the blob is `size` bytes; the region is reserved from the
        // frame allocator, so it stays valid and unchanged ('static).
        let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) };
        // The fdt crate panics on some malformed trees: check the structure first.
        hv_core::dtb_check::check(bytes).map_err(DtError::Malformed)?;
        let fdt = Fdt::new(bytes).map_err(|_| DtError::Malformed(hv_core::dtb_check::DtbError::BadHeader))?;
        Ok(HostDt { fdt, range: Range::new(addr, size as u64) })
    }

    /// Where the blob itself lives.
    pub fn range(&self) -> Range {
        self.range
    }

    pub fn ram(&self) -> impl Iterator<Item = Range> + '_ {
        self.fdt
            .all_nodes()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
            .flat_map(|n| n.reg().into_iter().flatten())
            .filter_map(|r| Some(Range::new(r.starting_address as u64, r.size? as u64)))
    }

    /// /memreserve/ entries and reserved-memory nodes.
    pub fn reservations(&self) -> impl Iterator<Item = Range> + '_ {
        let rsv = self.fdt.memory_reservations().map(|r| Range::new(r.address() as u64, r.size() as u64));
        let nodes = self
            .fdt
            .find_node("/reserved-memory")
            .into_iter()
            .flat_map(|n| n.children())
            .flat_map(|n| n.reg().into_iter().flatten())
            .filter_map(|r| Some(Range::new(r.starting_address as u64, r.size? as u64)));
        rsv.chain(nodes)
    }

    /// MPIDR affinity values of the CPUs, in device-tree order.
    pub fn cpus(&self) -> impl Iterator<Item = u64> + '_ {
        self.fdt
            .find_node("/cpus")
            .into_iter()
            .flat_map(|n| n.children())
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
            .filter_map(|n| n.property("reg").and_then(|p| p.as_usize()).map(|v| v as u64))
    }

    fn first_reg(&self, compatible: &[&str], index: usize) -> Option<Range> {
        let node = self.fdt.find_compatible(compatible)?;
        let r = node.reg()?.nth(index)?;
        Some(Range::new(r.starting_address as u64, r.size? as u64))
    }

    /// The console UART's node: /chosen/stdout-path if it is a PL011, else the first PL011.
    fn uart_node(&self) -> Option<fdt::node::FdtNode<'_, 'static>> {
        let is_pl011 = |n: &fdt::node::FdtNode| n.compatible().is_some_and(|c| c.all().any(|s| s == "arm,pl011"));
        let chosen = self.fdt.find_node("/chosen");
        let stdout = chosen.and_then(|c| c.property("stdout-path")).and_then(|p| p.as_str());
        if let Some(path) = stdout {
            let path = path.split(':').next().unwrap_or(path);
            let node = self.fdt.find_node(path).or_else(|| self.fdt.aliases()?.resolve_node(path));
            if let Some(n) = node.filter(is_pl011) {
                return Some(n);
            }
        }
        self.fdt.find_compatible(&["arm,pl011"])
    }

    /// The console UART's registers.
    pub fn uart(&self) -> Option<Range> {
        let r = self.uart_node()?.reg()?.next()?;
        Some(Range::new(r.starting_address as u64, r.size? as u64))
    }

    /// The console UART's interrupt as a GIC INTID (an SPI: 32 + its number).
    pub fn uart_intid(&self) -> Option<u32> {
        spi_intid(self.uart_node()?)
    }

    /// GICv3 distributor and redistributor regions.
    pub fn gicv3(&self) -> Option<(Range, Range)> {
        Some((self.first_reg(&["arm,gic-v3"], 0)?, self.first_reg(&["arm,gic-v3"], 1)?))
    }

    /// virtio-mmio transports (QEMU's virt has 32, most of them empty): registers and
    /// interrupt (an SPI's INTID).
    pub fn virtio_mmio(&self) -> Vec<(Range, Option<u32>)> {
        self.fdt
            .all_nodes()
            .filter(|n| n.compatible().is_some_and(|c| c.all().any(|s| s == "virtio,mmio")))
            .filter_map(|n| Some((n.reg()?.next()?, spi_intid(n))))
            .filter_map(|(r, intid)| Some((Range::new(r.starting_address as u64, r.size? as u64), intid)))
            .collect()
    }

    /// The PL031 real-time clock (wall-clock time for pstore records).
    pub fn rtc(&self) -> Option<Range> {
        self.first_reg(&["arm,pl031"], 0)
    }

    /// The hypervisor's own command line (QEMU -append).
    pub fn bootargs(&self) -> &'static str {
        let chosen = self.fdt.find_node("/chosen");
        chosen.and_then(|c| c.property("bootargs")).and_then(|p| p.as_str()).unwrap_or("")
    }

    /// A module's reg. QEMU's guest-loader writes it with the root's #address-cells and
    /// #size-cells even though /chosen declares none (where the default would be 2 and 1).
    fn module_reg(&self, n: fdt::node::FdtNode) -> Option<Range> {
        let chosen = self.fdt.find_node("/chosen")?;
        let has_own = chosen.property("#address-cells").is_some();
        let cells = if has_own { chosen.cell_sizes() } else { self.fdt.root().cell_sizes() };
        let raw = n.property("reg")?.value;
        let cell = |i: usize| -> Option<u64> {
            let b = raw.get(i * 4..i * 4 + 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
        };
        let read = |first: usize, count: usize| -> Option<u64> { (first..first + count).try_fold(0u64, |acc, i| Some(acc << 32 | cell(i)?)) };
        let addr = read(0, cells.address_cells)?;
        let size = read(cells.address_cells, cells.size_cells)?;
        Some(Range::new(addr, size))
    }

    /// Guest modules in address order (scripts/qemu.py places them in the order the VMs
    /// are given; libfdt may list nodes in either order).
    pub fn modules(&self) -> Vec<Module> {
        let mut v: Vec<Module> = self
            .fdt
            .find_node("/chosen")
            .into_iter()
            .flat_map(|c| c.children())
            .filter_map(|n| {
                let compat = n.compatible()?;
                let kind = if compat.all().any(|c| c == "multiboot,kernel") {
                    ModuleKind::Kernel
                } else if compat.all().any(|c| c == "multiboot,ramdisk") {
                    ModuleKind::Ramdisk
                } else {
                    return None;
                };
                let range = self.module_reg(n)?;
                let bootargs = n.property("bootargs").and_then(|p| p.as_str()).unwrap_or("");
                Some(Module { kind, range, bootargs })
            })
            .collect();
        v.sort_by_key(|m| m.range.start);
        v
    }
}

/// A node's first interrupt as a GIC INTID, if it is an SPI (`<type number flags>`, type
/// 0; INTID 32 + number).
fn spi_intid(node: fdt::node::FdtNode) -> Option<u32> {
    let raw = node.property("interrupts")?.value;
    let cell = |i: usize| raw.get(i * 4..i * 4 + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    (cell(0)? == 0).then_some(32 + cell(1)?)
}
