//! Virtual machines: a VM's RAM (mm::guest), vCPUs, devices (vdev), exits by exception
//! class, hypercalls, and the registry of the VMs that run. Which vCPU runs where and when,
//! and a VM's start and retirement, are the scheduler's (the layer above).

pub mod debug;
pub mod exit;
pub mod fp;
pub mod hypercall;
pub mod inject;
pub mod mmio;
pub mod network;
pub mod pauth;
pub mod pmu;
pub mod sysreg;
pub mod timer;
pub mod uart_image;
pub mod vcpu;
pub mod virtio_image;

use crate::arch::cpu;
use crate::arch::stacks::MAX_CPUS;
use crate::boot::loader::{self, LoadError};
use crate::mm::guest::GuestMemory;
use crate::vdev::pvpanic::PvPanic;
use crate::vdev::vgic::{self, Vgic};
use crate::vdev::virtio_balloon::{self as balloon, MemoryBalloon};
use crate::vdev::virtio_blk::GuestDisk;
use crate::vdev::virtio_net::{self as net, NetCard};
use crate::vdev::virtio_console::{self as pmsg, PmsgPort};
use crate::vdev::virtio_rng::{self as rng, EntropyDevice};
use crate::vdev::vuart::VUart;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use hv_core::cmdline::VmParams;
use hv_core::guest_dt::layout;
use hv_core::hypercall::Counter;
use hv_core::outcome::Verdict;
use hv_core::ranges::Range;
use hv_core::ratelimit::{self, RateLimit};
use spin::Mutex;
use vcpu::{Power, Vcpu};

/// Everything needed to (re)build a VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub kernel: Range,
    pub initrd: Option<Range>,
    pub bootargs: &'static str,
    pub params: VmParams,
    /// Reboots so far (told to the guest in its device tree).
    pub boot_count: u32,
    /// When the last reboots came (a crash-reboot loop stops the VM).
    pub reboots: hv_core::outcome::Reboots,
}

/// Why a VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// PSCI SYSTEM_OFF.
    PoweredOff,
    /// PSCI SYSTEM_RESET: the VM is built again from its spec.
    Reset,
    /// Every vCPU called CPU_OFF.
    AllVcpusOff,
    /// The hypervisor stopped it: it did something that cannot be continued.
    Crashed(Crash),
}

/// What made the hypervisor stop a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// A physical SError arrived while the guest ran (an asynchronous abort it caused).
    SError,
    /// Its exception vector faults on every entry: it can never run again.
    ExceptionLoop,
    /// Its kernel panicked and halted (seen on its console).
    GuestPanic,
    /// It reported a panic through its pvpanic device.
    PanicReported,
    /// A page it touched could not be given memory (populate=lazy).
    OutOfMemory,
}

impl Crash {
    pub fn describe(self) -> &'static str {
        match self {
            Crash::SError => "an SError (asynchronous abort) while it ran",
            Crash::ExceptionLoop => "an exception loop: its vectors fault on every entry",
            Crash::GuestPanic => "its kernel panicked (seen on its console)",
            Crash::PanicReported => "it reported a panic through pvpanic",
            Crash::OutOfMemory => "no host memory left for a page it touched",
        }
    }
}

pub struct Vm {
    pub id: usize,
    pub spec: VmSpec,
    /// Guest RAM, its stage-2 tables and their notifiers.
    /// Shared only while a reset hands it to the VM's next boot (lifecycle.rs).
    pub mem: Arc<GuestMemory>,
    pub vcpus: Vec<Box<Vcpu>>,
    pub uart: VUart,
    pub pvpanic: PvPanic,
    /// Its kernel printed a panic: recorded when the VM stops, whatever the reason.
    panic_pending: AtomicBool,
    /// When a pvpanic report is acted on at the latest (counter value; 0: none).
    panic_deadline: AtomicU64,
    /// One save of the ramoops region at a time (a stop's and an idle CPU's), and when the
    /// last one began (counter value).
    ramoops_saving: Mutex<()>,
    last_ramoops_save: AtomicU64,
    /// The virtual GIC, when the machine can virtualize one.
    pub vgic: Option<Vgic>,
    /// Its disks (host disks with serial `vm<id>-disk<M>`), disk M in virtio-mmio slot
    /// 31 - M as QEMU fills its slots.
    pub disks: Vec<GuestDisk>,
    /// Its pmsg port (a virtio-console in slot 0), when it has a pmsg ring (`pmsg=on` and a
    /// pstore disk with room) and no disk took the slot.
    pub pmsg_port: Option<PmsgPort>,
    /// Its entropy device (virtio-rng in slot 1), when `rng=on`, the CPU has RNDR and no
    /// disk took the slot.
    pub entropy: Option<EntropyDevice>,
    /// Its memory balloon (virtio-balloon in slot 2), when `balloon=` is not off, its RAM is
    /// populated lazily (only then can its pages go back to the host) and no disk took the
    /// slot.
    pub balloon: Option<MemoryBalloon>,
    /// Its network card (virtio-net in slot 3) on the hypervisor's switch, with `net=on`
    /// when no disk took the slot.
    pub net: Option<NetCard>,
    /// The virtio slots' registers in read-only pages of its stage-2 (reads do not exit).
    virtio_image: virtio_image::VirtioImage,
    /// The UART's registers in a read-only page of its stage-2 while no input waits.
    uart_image: uart_image::UartImage,
    stopping: AtomicBool,
    stop_reason: Mutex<Option<StopReason>>,
    verdict: Mutex<Verdict>,
    /// Run-queue entries still holding this VM; the CPU that drops the last one retires it
    /// (the scheduler's count).
    pub queued: AtomicUsize,
    /// Budget for warnings the guest causes (aborts, UNDEFs), so it cannot flood the log.
    warnings: Mutex<RateLimit>,
    /// Per physical CPU: the vCPU of this VM that was loaded there last (NO_VCPU if none).
    pub last_vcpu_on: [AtomicUsize; MAX_CPUS],
}

