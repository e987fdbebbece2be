//! The hypervisor's own command line (/chosen/bootargs of the host device tree, i.e. QEMU's
//! `-append`): space-separated `key=value` options.
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `log=error\|warn\|info\|debug\|trace` | log level | `info` |
//! | `mem=SIZE` | RAM of every VM (`K`, `M`, `G` suffixes) | 128M |
//! | `smp=N` | vCPUs of every VM | 1 |
//! | `pauth=on\|off` | pointer authentication for every VM's guest | `on` |
//! | `pauth_keys=lazy\|adaptive\|eager` | when a vCPU owns the PAC key registers (pauth.rs) | `adaptive` |
//! | `sve=on\|off\|BITS` | SVE for every VM's guest, at most BITS long vectors (a multiple of 128 up to 2048; `on`: as long as the CPU has) | `on` |
//! | `pmu=on\|off` | the PMU (PMUv3: cycle and event counters, overflow interrupt) for every VM's guest | `on` |
//! | `overcommit=on\|off` | a VM may have more vCPUs than there are CPUs (they share CPUs by time slices) | `off` |
//! | `populate=eager\|lazy` | guest RAM allocated and mapped at VM creation, or page by page on the guest's first touch (stage-2 faults; the memory is committed to the VM at creation all the same) | `lazy` |
//! | `blocks=on\|off` | with `populate=lazy`, a first touch maps the whole 2 MiB block around it (one fault, one 2 MiB leaf, as KVM does with transparent huge pages) where the block is untouched, inside RAM and a free aligned 2 MiB run of frames exists; else a 4 KiB page | `on` |
//! | `s2leaf=page\|block` | the leaves of the VM's stage-2 tables: 4 KiB pages only, or 2 MiB (and 1 GiB) blocks where RAM is aligned for them. Pages by default: QEMU's TCG sizes each TLB entry by the larger of the two stages' leaves and flushes a translation regime's whole TLB for an invalidation by address inside a large page, which Linux's invalidations by address (tens of thousands in a boot) then do every time | `page` |
//! | `virtio=modern\|legacy` | the virtio-mmio interface of the VM's devices (its disks): version 2, or version 1 as QEMU shows by default | `modern` |
//! | `ramoops=on\|off\|R,C,F,P` | a 1 MiB RAM region below the guest's device tree for Linux's ramoops (a reserved-memory node compatible "ramoops"), divided into records of R KiB and console, ftrace and pmsg buffers of C, F and P KiB (`on`: 64,64,0,64); it survives the VM's reboots and, on a pstore disk with room, runs of the machine | `on` |
//! | `pmsg=on\|off` | a virtio-console in virtio-mmio slot 0 with one port named `pmsg` (Linux: /dev/vportNp0, its name in /sys/class/virtio-ports/vportNp0/name): what the guest writes there is appended to the VM's pmsg ring on the pstore disk, durable when the write returns; only with a pstore disk with room for the VMs' areas | `on` |
//! | `rng=on\|off` | a virtio-rng entropy device in virtio-mmio slot 1, its bytes from the CPU's RNDR (not offered without FEAT_RNG) | `on` |
//! | `balloon=on\|off\|SIZE` | a virtio-balloon in virtio-mmio slot 2 (with `populate=lazy` only): pages the guest puts in it and free memory it reports (free page reporting) go back to the host; `SIZE`: the balloon's target at boot, memory the guest is asked to give back (the console's Ctrl-] - and + change it at run time) | `on` (target 0) |
//! | `net=on\|off` | a network card (virtio-net) in virtio-mmio slot 3 on the hypervisor's switch between the VMs' cards | `off` |
//! | `start=now\|wait` | a VM that does not fit in the host's uncommitted memory at boot is refused (`now`) or waits (`wait`) until other VMs give memory back (balloons, reported free pages) or stop | `now` |
//! | `refault=zero\|keep` | what a page unmapped by the guest (HV_MEM_UNMAP) or by reclaim holds when it faults back in | `zero` |
//! | `vmN.mem=SIZE`, `vmN.smp=N`, `vmN.pauth=`, `vmN.pauth_keys=`, `vmN.pmu=`, `vmN.sve=`, `vmN.overcommit=`, `vmN.populate=`, `vmN.blocks=`, `vmN.s2leaf=`, `vmN.refault=`, `vmN.ramoops=`, `vmN.pmsg=`, `vmN.rng=`, `vmN.balloon=`, `vmN.net=`, `vmN.start=`, `vmN.virtio=` | the same for VM number N only | |
//! | `pstore_serial=NAME` | the serial of the virtio-blk disk that holds the pstore zones | `hv-pstore` |
//! | `pstore_kmsg=KIB`, `pstore_console=KIB`, `pstore_pmsg=KIB` | zone sizes (multiples of 4) | 64, 64, 64 |
//! | `pstore_order=kmsg-first\|linux` | zone order on the disk (pstore.rs in hv-core) | `kmsg-first` |
//! | `pstore_erase=on` | erase the records found at boot, after listing them | off |
//! | `debug_faults=on` | guests may make the hypervisor fault on purpose (HV_DEBUG_FAULT), to test crash reporting | off |
//! | `selftest=on` | the hypervisor checks its own memory routines (memcpy, memmove, memset, memcmp) at boot | off |
//! | `console_prefix=on` | every VM's console output as `vmN\| ` lines, the focused VM's too (else the focused VM's output passes raw) | off |
//! | `ram_zeroed=on` | the machine's RAM reads as zero at power-on (QEMU's does; scripts/qemu.py says so): frames never used since are not zeroed again | off |

