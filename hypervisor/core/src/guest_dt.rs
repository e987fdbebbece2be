//! The device tree each VM is booted with, and the guest-physical layout it describes.
//!
//! The layout follows QEMU's virt machine so that a kernel configured for it finds things
//! where it expects; only what the hypervisor provides is described.

#[cfg(feature = "alloc")]
use crate::fdt_writer::{FdtError, FdtWriter};
#[cfg(feature = "alloc")]
use alloc::{format, vec::Vec};

/// Guest-physical (IPA) layout of every VM.
pub mod layout {
    pub const GICD_BASE: u64 = 0x0800_0000;
    pub const GICD_SIZE: u64 = 0x1_0000;
    pub const GICR_BASE: u64 = 0x080a_0000;
    /// Two 64 KiB frames (RD and SGI) per vCPU.
    pub const GICR_STRIDE: u64 = 0x2_0000;
    pub const UART_BASE: u64 = 0x0900_0000;
    pub const UART_SIZE: u64 = 0x1000;
    /// UART interrupt: SPI 1.
    pub const UART_SPI: u32 = 1;
    /// The pvpanic device (QEMU's "qemu,pvpanic-mmio": one byte register).
    pub const PVPANIC_BASE: u64 = 0x0906_0000;
    pub const PVPANIC_SIZE: u64 = 2;
    pub const RAM_BASE: u64 = 0x4000_0000;
    /// The virtio-mmio transports: 32 slots of 0x200 bytes, slot n's interrupt SPI 16 + n
    /// (edge-triggered), as on QEMU's virt machine.
    pub const VIRTIO_BASE: u64 = 0x0a00_0000;
    pub const VIRTIO_SLOT_SIZE: u64 = 0x200;
    pub const VIRTIO_SLOTS: u64 = 32;
    pub const VIRTIO_FIRST_SPI: u32 = 16;
    /// Timer interrupts (PPIs 11 and 14): the EL1 virtual and physical timers.
    pub const VTIMER_INTID: u32 = 27;
    pub const PTIMER_INTID: u32 = 30;
}

/// The pvpanic register: reads give the events supported, a write reports one.
pub mod pvpanic {
    pub const PANICKED: u8 = 1;
    pub const CRASH_LOADED: u8 = 2;
    pub const SUPPORTED: u8 = PANICKED | CRASH_LOADED;
}

/// What goes into a VM's device tree.
#[derive(Clone, Debug)]
pub struct GuestDtConfig<'a> {
    pub vm_id: usize,
    pub ram_size: u64,
    pub vcpus: usize,
    pub bootargs: &'a str,
    /// Guest-physical [start, end) of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// How many times the VM was rebooted (PSCI SYSTEM_RESET) before this boot.
    pub boot_count: u32,
    /// A PMUv3 node (its overflow interrupt PPI 7).
    pub pmu: bool,
    /// Guest-physical [start, end) of a RAM region for Linux's ramoops (a reserved-memory
    /// node compatible "ramoops") and how it is divided, if there is one.
    pub ramoops: Option<((u64, u64), RamoopsSizes)>,
}

/// The ramoops region's size (RAM the hypervisor keeps, and a slot on the pstore disk).
pub const RAMOOPS_SIZE: u64 = 1 << 20;

/// How the ramoops region is divided, in bytes, as its reserved-memory node says: each
/// panic/oops record, the console, ftrace and pmsg buffers. Linux's ramoops puts the records
/// first (as many as fit in what the three buffers leave), then the buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamoopsSizes {
    pub record: u32,
    pub console: u32,
    pub ftrace: u32,
    pub pmsg: u32,
}

impl RamoopsSizes {
    /// 64 KiB records (14 of them: a full oops with its backtrace fits many times), console
    /// and pmsg buffers.
    pub const DEFAULT: RamoopsSizes = RamoopsSizes { record: 64 << 10, console: 64 << 10, ftrace: 0, pmsg: 64 << 10 };

    /// "RECORD,CONSOLE,FTRACE,PMSG" in KiB, each a power of two of at least 4 (Linux rounds
    /// other sizes down) or 0 for no such buffer (the record size may not be 0), together at
    /// most the region.
    pub fn parse(text: &str) -> Option<RamoopsSizes> {
        let mut kib = [0u64; 4];
        let mut parts = text.split(',');
        for k in kib.iter_mut() {
            *k = parts.next()?.parse().ok()?;
            if *k != 0 && (*k < 4 || !k.is_power_of_two() || *k > RAMOOPS_SIZE >> 10) {
                return None;
            }
        }
        let sizes = RamoopsSizes { record: (kib[0] << 10) as u32, console: (kib[1] << 10) as u32, ftrace: (kib[2] << 10) as u32, pmsg: (kib[3] << 10) as u32 };
        (parts.next().is_none() && sizes.record != 0 && sizes.records() > 0).then_some(sizes)
    }