pub const NO_VCPU: usize = usize::MAX;

/// Warnings a VM may cause per second before the rest are only counted.
const GUEST_WARNINGS_PER_SECOND: u32 = 32;

impl Vm {
    /// Builds a VM: RAM, stage-2, images, device tree; vCPU 0 ready to start.
    /// `pcpus` lists the physical CPUs its vCPUs go to, in vCPU order. `ram`: the RAM of
    /// the VM's previous boot, after a reset (kept as it is; the images are loaded again).
    pub fn create(id: usize, spec: VmSpec, pcpus: &[usize], ram: Option<Arc<GuestMemory>>) -> Result<Arc<Vm>, LoadError> {
        let vcpus = spec.params.vcpus;
        if vcpus > pcpus.len() {
            return Err(LoadError::TooManyVcpus { asked: vcpus, cpus: pcpus.len() });
        }
        let ram_size = spec.params.mem;
        let vmid = (id as u64 + 1) & 0xff;
        let warm = ram.is_some();
        let mem = match ram {
            Some(mem) => {
                mem.warm_reset();
                mem
            }
            None => Arc::new(
                GuestMemory::new(vmid, cpu::ipa_bits(), layout::RAM_BASE, ram_size, spec.params.lazy, spec.params.blocks, spec.params.keep_unmapped, spec.params.stage2_blocks)
                    .map_err(|_| LoadError::OutOfMemory)?,
            ),
        };

        let disks = crate::drivers::disks::of_vm(id)
            .filter(|d| d.number < layout::VIRTIO_SLOTS as usize)
            .map(|d| GuestDisk::new(layout::VIRTIO_SLOTS - 1 - d.number as u64, d, spec.params.virtio_legacy, &mem))
            .collect::<Vec<GuestDisk>>();
        let pmsg_port = (spec.params.pmsg_port && crate::pstore::pmsg_available(id) && disks.iter().all(|d| d.slot != pmsg::SLOT))
            .then(|| PmsgPort::new(id, spec.params.virtio_legacy));
        let entropy = (spec.params.rng && cpu::features().rng && disks.iter().all(|d| d.slot != rng::SLOT))
            .then(|| EntropyDevice::new(spec.params.virtio_legacy));
        let balloon = spec
            .params
            .balloon
            .filter(|_| mem.is_lazy() && disks.iter().all(|d| d.slot != balloon::SLOT))
            .map(|target| MemoryBalloon::new(id, spec.params.virtio_legacy, target.min(ram_size)));
        let net = (spec.params.net && disks.iter().all(|d| d.slot != net::SLOT))
            .then(|| NetCard::new(id, spec.params.virtio_legacy, network::mac_of(id)));
        let pauth = spec.params.pauth && cpu::features().pauth;
        let image = mem.image(layout::VIRTIO_BASE, virtio_image::PAGES);
        let uart_frame = mem.image(layout::UART_BASE, 1).map(|f| f[0]);
        if image.is_none() || uart_frame.is_none() {
            log::warn!("VM {id}: no memory for the images of its device registers: every read of them exits");
        }
        let vm = Arc::new_cyclic(|weak| {
            let me = weak.as_ptr();
            Vm {
                id,
                mem,
                vcpus: (0..vcpus).map(|i| Box::new(Vcpu::new(i, pcpus[i], me, pauth, spec.params.pauth_keys))).collect(),
                uart: VUart::new(id),
                pvpanic: PvPanic::new(),
                panic_pending: AtomicBool::new(false),
                panic_deadline: AtomicU64::new(0),
                ramoops_saving: Mutex::new(()),
                last_ramoops_save: AtomicU64::new(0),
                vgic: vgic::available().then(|| Vgic::new(vcpus)),
                disks,
                pmsg_port,
                entropy,
                balloon,
                net,
                virtio_image: virtio_image::VirtioImage::new(image),
                uart_image: uart_image::UartImage::new(uart_frame),
                stopping: AtomicBool::new(false),
                stop_reason: Mutex::new(None),
                verdict: Mutex::new(Verdict::NONE),
                queued: AtomicUsize::new(0),
                warnings: Mutex::new(RateLimit::new(GUEST_WARNINGS_PER_SECOND, cpu::counter().0)),
                last_vcpu_on: [const { AtomicUsize::new(NO_VCPU) }; MAX_CPUS],
                spec,
            }
        });
        // Dropping `vm` on error frees RAM and tables (Drop).
        let guest = loader::Guest {
            id,
            vcpus,
            kernel: vm.spec.kernel,
            initrd: vm.spec.initrd,
            bootargs: vm.spec.bootargs,
            boot_count: vm.spec.boot_count,
            pmu: vm.has_pmu(),
            warm,
            ramoops: vm.spec.params.ramoops,
        };
        let started = cpu::counter();
        let boot = loader::load(&guest, &vm.mem)?;
        let load_us = (cpu::counter().1 - started.1) * 1_000_000 / started.0.max(1);
        vm.keep_ramoops(warm);
        vm.write_virtio_image();
        vm.sync_uart_image();
        // Table and image writes must be visible to the guest's walks and fetches.
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
        *vm.vcpus[0].power.lock() = Power::OnPending { entry: boot.entry, context: boot.dtb };
        for d in &vm.disks {
            log::info!(
                "VM {id}: disk \"{}\" ({} KiB{}) in virtio-mmio slot {} (SPI {})",
                d.host.serial,
                d.host.sectors / 2,
                if d.host.read_only { ", read-only" } else { "" },
                d.slot,
                layout::VIRTIO_FIRST_SPI as u64 + d.slot
            );
        }
        if vm.entropy.is_some() {
            log::info!("VM {id}: entropy device (virtio-rng, RNDR) in virtio-mmio slot {} (SPI {})", rng::SLOT, layout::VIRTIO_FIRST_SPI as u64 + rng::SLOT);
        }
        if let Some(b) = &vm.balloon {
            log::info!(
                "VM {id}: memory balloon (virtio-balloon, free page reporting) in virtio-mmio slot {} (SPI {}), target {} MiB",
                balloon::SLOT,
                layout::VIRTIO_FIRST_SPI as u64 + balloon::SLOT,
                b.size().0 >> 20
            );
        }
        if let Some(card) = &vm.net {
            network::attach(id, card.mac);
            log::info!(
                "VM {id}: network card (virtio-net, MAC {}) in virtio-mmio slot {} (SPI {}) on the switch",
                network::MacText(card.mac),
                net::SLOT,
                layout::VIRTIO_FIRST_SPI as u64 + net::SLOT
            );
        }
        if vm.pmsg_port.is_some() {
            log::info!("VM {id}: pmsg port (virtio-console, port \"pmsg\") in virtio-mmio slot {} (SPI {})", pmsg::SLOT, layout::VIRTIO_FIRST_SPI as u64 + pmsg::SLOT);
        }
        log::info!(
            "VM {id}: {} MiB RAM at IPA {:#x} ({}; stage-2 leaves: {}s), {vcpus} vCPU(s) on CPU(s) {:?}, PAuth {}, kernel at {:#x}, device tree at {:#x}{}",
            ram_size >> 20,
            layout::RAM_BASE,
            match (vm.mem.is_lazy(), vm.spec.params.blocks, vm.spec.params.keep_unmapped) {
                (false, _, false) => "populated",
                (false, _, true) => "populated, unmapped pages keep content",
                (true, true, false) => "populated on first touch, 2 MiB blocks",
                (true, false, false) => "populated on first touch, 4 KiB pages",
                (true, true, true) => "populated on first touch, 2 MiB blocks, unmapped pages keep content",
                (true, false, true) => "populated on first touch, 4 KiB pages, unmapped pages keep content",
            },
            if vm.spec.params.stage2_blocks { "block" } else { "page" },
            &pcpus[..vcpus],
            if pauth { vm.spec.params.pauth_keys.name() } else { "off" },
            boot.entry,
            boot.dtb,
            match boot.initrd {
                Some((s, e)) => alloc::format!(", initrd {:#x}..{:#x}", s, e),
                None => alloc::string::String::new(),
            }
        );
        log::info!(
            "VM {id}: images loaded in {} ms ({} KiB written{})",
            load_us / 1000,
            if warm { boot.copied.bytes / 1024 } else { boot.copied.pages * hv_core::pgtable::PAGE_SIZE / 1024 },
            if warm {
                alloc::format!(
                    " into {} changed pages, {} KiB unchanged since the last boot left alone",
                    boot.copied.pages,
                    boot.copied.unchanged * hv_core::pgtable::PAGE_SIZE / 1024
                )
            } else {
                alloc::string::String::new()
            }
        );
        Ok(vm)
    }