use crate::guest_dt::RamoopsSizes;
use crate::pauth::KeyPolicy;
use crate::pstore::{Layout, Order};
use core::fmt;

pub const MAX_VMS: usize = 8;
pub const DEFAULT_VM_MEM: u64 = 128 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmParams {
    pub mem: u64,
    pub vcpus: usize,
    /// The guest may use pointer authentication (if the CPU has it).
    pub pauth: bool,
    pub pauth_keys: KeyPolicy,
    /// The guest has the PMU (if the CPU has one).
    pub pmu: bool,
    /// Longest SVE vector the guest may use, in bits (0: no SVE; 2048: the CPU's longest).
    pub sve_bits: u16,
    /// More vCPUs than physical CPUs allowed.
    pub overcommit: bool,
    /// Guest RAM populated on first touch instead of at creation.
    pub lazy: bool,
    /// First-touch faults of lazy RAM map 2 MiB blocks where they can.
    pub blocks: bool,
    /// Stage-2 leaves may be 2 MiB (and 1 GiB) blocks; else 4 KiB pages only.
    pub stage2_blocks: bool,
    /// A ramoops region in the guest's RAM and device tree, divided so.
    pub ramoops: Option<RamoopsSizes>,
    /// A virtio-console with a port named "pmsg" (the VM's pmsg ring on the pstore disk).
    pub pmsg_port: bool,
    /// A virtio-rng entropy device (where the CPU has RNDR).
    pub rng: bool,
    /// A virtio-balloon whose target at boot is this many bytes.
    pub balloon: Option<u64>,
    /// Wait for memory at boot instead of being refused.
    pub wait_for_memory: bool,
    /// A virtio-net card on the hypervisor's switch.
    pub net: bool,
    /// Its virtio devices use the legacy virtio-mmio interface (version 1).
    pub virtio_legacy: bool,
    /// Unmapped pages keep their content for when they fault back (else they come back zeroed).
    pub keep_unmapped: bool,
}

/// Per-VM settings that override the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Overrides {
    mem: Option<u64>,
    vcpus: Option<usize>,
    pauth: Option<bool>,
    pauth_keys: Option<KeyPolicy>,
    pmu: Option<bool>,
    sve_bits: Option<u16>,
    overcommit: Option<bool>,
    lazy: Option<bool>,
    blocks: Option<bool>,
    stage2_blocks: Option<bool>,
    ramoops: Option<Option<RamoopsSizes>>,
    pmsg_port: Option<bool>,
    rng: Option<bool>,
    balloon: Option<Option<u64>>,
    wait_for_memory: Option<bool>,
    net: Option<bool>,
    virtio_legacy: Option<bool>,
    keep_unmapped: Option<bool>,
}

/// Where and how the pstore zones are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PstoreConfig {
    serial: [u8; 20],
    serial_len: usize,
    pub order: Order,
    pub kmsg_size: u64,
    pub console_size: u64,
    pub pmsg_size: u64,
    pub erase: bool,
}

impl PstoreConfig {
    pub const DEFAULT_SERIAL: &'static str = "hv-pstore";

    pub fn serial(&self) -> &[u8] {
        &self.serial[..self.serial_len]
    }
}