    /// Bytes the records share: what the buffers leave of the region.
    pub fn dump_bytes(&self) -> u64 {
        RAMOOPS_SIZE.saturating_sub(self.console as u64 + self.ftrace as u64 + self.pmsg as u64)
    }

    /// How many records fit (Linux: the records' share divided by the record size).
    pub fn records(&self) -> u64 {
        if self.record == 0 { 0 } else { self.dump_bytes() / self.record as u64 }
    }
}

/// /chosen property carrying [`GuestDtConfig::boot_count`].
pub const BOOT_COUNT_PROPERTY: &str = "hypervisor,boot-count";

/// MPIDR_EL1 affinity value of vCPU `index` (Aff0 = index, Aff1 = index / 16, as GICv3
/// limits Aff0 to 16 targets per cluster in its SGI target lists).
pub fn vcpu_mpidr(index: usize) -> u64 {
    ((index as u64 / 16) << 8) | (index as u64 % 16)
}

/// Inverse of [`vcpu_mpidr`], for affinity values a guest passes to PSCI.
pub fn vcpu_index(mpidr: u64, vcpus: usize) -> Option<usize> {
    let aff = mpidr & 0xff_00ff_ffff;
    if aff & !0xffff != 0 || (aff & 0xff) >= 16 {
        return None;
    }
    let index = ((aff >> 8) * 16 + (aff & 0xff)) as usize;
    (index < vcpus).then_some(index)
}