    /// Passes the level of the UART's line to the virtual GIC (after any UART access, new
    /// input, or the guest completing the interrupt), and stops the VM once its kernel has
    /// reported a panic and halted.
    pub fn after_uart_activity(&self) {
        if let Some(target) = self.vgic.as_ref().and_then(|g| g.set_level(32 + layout::UART_SPI, self.uart.irq_line())) {
            self.notify(1 << target);
        }
        self.after_uart_output();
    }

    /// After guest output, which leaves the UART's line where it was: stops the VM once its
    /// kernel has reported a panic and halted.
    pub fn after_uart_output(&self) {
        if self.uart.take_panic_start() {
            // Recorded when the VM stops, crashed (after the panic report ends) or not (a
            // kernel that reboots on panic): either way with the whole report in the tail.
            self.panic_pending.store(true, Ordering::Release);
        }
        if self.uart.take_panic_end() {
            self.request_stop(StopReason::Crashed(Crash::GuestPanic));
        }
    }

    /// Its ramoops region, if its device tree has one.
    fn ramoops_region(&self) -> Option<(u64, u64)> {
        self.spec.params.ramoops.map(|_| loader::ramoops_region(self.mem.size()))
    }

    /// Before the first boot, puts the ramoops region saved on the pstore disk back (a
    /// warm reset's RAM still has it); then tracks the guest's writes to it.
    fn keep_ramoops(&self, warm: bool) {
        let (Some((start, end)), Some(sizes)) = (self.ramoops_region(), self.spec.params.ramoops) else { return };
        if !warm {
            let mut region = alloc::vec![0u8; (end - start) as usize];
            if let Some((generation, at)) = crate::pstore::restore_ramoops(self.id, &mut region, sizes) {
                match self.mem.write(start, &region) {
                    Ok(()) => log::info!(
                        "VM {}: ramoops region restored from the pstore disk (saved {} UTC, generation {generation})",
                        self.id,
                        hv_core::pstore::Utc(at)
                    ),
                    Err(e) => log::warn!("VM {}: ramoops region not restored: {e:?}", self.id),
                }
            }
        }
        if let Err(e) = self.mem.track_writes(start) {
            log::warn!("VM {}: writes to its ramoops region not tracked ({e:?}): it is saved whole", self.id);
        }
    }