impl Default for PstoreConfig {
    fn default() -> Self {
        let mut serial = [0; 20];
        let name = Self::DEFAULT_SERIAL.as_bytes();
        serial[..name.len()].copy_from_slice(name);
        PstoreConfig {
            serial,
            serial_len: name.len(),
            order: Order::KmsgFirst,
            kmsg_size: Layout::DEFAULT_KMSG,
            console_size: Layout::DEFAULT_CONSOLE,
            pmsg_size: Layout::DEFAULT_PMSG,
            erase: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HvConfig {
    pub log_level: LogLevel,
    pub debug_faults: bool,
    /// Check the hypervisor's own memory routines at boot.
    pub selftest: bool,
    /// Every VM's output line-prefixed, the one with the input focus too.
    pub console_prefix: bool,
    /// The machine's RAM is zero at power-on (mm::frames trusts frames never used since).
    pub ram_zeroed: bool,
    pub pstore: PstoreConfig,
    default: VmParams,
    per_vm: [Overrides; MAX_VMS],
}

/// An option the hypervisor could not use; it is reported and otherwise ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOption<'a> {
    pub option: &'a str,
    pub why: &'static str,
}

impl fmt::Display for BadOption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignoring option `{}`: {}", self.option, self.why)
    }
}

/// Parses "64M", "1G", "4096", "512K".
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

/// The architecture's longest SVE vector.
pub const SVE_MAX_BITS: u16 = 2048;

/// `sve=`'s value: `on` (the longest), `off` (0) or a length in bits.
fn parse_sve(value: &str) -> Option<u16> {
    match value {
        "on" => Some(SVE_MAX_BITS),
        "off" => Some(0),
        _ => value.parse::<u16>().ok().filter(|&b| b >= 128 && b <= SVE_MAX_BITS && b % 128 == 0),
    }
}

impl VmParams {
    pub const DEFAULT: VmParams =
        VmParams {
            mem: DEFAULT_VM_MEM,
            vcpus: 1,
            pauth: true,
            pauth_keys: KeyPolicy::Adaptive,
            pmu: true,
            sve_bits: SVE_MAX_BITS,
            overcommit: false,
            lazy: true,
            blocks: true,
            stage2_blocks: false,
            ramoops: Some(RamoopsSizes::DEFAULT),
            pmsg_port: true,
            rng: true,
            balloon: Some(0),
            wait_for_memory: false,
            net: false,
            virtio_legacy: false,
            keep_unmapped: false,
        };
}

/// "on" or "off".
fn on_off(value: &str) -> Result<bool, &'static str> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("use on or off"),
    }
}

impl Default for HvConfig {
    fn default() -> Self {
        HvConfig {
            log_level: LogLevel::Info,
            debug_faults: false,
            selftest: false,
            console_prefix: false,
            ram_zeroed: false,
            pstore: PstoreConfig::default(),
            default: VmParams::DEFAULT,
            per_vm: [Overrides::default(); MAX_VMS],
        }
    }
}