/// Builds the blob.
#[cfg(feature = "alloc")]
pub fn build(cfg: &GuestDtConfig<'_>) -> Result<Vec<u8>, FdtError> {
    use layout::*;
    const GIC_PHANDLE: u32 = 1;
    const CLOCK_PHANDLE: u32 = 2;
    const GIC_PPI: u32 = 1;
    const GIC_SPI: u32 = 0;
    const IRQ_LEVEL_HIGH: u32 = 4;
    let mut w = FdtWriter::new();
    w.begin_node("")?;
    w.prop_u32("#address-cells", 2)?;
    w.prop_u32("#size-cells", 2)?;
    w.prop_strs("compatible", &["linux,dummy-virt"])?;
    w.prop_str("model", &format!("hypervisor VM {}", cfg.vm_id))?;
    w.prop_u32("interrupt-parent", GIC_PHANDLE)?;

    w.begin_node("psci")?;
    w.prop_strs("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.prop_str("method", "hvc")?;
    w.end_node()?;

    w.begin_node("cpus")?;
    w.prop_u32("#address-cells", 1)?;
    w.prop_u32("#size-cells", 0)?;
    for i in 0..cfg.vcpus {
        let mpidr = vcpu_mpidr(i);
        w.begin_node(&format!("cpu@{mpidr:x}"))?;
        w.prop_str("device_type", "cpu")?;
        w.prop_strs("compatible", &["arm,armv8"])?;
        w.prop_u32("reg", mpidr as u32)?;
        w.prop_str("enable-method", "psci")?;
        w.end_node()?;
    }
    w.end_node()?;

    w.begin_node(&format!("memory@{RAM_BASE:x}"))?;
    w.prop_str("device_type", "memory")?;
    w.prop_reg64("reg", &[(RAM_BASE, cfg.ram_size)])?;
    w.end_node()?;

    if let Some(((start, end), sizes)) = cfg.ramoops {
        // Linux's ramoops keeps its records here; RAM the hypervisor keeps across a reset.
        w.begin_node("reserved-memory")?;
        w.prop_u32("#address-cells", 2)?;
        w.prop_u32("#size-cells", 2)?;
        w.prop_empty("ranges")?;
        w.begin_node(&format!("ramoops@{start:x}"))?;
        w.prop_strs("compatible", &["ramoops"])?;
        w.prop_reg64("reg", &[(start, end - start)])?;
        w.prop_u32("record-size", sizes.record)?;
        w.prop_u32("console-size", sizes.console)?;
        w.prop_u32("pmsg-size", sizes.pmsg)?;
        w.prop_u32("ftrace-size", sizes.ftrace)?;
        w.end_node()?;
        w.end_node()?;
    }

    w.begin_node("timer")?;
    w.prop_strs("compatible", &["arm,armv8-timer"])?;
    // Secure physical, non-secure physical, virtual, hypervisor timer PPIs.
    let mut irqs = Vec::new();
    for ppi in [13, 14, 11, 10] {
        irqs.extend_from_slice(&[GIC_PPI, ppi, IRQ_LEVEL_HIGH]);
    }
    w.prop_cells("interrupts", &irqs)?;
    w.prop_empty("always-on")?;
    w.end_node()?;

    if cfg.pmu {
        w.begin_node("pmu")?;
        w.prop_strs("compatible", &["arm,armv8-pmuv3"])?;
        w.prop_cells("interrupts", &[GIC_PPI, 7, IRQ_LEVEL_HIGH])?;
        w.end_node()?;
    }

    w.begin_node(&format!("intc@{GICD_BASE:x}"))?;
    w.prop_strs("compatible", &["arm,gic-v3"])?;
    w.prop_u32("#interrupt-cells", 3)?;
    w.prop_empty("interrupt-controller")?;
    w.prop_reg64("reg", &[(GICD_BASE, GICD_SIZE), (GICR_BASE, GICR_STRIDE * cfg.vcpus as u64)])?;
    w.prop_u32("phandle", GIC_PHANDLE)?;
    w.end_node()?;

    w.begin_node("apb-pclk")?;
    w.prop_strs("compatible", &["fixed-clock"])?;
    w.prop_u32("#clock-cells", 0)?;
    w.prop_u32("clock-frequency", 24_000_000)?;
    w.prop_str("clock-output-names", "clk24mhz")?;
    w.prop_u32("phandle", CLOCK_PHANDLE)?;
    w.end_node()?;

    let uart = format!("pl011@{UART_BASE:x}");
    w.begin_node(&uart)?;
    w.prop_strs("compatible", &["arm,pl011", "arm,primecell"])?;
    w.prop_reg64("reg", &[(UART_BASE, UART_SIZE)])?;
    w.prop_cells("interrupts", &[GIC_SPI, UART_SPI, IRQ_LEVEL_HIGH])?;
    w.prop_strs("clock-names", &["uartclk", "apb_pclk"])?;
    w.prop_cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.end_node()?;

    let pvpanic = format!("pvpanic@{PVPANIC_BASE:x}");
    w.begin_node(&pvpanic)?;
    w.prop_strs("compatible", &["qemu,pvpanic-mmio"])?;
    w.prop_reg64("reg", &[(PVPANIC_BASE, PVPANIC_SIZE)])?;
    w.end_node()?;

    const IRQ_EDGE_RISING: u32 = 1;
    // Listed from the last slot to the first, as QEMU does (Linux probes them in reverse).
    for n in (0..VIRTIO_SLOTS).rev() {
        let base = VIRTIO_BASE + n * VIRTIO_SLOT_SIZE;
        w.begin_node(&format!("virtio_mmio@{base:x}"))?;
        w.prop_strs("compatible", &["virtio,mmio"])?;
        w.prop_reg64("reg", &[(base, VIRTIO_SLOT_SIZE)])?;
        w.prop_cells("interrupts", &[GIC_SPI, VIRTIO_FIRST_SPI + n as u32, IRQ_EDGE_RISING])?;
        w.prop_empty("dma-coherent")?;
        w.end_node()?;
    }

    w.begin_node("chosen")?;
    w.prop_str("bootargs", cfg.bootargs)?;
    w.prop_str("stdout-path", &format!("/{uart}"))?;
    if let Some((start, end)) = cfg.initrd {
        w.prop_u64("linux,initrd-start", start)?;
        w.prop_u64("linux,initrd-end", end)?;
    }
    w.prop_u32(BOOT_COUNT_PROPERTY, cfg.boot_count)?;
    w.end_node()?;

    w.end_node()?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_vm() {
        let blob = build(&GuestDtConfig {
            vm_id: 3,
            ram_size: 256 << 20,
            vcpus: 4,
            bootargs: "console=ttyAMA0 earlycon",
            initrd: Some((0x4800_0000, 0x4810_0000)),
            boot_count: 2,
            pmu: true,
            ramoops: Some(((0x4fd0_0000, 0x4fe0_0000), RamoopsSizes { record: 128 << 10, console: 32 << 10, ftrace: 16 << 10, pmsg: 8 << 10 })),
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let mem = fdt.memory().regions().next().unwrap();
        assert_eq!((mem.starting_address as u64, mem.size), (layout::RAM_BASE, Some(256 << 20)));
        assert_eq!(fdt.cpus().count(), 4);
        let ids: std::vec::Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        assert_eq!(fdt.chosen().bootargs(), Some("console=ttyAMA0 earlycon"));
        assert_eq!(fdt.chosen().stdout().unwrap().name, "pl011@9000000");
        let chosen = fdt.find_node("/chosen").unwrap();
        let start = chosen.property("linux,initrd-start").unwrap().as_usize().unwrap();
        assert_eq!(start, 0x4800_0000);
        assert_eq!(chosen.property(BOOT_COUNT_PROPERTY).unwrap().as_usize(), Some(2));
        let gic = fdt.find_compatible(&["arm,gic-v3"]).unwrap();
        let regs: std::vec::Vec<_> = gic.reg().unwrap().collect();
        assert_eq!(regs[1].size, Some(4 * 0x2_0000));
        let psci = fdt.find_node("/psci").unwrap();
        assert_eq!(psci.property("method").unwrap().as_str(), Some("hvc"));
        assert_eq!(fdt.root().property("model").unwrap().as_str(), Some("hypervisor VM 3"));
        let pvpanic = fdt.find_compatible(&["qemu,pvpanic-mmio"]).unwrap();
        assert_eq!(pvpanic.reg().unwrap().next().unwrap().starting_address as u64, layout::PVPANIC_BASE);
        let mut virtio: std::vec::Vec<(u64, u32)> = fdt
            .all_nodes()
            .filter(|n| n.compatible().is_some_and(|c| c.all().any(|s| s == "virtio,mmio")))
            .map(|n| {
                let irq = n.property("interrupts").unwrap().value;
                (n.reg().unwrap().next().unwrap().starting_address as u64, u32::from_be_bytes(irq[4..8].try_into().unwrap()))
            })
            .collect();
        virtio.sort();
        assert_eq!(virtio.len(), 32);
        let pmu = fdt.find_compatible(&["arm,armv8-pmuv3"]).unwrap();
        assert_eq!(pmu.property("interrupts").unwrap().value[4..8], [0, 0, 0, 7]);
        assert_eq!(virtio[0], (0x0a00_0000, 16));
        assert_eq!(virtio[31], (0x0a00_0000 + 31 * 0x200, 47));
        let ramoops = fdt.find_compatible(&["ramoops"]).unwrap();
        let r = ramoops.reg().unwrap().next().unwrap();
        assert_eq!((r.starting_address as u64, r.size), (0x4fd0_0000, Some(1 << 20)));
        assert_eq!(ramoops.property("record-size").unwrap().as_usize(), Some(128 << 10));
        assert_eq!(ramoops.property("console-size").unwrap().as_usize(), Some(32 << 10));
        assert_eq!(ramoops.property("ftrace-size").unwrap().as_usize(), Some(16 << 10));
        assert_eq!(ramoops.property("pmsg-size").unwrap().as_usize(), Some(8 << 10));
        assert!(fdt.find_node("/reserved-memory").unwrap().property("ranges").is_some());
    }

    #[test]
    fn ramoops_sizes_are_checked() {
        assert_eq!(RamoopsSizes::parse("64,64,0,64"), Some(RamoopsSizes::DEFAULT));
        assert_eq!(RamoopsSizes::DEFAULT.records(), 14);
        assert_eq!(RamoopsSizes::parse("1024,0,0,0").map(|s| s.records()), Some(1));
        let s = RamoopsSizes::parse("128,32,16,8").unwrap();
        assert_eq!((s.record, s.ftrace, s.dump_bytes(), s.records()), (128 << 10, 16 << 10, (1024 - 56) << 10, 7));
        for bad in ["", "64", "64,64,0", "64,64,0,64,4", "0,64,0,64", "48,64,0,64", "2,0,0,0", "64,-4,0,64", "64,1024,0,64",
                    "2048,0,0,0", "64,x,0,64", "1024,512,0,0", "99999999999999999999,0,0,0"] {
            assert_eq!(RamoopsSizes::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn mpidr_mapping_round_trips_and_rejects_strangers() {
        for i in 0..40 {
            assert_eq!(vcpu_index(vcpu_mpidr(i), 40), Some(i));
        }
        assert_eq!(vcpu_index(vcpu_mpidr(4), 4), None);
        assert_eq!(vcpu_index(0x1_0000, 64), None, "Aff2 is never used");
        assert_eq!(vcpu_index(0x20, 64), None, "Aff0 stays below 16");
        assert_eq!(vcpu_index(0x8000_0000 | 2, 4), Some(2), "MPIDR's RES1 bit is ignored");
    }
}