    /// The VM stops or resets: the pages of its ramoops region the guest wrote go to the
    /// pstore disk.
    pub fn save_ramoops(&self) {
        let _one_at_a_time = self.ramoops_saving.lock();
        self.save_ramoops_now(false);
    }

    /// An idle CPU's save of a running VM's region, when pages were written and the last save
    /// is `interval` old: a machine killed mid-run keeps what the guest's ramoops wrote until
    /// then. Returns when to look again.
    pub fn save_ramoops_if_due(&self, now: u64, interval: u64) -> Option<u64> {
        self.ramoops_region()?;
        let due = self.last_ramoops_save.load(Ordering::Relaxed) + interval;
        if !self.mem.has_written() {
            // Look again then (the guest's writes wake no idle CPU).
            return Some(now + interval);
        }
        if now < due {
            return Some(due);
        }
        let _one_at_a_time = self.ramoops_saving.try_lock()?;
        self.save_ramoops_now(true);
        None
    }

    fn save_ramoops_now(&self, periodic: bool) {
        let Some((start, end)) = self.ramoops_region() else { return };
        self.last_ramoops_save.store(cpu::counter().1, Ordering::Relaxed);
        let written = self.mem.take_written();
        let mut region = alloc::vec![0u8; (end - start) as usize];
        if let Err(e) = self.mem.read(start, &mut region) {
            log::warn!("VM {}: ramoops region not readable ({e:?}): not saved", self.id);
            return;
        }
        let (freq, began) = cpu::counter();
        if let Some((pages, generation)) = crate::pstore::save_ramoops(self.id, &region, &written) {
            log::log!(
                if periodic { log::Level::Debug } else { log::Level::Info },
                "VM {}: ramoops region saved to the pstore disk: {pages} page(s) ({} KiB) written, generation {generation}, {} us{}",
                self.id,
                pages * 4,
                (cpu::counter().1 - began) * 1_000_000 / freq.max(1),
                if periodic { " (while it runs)" } else { "" }
            );
        }
    }

    /// The VM stopped: waits for its disks' requests in flight and unsubscribes them from
    /// its memory, and takes its network card off the switch, before its RAM goes (or is
    /// kept for the next boot, with new devices). Again from Drop: then a no-op.
    pub fn detach_devices(&self) {
        for d in &self.disks {
            d.detach(&self.mem);
        }
        if let Some(card) = &self.net {
            card.stop();
            network::detach(self.id);
        }
    }

    /// Sets the level of a virtio device's interrupt line (its slot's SPI).
    pub fn set_virtio_line(&self, slot: u64, line: bool) {
        self.virtio_state_changed(slot);
        self.virtio_line(slot, line);
    }

    /// `set_virtio_line` once the image is up to date.
    fn virtio_line(&self, slot: u64, line: bool) {
        if let Some(target) = self.vgic.as_ref().and_then(|g| g.set_level(virtio_intid(slot), line)) {
            self.notify(1 << target);
        }
    }

    /// Tells the vCPUs in `set` (bit i: vCPU i) that they have interrupts to take.
    pub fn notify(&self, set: u64) {
        let mut left = set;
        while left != 0 {
            let i = left.trailing_zeros() as usize;
            left &= left - 1;
            if let Some(v) = self.vcpus.get(i) {
                v.notify();
            }
        }
    }