impl HvConfig {
    /// Parses `cmdline`, calling `bad` for each option it cannot use.
    pub fn parse<'a>(cmdline: &'a str, mut bad: impl FnMut(BadOption<'a>)) -> HvConfig {
        let mut cfg = HvConfig::default();
        for option in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = option.split_once('=') else {
                bad(BadOption { option, why: "expected key=value" });
                continue;
            };
            let (vm, key) = match key.strip_prefix("vm").and_then(|k| k.split_once('.')) {
                Some((n, k)) => match n.parse::<usize>() {
                    Ok(n) if n < MAX_VMS => (Some(n), k),
                    _ => {
                        bad(BadOption { option, why: "no such VM number" });
                        continue;
                    }
                },
                None => (None, key),
            };
            let result = match (key, vm) {
                ("log", None) => match value {
                    "error" => Ok(cfg.log_level = LogLevel::Error),
                    "warn" => Ok(cfg.log_level = LogLevel::Warn),
                    "info" => Ok(cfg.log_level = LogLevel::Info),
                    "debug" => Ok(cfg.log_level = LogLevel::Debug),
                    "trace" => Ok(cfg.log_level = LogLevel::Trace),
                    _ => Err("unknown log level"),
                },
                ("debug_faults", None) => on_off(value).map(|on| cfg.debug_faults = on),
                ("selftest", None) => on_off(value).map(|on| cfg.selftest = on),
                ("ram_zeroed", None) => on_off(value).map(|on| cfg.ram_zeroed = on),
                ("console_prefix", None) => on_off(value).map(|on| cfg.console_prefix = on),
                ("pstore_serial", None) => match value.len() {
                    1..=20 => {
                        cfg.pstore.serial = [0; 20];
                        cfg.pstore.serial[..value.len()].copy_from_slice(value.as_bytes());
                        cfg.pstore.serial_len = value.len();
                        Ok(())
                    }
                    _ => Err("a virtio-blk serial is 1 to 20 bytes"),
                },
                ("pstore_kmsg" | "pstore_console" | "pstore_pmsg", None) => match value.parse::<u64>() {
                    Ok(k) if k % 4 == 0 && k <= 64 << 10 && (k > 0 || key != "pstore_kmsg") => {
                        let bytes = k << 10;
                        match key {
                            "pstore_kmsg" => cfg.pstore.kmsg_size = bytes,
                            "pstore_console" => cfg.pstore.console_size = bytes,
                            _ => cfg.pstore.pmsg_size = bytes,
                        }
                        Ok(())
                    }
                    _ => Err("a zone size in KiB, a multiple of 4 (kmsg at least 4)"),
                },
                ("pstore_order", None) => match value {
                    "kmsg-first" => Ok(cfg.pstore.order = Order::KmsgFirst),
                    "linux" => Ok(cfg.pstore.order = Order::Linux),
                    _ => Err("use kmsg-first or linux"),
                },
                ("pstore_erase", None) => on_off(value).map(|on| cfg.pstore.erase = on),
                ("mem", _) => match parse_size(value) {
                    Some(m) if m >= 2 << 20 && m % (2 << 20) == 0 => Ok(match vm {
                        Some(n) => cfg.per_vm[n].mem = Some(m),
                        None => cfg.default.mem = m,
                    }),
                    _ => Err("memory size must be a multiple of 2M"),
                },
                ("smp", _) => match value.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(match vm {
                        Some(v) => cfg.per_vm[v].vcpus = Some(n),
                        None => cfg.default.vcpus = n,
                    }),
                    _ => Err("vCPU count must be a number >= 1"),
                },
                ("pauth", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].pauth = Some(on),
                    None => cfg.default.pauth = on,
                }),
                ("pmu", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].pmu = Some(on),
                    None => cfg.default.pmu = on,
                }),
                ("sve", _) => match parse_sve(value) {
                    Some(bits) => Ok(match vm {
                        Some(v) => cfg.per_vm[v].sve_bits = Some(bits),
                        None => cfg.default.sve_bits = bits,
                    }),
                    None => Err("use on, off or a vector length in bits (a multiple of 128 up to 2048)"),
                },
                ("overcommit", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].overcommit = Some(on),
                    None => cfg.default.overcommit = on,
                }),
                ("populate", _) => match value {
                    "eager" | "lazy" => Ok(match vm {
                        Some(v) => cfg.per_vm[v].lazy = Some(value == "lazy"),
                        None => cfg.default.lazy = value == "lazy",
                    }),
                    _ => Err("use eager or lazy"),
                },
                ("virtio", _) => match value {
                    "modern" | "legacy" => Ok(match vm {
                        Some(v) => cfg.per_vm[v].virtio_legacy = Some(value == "legacy"),
                        None => cfg.default.virtio_legacy = value == "legacy",
                    }),
                    _ => Err("use modern or legacy"),
                },
                ("ramoops", _) => match on_off(value).map(|on| on.then_some(RamoopsSizes::DEFAULT)).ok().or_else(|| RamoopsSizes::parse(value).map(Some)) {
                    Some(sizes) => Ok(match vm {
                        Some(v) => cfg.per_vm[v].ramoops = Some(sizes),
                        None => cfg.default.ramoops = sizes,
                    }),
                    None => Err("use on, off or RECORD,CONSOLE,FTRACE,PMSG in KiB (powers of two of at least 4, or 0 but the record; together at most 1024 with room for a record)"),
                },
                ("pmsg", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].pmsg_port = Some(on),
                    None => cfg.default.pmsg_port = on,
                }),
                ("net", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].net = Some(on),
                    None => cfg.default.net = on,
                }),
                ("rng", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].rng = Some(on),
                    None => cfg.default.rng = on,
                }),
                ("balloon", _) => match on_off(value).map(|on| on.then_some(0)).ok().or_else(|| parse_size(value).filter(|b| b % (2 << 20) == 0).map(Some)) {
                    Some(balloon) => Ok(match vm {
                        Some(v) => cfg.per_vm[v].balloon = Some(balloon),
                        None => cfg.default.balloon = balloon,
                    }),
                    None => Err("use on, off or the target at boot, a multiple of 2M"),
                },
                ("start", _) => match value {
                    "now" | "wait" => Ok(match vm {
                        Some(v) => cfg.per_vm[v].wait_for_memory = Some(value == "wait"),
                        None => cfg.default.wait_for_memory = value == "wait",
                    }),
                    _ => Err("use now or wait"),
                },
                ("blocks", _) => on_off(value).map(|on| match vm {
                    Some(v) => cfg.per_vm[v].blocks = Some(on),
                    None => cfg.default.blocks = on,
                }),
                ("s2leaf", _) => match value {
                    "page" | "block" => Ok(match vm {
                        Some(v) => cfg.per_vm[v].stage2_blocks = Some(value == "block"),
                        None => cfg.default.stage2_blocks = value == "block",
                    }),
                    _ => Err("use page or block"),
                },
                ("refault", _) => match value {
                    "zero" | "keep" => Ok(match vm {
                        Some(v) => cfg.per_vm[v].keep_unmapped = Some(value == "keep"),
                        None => cfg.default.keep_unmapped = value == "keep",
                    }),
                    _ => Err("use zero or keep"),
                },
                ("pauth_keys", _) => match KeyPolicy::parse(value) {
                    Some(p) => Ok(match vm {
                        Some(v) => cfg.per_vm[v].pauth_keys = Some(p),
                        None => cfg.default.pauth_keys = p,
                    }),
                    None => Err("use lazy, adaptive or eager"),
                },
                _ => Err("unknown option"),
            };
            if let Err(why) = result {
                bad(BadOption { option, why });
            }
        }
        cfg
    }

    /// The parameters of VM number `vm` (counted from 0 in boot-module order).
    pub fn vm(&self, vm: usize) -> VmParams {
        let o = self.per_vm.get(vm).copied().unwrap_or_default();
        VmParams {
            mem: o.mem.unwrap_or(self.default.mem),
            vcpus: o.vcpus.unwrap_or(self.default.vcpus),
            pauth: o.pauth.unwrap_or(self.default.pauth),
            pauth_keys: o.pauth_keys.unwrap_or(self.default.pauth_keys),
            pmu: o.pmu.unwrap_or(self.default.pmu),
            sve_bits: o.sve_bits.unwrap_or(self.default.sve_bits),
            overcommit: o.overcommit.unwrap_or(self.default.overcommit),
            lazy: o.lazy.unwrap_or(self.default.lazy),
            blocks: o.blocks.unwrap_or(self.default.blocks),
            stage2_blocks: o.stage2_blocks.unwrap_or(self.default.stage2_blocks),
            ramoops: o.ramoops.unwrap_or(self.default.ramoops),
            pmsg_port: o.pmsg_port.unwrap_or(self.default.pmsg_port),
            rng: o.rng.unwrap_or(self.default.rng),
            balloon: o.balloon.unwrap_or(self.default.balloon),
            wait_for_memory: o.wait_for_memory.unwrap_or(self.default.wait_for_memory),
            net: o.net.unwrap_or(self.default.net),
            virtio_legacy: o.virtio_legacy.unwrap_or(self.default.virtio_legacy),
            keep_unmapped: o.keep_unmapped.unwrap_or(self.default.keep_unmapped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn sve_lengths() {
        let cfg = HvConfig::parse("sve=512 vm1.sve=off vm2.sve=on", |_| panic!("refused"));
        assert_eq!((cfg.vm(0).sve_bits, cfg.vm(1).sve_bits, cfg.vm(2).sve_bits), (512, 0, 2048));
        for bad in ["sve=100", "sve=4096", "sve=0", "sve=yes"] {
            let mut refused = 0;
            HvConfig::parse(bad, |_| refused += 1);
            assert_eq!(refused, 1, "{bad}");
        }
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999999G"), None);
    }

    #[test]
    fn defaults_and_overrides() {
        let mut bad = Vec::new();
        let c = HvConfig::parse(
            "log=debug mem=256M smp=2 vm1.mem=64M vm1.smp=4 vm1.pauth=off debug_faults=on selftest=on pauth_keys=lazy vm2.pauth_keys=eager vm2.overcommit=on ram_zeroed=on",
            |b| bad.push(b),
        );
        assert!(bad.is_empty());
        assert_eq!(c.log_level, LogLevel::Debug);
        assert!(c.debug_faults);
        assert!(!HvConfig::default().debug_faults);
        assert!(c.selftest && !HvConfig::default().selftest);
        assert!(c.ram_zeroed && !HvConfig::default().ram_zeroed);
        assert!(!HvConfig::default().console_prefix);
        assert!(HvConfig::parse("console_prefix=on", |_| {}).console_prefix);
        let lazy = VmParams { pauth_keys: KeyPolicy::Lazy, ..VmParams::DEFAULT };
        assert_eq!(c.vm(0), VmParams { mem: 256 << 20, vcpus: 2, ..lazy });
        assert_eq!(c.vm(1), VmParams { mem: 64 << 20, vcpus: 4, pauth: false, ..lazy });
        assert_eq!(
            c.vm(2),
            VmParams { mem: 256 << 20, vcpus: 2, pauth_keys: KeyPolicy::Eager, overcommit: true, ..lazy }
        );
        assert_eq!(c.vm(MAX_VMS + 3), VmParams { mem: 256 << 20, vcpus: 2, ..lazy });
        assert_eq!(HvConfig::parse("", |_| ()).vm(0), VmParams::DEFAULT);
        assert!(!HvConfig::parse("pauth=off", |_| ()).vm(5).pauth);
        let p = HvConfig::parse("pstore_serial=disk7 pstore_kmsg=32 pstore_console=0 pstore_order=linux pstore_erase=on", |_| ()).pstore;
        assert_eq!((p.serial(), p.kmsg_size, p.console_size, p.pmsg_size, p.order, p.erase), (&b"disk7"[..], 32 << 10, 0, 64 << 10, Order::Linux, true));
        assert_eq!(HvConfig::default().pstore.serial(), b"hv-pstore");
        assert!(HvConfig::default().vm(0).lazy, "lazy population is the default");
        let m = HvConfig::parse("populate=lazy vm1.populate=eager vm1.refault=keep vm2.blocks=off vm2.s2leaf=block vm2.ramoops=off vm2.virtio=legacy vm2.pmsg=off vm3.ramoops=128,32,16,8 vm3.rng=off vm3.balloon=off vm4.balloon=64M vm4.start=wait vm4.net=on", |_| ());
        assert!(m.vm(0).lazy && !m.vm(0).keep_unmapped && m.vm(0).blocks);
        assert!(!m.vm(2).blocks && m.vm(2).ramoops.is_none() && m.vm(0).ramoops.is_some());
        assert!(m.vm(2).stage2_blocks && !m.vm(0).stage2_blocks);
        assert!(m.vm(2).virtio_legacy && !m.vm(0).virtio_legacy);
        assert!(!m.vm(2).pmsg_port && m.vm(1).pmsg_port);
        assert_eq!(m.vm(3).ramoops, Some(RamoopsSizes { record: 128 << 10, console: 32 << 10, ftrace: 16 << 10, pmsg: 8 << 10 }));
        assert_eq!(m.vm(1).ramoops, Some(RamoopsSizes::DEFAULT));
        assert!(!m.vm(3).rng && m.vm(2).rng);
        assert_eq!((m.vm(3).balloon, m.vm(4).balloon, m.vm(0).balloon), (None, Some(64 << 20), Some(0)));
        assert!(m.vm(4).wait_for_memory && !m.vm(3).wait_for_memory);
        assert!(m.vm(4).net && !m.vm(3).net);
        assert!(!m.vm(1).lazy && m.vm(1).keep_unmapped);
    }

    #[test]
    fn reports_bad_options_and_keeps_going() {
        let mut bad = Vec::new();
        let c = HvConfig::parse("mem=3M smp=0 log=loud vm99.mem=2M frob=1 plain pauth=maybe smp=3 pauth_keys=often overcommit=1 populate=soon blocks=2m s2leaf=huge refault=maybe pstore_kmsg=0 pstore_console=3 pstore_serial=123456789012345678901 pstore_order=up ramoops=64,64 vm1.ramoops=48,64,0,64 balloon=3M start=later", |b| bad.push(b.option));
        assert_eq!(
            bad,
            ["mem=3M", "smp=0", "log=loud", "vm99.mem=2M", "frob=1", "plain", "pauth=maybe", "pauth_keys=often", "overcommit=1", "populate=soon", "blocks=2m", "s2leaf=huge", "refault=maybe", "pstore_kmsg=0", "pstore_console=3", "pstore_serial=123456789012345678901", "pstore_order=up", "ramoops=64,64", "vm1.ramoops=48,64,0,64", "balloon=3M", "start=later"]
        );
        assert_eq!(c.vm(0).vcpus, 3);
    }
}