    /// After a guest write to its pvpanic device: a reported panic stops the VM. (Cold: it
    /// logs, and it is off the MMIO emulation path's hot registers.)
    #[cold]
    #[inline(never)]
    pub fn after_pvpanic_write(&self) -> Option<exit::Next> {
        let events = self.pvpanic.take();
        if events & hv_core::guest_dt::pvpanic::CRASH_LOADED != 0 {
            log::info!("VM {}: pvpanic: a crash kernel is loaded", self.id);
        }
        if events & hv_core::guest_dt::pvpanic::PANICKED == 0 {
            return None;
        }
        if self.ramoops_in_use() {
            // Linux reports a panic (its panic notifiers) before it dumps its log into
            // ramoops (kmsg_dump): let it finish. It stops at its reset or halt, at the end
            // of its panic message, or PANIC_DUMP_WAIT_MS from now, whichever comes first.
            self.panic_pending.store(true, Ordering::Release);
            let (freq, now) = cpu::counter();
            if self.panic_deadline.compare_exchange(0, now + freq / 1000 * PANIC_DUMP_WAIT_MS, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                log::info!("VM {}: pvpanic: its kernel panicked; it runs on until it has dumped its log into ramoops", self.id);
            }
            return None;
        }
        Some(exit::Next::Stop(StopReason::Crashed(Crash::PanicReported)))
    }

    /// Whether the guest's ramoops uses its region (a persistent_ram signature at its start).
    fn ramoops_in_use(&self) -> bool {
        let Some((start, _)) = self.ramoops_region() else { return false };
        let mut sig = [0u8; 4];
        self.mem.read(start, &mut sig).is_ok() && u32::from_le_bytes(sig) == 0x4347_4244
    }

    /// A panic reported through pvpanic whose ramoops dump had its time: the stop it waited
    /// for. (On slow exits.)
    #[inline(always)]
    pub fn panic_dump_overdue(&self) -> Option<exit::Next> {
        let deadline = self.panic_deadline.load(Ordering::Relaxed);
        (deadline != 0 && cpu::counter().1 > deadline).then_some(exit::Next::Stop(StopReason::Crashed(Crash::PanicReported)))
    }

    /// Logs a warning caused by the guest, within its budget (and says how many were
    /// dropped before it).
    pub fn warn(&self, args: core::fmt::Arguments) {
        if self.within_log_budget() {
            log::warn!("{args}");
        }
    }

    /// A pstore record of a crash with the VM's last console lines; a kernel panic's record
    /// says what the panic line said.
    fn record_crash(&self, why: Crash) {
        self.uart.flush();
        let (said, len) = self.uart.panic_message();
        let said = core::str::from_utf8(&said[..len]).unwrap_or("(not text)");
        self.uart.with_tail(|tail| match (why, said) {
            (Crash::GuestPanic, said) if !said.is_empty() => {
                crate::pstore::record_guest_crash(self.id, format_args!("its kernel panicked: {said}"), tail)
            }
            _ => crate::pstore::record_guest_crash(self.id, format_args!("{}", why.describe()), tail),
        });
    }

    /// Whether the guest may cause one more log message now (its warning budget); says
    /// how many were dropped before it.
    pub fn within_log_budget(&self) -> bool {
        match self.warnings.lock().check(cpu::counter().1) {
            ratelimit::Verdict::Print { suppressed } => {
                if suppressed > 0 {
                    log::warn!("VM {}: {suppressed} more warnings were not printed", self.id);
                }
                true
            }
            ratelimit::Verdict::Drop => false,
        }
    }

    /// Whether `[ipa, ipa + len)` is guest RAM.
    pub fn is_ram(&self, ipa: u64, len: u64) -> bool {
        self.mem.is_ram(ipa, len)
    }

    /// Its kernel panicked (seen on its console) in this boot.
    pub fn panicked(&self) -> bool {
        self.panic_pending.load(Ordering::Acquire)
    }

    /// The guest has SVE: its VM asked for it (`sve=on` or a length) and the CPU has it.
    pub fn has_sve(&self) -> bool {
        self.spec.params.sve_bits > 0 && crate::arch::fp::sve_available()
    }

    /// The guest's SVE vector length in bytes: its VM's limit, at most what the CPU has.
    pub fn sve_vl(&self) -> usize {
        (self.spec.params.sve_bits as usize / 8).min(crate::arch::fp::max_vl_bytes())
    }

    /// The guest has a PMU: its VM asked for one (`pmu=on`) and the CPU has PMUv3.
    pub fn has_pmu(&self) -> bool {
        self.spec.params.pmu && crate::arch::pmu::available()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Asks every vCPU of the VM to stop; the first reason given is kept.
    pub fn request_stop(&self, reason: StopReason) {
        // A halt after a pvpanic report whose dump was waited for is the panic's end.
        let reason = match reason {
            StopReason::Reset => reason,
            _ if self.panic_deadline.load(Ordering::Acquire) != 0 => StopReason::Crashed(Crash::PanicReported),
            _ => reason,
        };
        let first = {
            let mut r = self.stop_reason.lock();
            let first = r.is_none();
            if first {
                *r = Some(reason);
                match reason {
                    StopReason::Crashed(why) => log::error!("VM {}: stopping: crashed ({why:?})", self.id),
                    _ => log::info!("VM {}: stopping: {:?}", self.id, reason),
                }
            }
            first
        };
        if let (true, StopReason::Crashed(why)) = (first, reason) {
            self.record_crash(why);
        } else if first && self.panic_pending.load(Ordering::Acquire) {
            self.record_crash(Crash::GuestPanic);
        }
        self.stopping.store(true, Ordering::Release);
        // Every CPU holding one of our vCPUs looks at its run queue (and leaves the guest).
        let me = crate::percpu::this_cpu().index();
        for v in &self.vcpus {
            if v.pcpu != me {
                crate::drivers::gicv3::kick_cpu_to_reschedule(v.pcpu);
            }
        }
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop_reason.lock()
    }

    /// HV_TEST_VERDICT: 0 passes, anything else fails (and a failure stays). Out of line:
    /// the hot hypercalls' path stays small.
    #[inline(never)]
    pub fn set_verdict(&self, code: u64) {
        let mut v = self.verdict.lock();
        *v = v.report(code);
        if code == 0 {
            log::info!("VM {}: test verdict PASS", self.id);
        } else {
            log::error!("VM {}: test verdict FAIL (code {code})", self.id);
        }
    }

    pub fn verdict(&self) -> Verdict {
        *self.verdict.lock()
    }

    /// Number of vCPUs that are on or about to be.
    pub fn vcpus_on(&self) -> usize {
        self.vcpus.iter().filter(|v| *v.power.lock() != Power::Off).count()
    }

    pub fn log_counters(&self) {
        use core::fmt::Write;
        for v in &self.vcpus {
            // SAFETY: called at retirement: every vCPU is off and out of all run queues.
            let run = unsafe { v.run_mut() };
            let mut line = alloc::string::String::new();
            for c in Counter::ALL.into_iter().filter(|c| !c.is_vm_wide()) {
                let _ = write!(line, " {}={}", c.name(), run.counter(c));
            }
            log::info!("VM {} vCPU {}:{line}", self.id, v.index);
        }
        let mut line = alloc::string::String::new();
        for c in Counter::ALL {
            if let Some(n) = self.mem.counter(c) {
                let _ = write!(line, " {}={n}", c.name());
            }
        }
        log::info!("VM {} memory:{line} stage2_tables={}", self.id, self.mem.space.table_pages());
        for d in &self.disks {
            let [zero_copy, bounced, waits, accesses, busy_ns, buffers] = d.counts();
            log::info!(
                "VM {} disk \"{}\": requests zero_copy={zero_copy} bounced={bounced} unmap_waits={waits} register_accesses={accesses} busy_ns={busy_ns} buffers={buffers}",
                self.id,
                d.host.serial
            );
        }
        if let Some(p) = &self.pmsg_port {
            let [writes, bytes, failed] = p.counts();
            log::info!("VM {} pmsg port: writes={writes} bytes={bytes} failed={failed}", self.id);
        }
        if let Some(e) = &self.entropy {
            log::info!("VM {} entropy device: bytes={}", self.id, e.bytes());
        }
        if let Some(b) = &self.balloon {
            log::info!("VM {} balloon: {}", self.id, b.describe());
        }
        if let Some(card) = &self.net {
            log::info!("VM {} network card: {}", self.id, card.describe());
        }
    }

    /// The VM's memory now, and its balloon's counts (the console's Ctrl-] m).
    fn log_memory(&self) {
        let mut line = alloc::string::String::new();
        for c in [Counter::PagesPopulated, Counter::PagesReleased, Counter::Stage2Faults] {
            if let Some(n) = self.mem.counter(c) {
                use core::fmt::Write;
                let _ = write!(line, " {}={n}", c.name());
            }
        }
        log::info!(
            "VM {}: {} MiB RAM, {} KiB given back to the host;{line}; host memory free for new VMs {} MiB",
            self.id,
            self.mem.size() >> 20,
            self.mem.given_back_bytes() >> 10,
            crate::mm::frames::uncommitted_bytes() >> 20
        );
        match &self.balloon {
            Some(b) => log::info!("VM {} balloon: {}", self.id, b.describe()),
            None => log::info!("VM {} has no balloon", self.id),
        }
    }

    /// The console's Ctrl-] - and +: the balloon's target moves by BALLOON_STEP (within
    /// the VM's RAM), and the guest is told.
    fn move_balloon(&self, grow_balloon: bool) {
        let Some(b) = &self.balloon else {
            log::warn!("VM {} has no balloon (balloon=off, populate=eager, or a disk in slot {})", self.id, balloon::SLOT);
            return;
        };
        let (target, actual) = b.size();
        let new = if grow_balloon { (target + BALLOON_STEP).min(self.mem.size()) } else { target.saturating_sub(BALLOON_STEP) };
        log::info!("VM {}: balloon target {} MiB (was {} MiB, the guest holds {} MiB in it)", self.id, new >> 20, target >> 20, actual >> 20);
        self.set_virtio_line(balloon::SLOT, b.set_target(&self.mem, new));
    }

    /// A counter by number as HV_COUNTER reads it: VM-wide ones from guest memory.
    pub fn counter(&self, run: &vcpu::VcpuRun, c: Counter) -> u64 {
        self.mem.counter(c).unwrap_or_else(|| run.counter(c))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.detach_devices();
        if Arc::strong_count(&self.mem) > 1 {
            return; // kept for the VM's next boot
        }
        let (ram, table_pages) = self.mem.teardown();
        log::info!(
            "VM {}: freed {} KiB of RAM and {} stage-2 table pages ({} KiB free)",
            self.id,
            ram >> 10,
            table_pages,
            crate::mm::frames::free_bytes() >> 10
        );
    }
}

/// How long a guest that reported a panic may run on to dump its log into ramoops.
const PANIC_DUMP_WAIT_MS: u64 = 2000;

/// Set when a VM gave memory back to the host (its balloon): VMs waiting for memory may fit.
static MEMORY_GIVEN_BACK: AtomicBool = AtomicBool::new(false);

/// A VM gave `bytes` back to the host.
pub fn memory_given_back(bytes: u64) {
    if bytes > 0 {
        MEMORY_GIVEN_BACK.store(true, Ordering::Release);
    }
}

/// Whether memory was given back since the last call.
pub fn take_memory_given_back() -> bool {
    MEMORY_GIVEN_BACK.load(Ordering::Relaxed) && MEMORY_GIVEN_BACK.swap(false, Ordering::AcqRel)
}

/// How far the console's Ctrl-] - and + move a balloon's target.
pub const BALLOON_STEP: u64 = 64 << 20;

/// The VMs that run (terminal input finds its VM here).
static VMS: Mutex<Vec<Arc<Vm>>> = Mutex::new(Vec::new());
/// The machine's exit status so far: the worst outcome of any VM.
static EXIT_STATUS: AtomicU32 = AtomicU32::new(0);

/// A VM starts running.
pub fn register(vm: Arc<Vm>) {
    VMS.lock().push(vm);
}

/// VMs between their stop and their rebuild (SYSTEM_RESET): they still count as running.
static REBOOTING: AtomicUsize = AtomicUsize::new(0);

/// A VM is gone (`rebooting`: it is about to be built again, and counts as running until
/// `rebooted`); returns how many VMs still run.
pub fn unregister(vm: &Arc<Vm>, rebooting: bool) -> usize {
    let mut vms = VMS.lock();
    if rebooting {
        REBOOTING.fetch_add(1, Ordering::SeqCst);
    }
    vms.retain(|v| !Arc::ptr_eq(v, vm));
    vms.len() + REBOOTING.load(Ordering::SeqCst)
}

/// A VM that `unregister` called rebooting is running again (`register`ed), or could not be
/// built; returns how many VMs run.
pub fn rebooted() -> usize {
    let vms = VMS.lock();
    REBOOTING.fetch_sub(1, Ordering::SeqCst);
    vms.len() + REBOOTING.load(Ordering::SeqCst)
}

/// The running VM with id `id`.
pub fn find(id: usize) -> Option<Arc<Vm>> {
    VMS.lock().iter().find(|v| v.id == id).cloned()
}

/// The VMs that run now.
pub fn running() -> Vec<Arc<Vm>> {
    VMS.lock().clone()
}

/// The running VM with the lowest id, if any.
pub fn first_running() -> Option<usize> {
    VMS.lock().iter().map(|v| v.id).min()
}

/// Moves the console's input focus to VM `id` if it runs (logged, `why` added), and shows
/// the line it was printing (its prompt). Whether it runs.
pub fn focus_console(id: usize, why: &str) -> bool {
    let Some(vm) = find(id) else { return false };
    crate::console::set_focus(id);
    log::info!("console input now goes to VM {id}{why}");
    vm.uart.show_partial_line();
    true
}

/// Hands the terminal input the console queued to the VM with the focus, and moves the
/// focus when asked to a VM that runs (else says so, and it stays).
pub fn deliver_console_input() {
    use crate::console::{self, Input};
    use hv_core::console_input::Command;
    console::drain_input(&mut |input| {
        let focus = console::focus();
        match input {
            Input::Focus(id) if id == focus => {}
            Input::Focus(id) => {
                if !focus_console(id, "") {
                    log::warn!("console: there is no VM {id}; input stays with VM {focus}");
                }
            }
            Input::Bytes(bytes) => match find(focus) {
                Some(vm) => {
                    // What does not fit waits in the console's queue until the guest reads.
                    let fit = vm.uart.push_input(bytes);
                    if fit != 0 {
                        // Reads of the data register take input now: they must trap.
                        vm.sync_uart_image();
                        vm.after_uart_activity();
                    }
                    return fit;
                }
                None => log::warn!("console input for VM {focus}, which does not run: dropped"),
            },
            Input::Command(c) => match (find(focus), c) {
                (Some(vm), Command::Shrink) => vm.move_balloon(true),
                (Some(vm), Command::Grow) => vm.move_balloon(false),
                (Some(vm), Command::ShowMemory) => vm.log_memory(),
                (None, _) => log::warn!("console: VM {focus} does not run"),
            },
            Input::Break => {
                if let Some(vm) = find(focus) {
                    if vm.uart.push_break() {
                        vm.sync_uart_image();
                        vm.after_uart_activity();
                    }
                }
            }
        }
        usize::MAX
    });
}

/// The guest INTID of virtio-mmio slot `slot`'s interrupt.
fn virtio_intid(slot: u64) -> u32 {
    32 + layout::VIRTIO_FIRST_SPI + slot as u32
}

/// A host device's interrupt (`intid`, active until this returns): the VM whose disk it is
/// answers what the host disk finished, or the switch takes what the uplink received.
pub fn host_device_interrupt(intid: u32) {
    if crate::drivers::virtio_net::uplink().is_some_and(|u| u.intid == Some(intid)) {
        network::uplink_received();
    } else if let Some(host) = crate::drivers::disks::acknowledge(intid) {
        if let Some(vm) = find(host.vm) {
            complete_disks(&vm, host, &mut |slot, line| vm.virtio_line(slot, line));
        }
    }
    crate::drivers::gicv3::device_done(intid);
}

/// Answers what host disk `host` finished for each of `vm`'s disks on it; `deliver(slot,
/// line)` then sets the slot's line (the register image already says what the device says).
fn complete_disks(vm: &Vm, host: &crate::drivers::disks::HostDisk, deliver: &mut dyn FnMut(u64, bool)) {
    for d in vm.disks.iter().filter(|d| core::ptr::eq(d.host, host)) {
        if let Some(line) = d.complete(&vm.mem) {
            vm.virtio_state_changed(d.slot);
            deliver(d.slot, line);
        }
    }
}

/// A host disk's interrupt (`intid`, acknowledged) taken by the exit fast path of `vcpu`,
/// loaded here with its list registers flushed: when the disk is its VM's, the VM answers
/// what the host disk finished, as `host_device_interrupt` does, and the guest's interrupt
/// goes straight into a list register when it alone is to be delivered (`Vgic::deliver_lone`);
/// else the vCPU is told as usual (and needs a flush). False, having done nothing, for any
/// other interrupt.
pub fn disk_interrupt_on_exit(vm: &Vm, vcpu: &vcpu::Vcpu, intid: u32, irqs_masked: bool) -> bool {
    let Some(host) = crate::drivers::disks::with_interrupt(intid).filter(|h| h.vm == vm.id) else { return false };
    crate::drivers::gicv3::drop_priority(intid);
    host.blk.lock().ack_interrupt();
    complete_disks(vm, host, &mut |slot, line| {
        if !(line && vm.vgic.as_ref().is_some_and(|g| g.deliver_lone(vcpu.index, virtio_intid(slot), irqs_masked))) {
            vm.virtio_line(slot, line);
        }
    });
    crate::drivers::gicv3::device_done(intid);
    true
}

/// How often an idle CPU saves a running VM's written ramoops pages at most.
const RAMOOPS_SAVE_INTERVAL_MS: u64 = 2000;

/// An idle CPU: saves the running VMs' ramoops regions that are due (`Vm::save_ramoops_if_due`).
/// Returns when to look again, for the CPU to wake up then (VMs started later, guests'
/// writes: nothing else wakes an idle CPU).
pub fn save_ramoops_if_due() -> u64 {
    let (freq, now) = cpu::counter();
    let interval = freq / 1000 * RAMOOPS_SAVE_INTERVAL_MS;
    let vms: Vec<Arc<Vm>> = VMS.try_lock().map(|l| l.iter().filter(|v| v.spec.params.ramoops.is_some()).cloned().collect()).unwrap_or_default();
    vms.iter().filter_map(|v| v.save_ramoops_if_due(now, interval)).min().unwrap_or(now + interval)
}

/// The panic path (every other CPU stopped): each running VM's ramoops region goes to the
/// pstore disk from its frames, as at a stop; `report(vm, pages, generation)` for each one
/// saved. Allocates nothing.
pub fn save_ramoops_at_panic(report: &mut dyn FnMut(usize, usize, u64)) {
    if VMS.is_locked() {
        // SAFETY: every other CPU is stopped for good; if this one held the lock, the code
        // that held it never runs again; the list is only read here.
        unsafe { VMS.force_unlock() };
    }
    let Some(vms) = VMS.try_lock() else { return };
    for vm in vms.iter().filter(|v| v.spec.params.ramoops.is_some()) {
        if let Some((written, frames)) = vm.mem.region_at_panic() {
            if let Some((pages, generation)) = crate::pstore::save_ramoops_at_panic(vm.id, &frames, &written) {
                report(vm.id, pages, generation);
            }
        }
    }
}

/// Makes the machine's exit status at least `code` (hv_core::outcome::status).
pub fn raise_exit_status(code: u32) {
    EXIT_STATUS.fetch_max(code, Ordering::AcqRel);
}

pub fn exit_status() -> u32 {
    EXIT_STATUS.load(Ordering::Acquire)
}
