//! The virtio-mmio transport as guests see it in their machine's slots (virtio 1.2 section
//! 4.2.2; QEMU's virt machine has 32 of them). An empty slot is answered as QEMU answers an
//! empty transport: magic, version and vendor ID, everything else zero, writes ignored, so
//! that a driver probing the slots finds "no device" (DeviceID 0).
//!
//! `Transport` is the register file of a slot with a device behind it (the modern
//! interface, version 2, or the legacy one, version 1): feature negotiation, device status
//! and reset, queue configuration, interrupt status and acknowledge, and config space
//! through the device.
//! It is the part every device type shares; a device is its `VirtioDevice` (config space,
//! features, queues) and its queue handlers, which the transport's `Effect`s start. Nothing
//! a guest writes can make it panic: bad values are refused as the specification allows
//! (FEATURES_OK not kept, a queue size that is not a power of two up to the maximum
//! ignored, configuration of a live queue ignored).

/// Register offsets from a transport's base.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    /// Legacy (version 1) only: the guest's page size, the used ring's alignment, and the
    /// queue's page frame number (the rings laid out from there).
    pub const GUEST_PAGE_SIZE: u64 = 0x028;
    pub const QUEUE_ALIGN: u64 = 0x03c;
    pub const QUEUE_PFN: u64 = 0x040;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.2 section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// InterruptStatus bits.
pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Feature bits every device offers through this transport.
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;

/// The modern transport (version 2).
pub const VERSION_MODERN: u32 = 2;

/// Queues a transport can hold.
pub const MAX_QUEUES: usize = 8;

/// What a device type gives its transport.
pub trait VirtioDevice {
    /// Its virtio device ID (2: block, 1: network, 4: entropy, 5: balloon).
    fn device_id(&self) -> u32;
    /// The feature bits it offers (the transport adds VERSION_1).
    fn features(&self) -> u64;
    /// Queue `q`'s largest size; 0 if it has no such queue.
    fn queue_max(&self, q: usize) -> u16;
    /// Its config space (offset from the start of config space); reads past it are 0.
    fn read_config(&self, offset: u64, size: u8) -> u64;
    fn write_config(&mut self, offset: u64, size: u8, value: u64);
    /// The driver reset the device: forget everything in flight.
    fn reset(&mut self);
}

/// A queue's configuration as the driver set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub size: u16,
    pub ready: bool,
    /// Guest-physical addresses of the descriptor table, driver (available) ring and
    /// device (used) ring.
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// What a register write asks the caller to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// The driver notified queue n: process its available buffers.
    Notify(u16),
    /// The driver reset the device (status 0): the device model was reset; drop the
    /// interrupt line.
    Reset,
    /// The interrupt line may have changed (InterruptACK).
    InterruptChanged,
    /// The driver set DRIVER_OK: the device is live.
    DriverOk,
}

/// The register file of a slot with a device behind it.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// The legacy interface (version 1, QEMU's default) instead of the modern one.
    legacy: bool,
    /// The device gave up on its queues (a broken ring) until the driver resets it.
    broken: bool,
    /// Legacy: GuestPageSize, and per queue QueueAlign and QueuePFN.
    page_size: u32,
    align: [u32; MAX_QUEUES],
    pfn: [u32; MAX_QUEUES],
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: [QueueConfig; MAX_QUEUES],
    interrupt_status: u32,
    config_generation: u32,
}

impl Transport {
    /// A transport with the legacy interface (version 1) or the modern one.
    pub fn new(legacy: bool) -> Transport {
        if legacy {
            Transport::legacy()
        } else {
            Transport::modern()
        }
    }

    /// A transport with the modern interface (version 2).
    pub fn modern() -> Transport {
        Transport::default()
    }

    /// A transport with the legacy interface (version 1): 32 feature bits and no
    /// FEATURES_OK, queues placed by page frame number.
    pub fn legacy() -> Transport {
        Transport { legacy: true, ..Transport::default() }
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver accepted (valid once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    pub fn queue(&self, q: usize) -> Option<&QueueConfig> {
        self.queues.get(q)
    }

    /// Whether the device is live: the driver set DRIVER_OK and the device did not give up
    /// on its queues since.
    pub fn live(&self) -> bool {
        !self.broken && self.status & status::DRIVER_OK != 0
    }

    /// The registers that change without the driver writing them: InterruptStatus, Status
    /// (DEVICE_NEEDS_RESET) and ConfigGeneration, as reads of them return.
    pub fn device_driven(&self) -> [u32; 3] {
        [self.interrupt_status, self.status, if self.legacy { 0 } else { self.config_generation }]
    }

    /// The interrupt line: high while an InterruptStatus bit is set.
    pub fn interrupt_line(&self) -> bool {
        self.interrupt_status != 0
    }

    /// The device used buffers (or its config changed): the interrupt the driver must
    /// acknowledge.
    pub fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits & (INT_USED_BUFFER | INT_CONFIG_CHANGE);
        if bits & INT_CONFIG_CHANGE != 0 {
            self.config_generation = self.config_generation.wrapping_add(1);
        }
    }

    /// The device cannot go on (a driver broke the rules): it serves no more notifications
    /// until reset; the modern interface also says DEVICE_NEEDS_RESET with a config
    /// interrupt, as the specification says (the legacy one has no such status: QEMU's
    /// legacy devices just stop).
    pub fn needs_reset(&mut self) {
        self.broken = true;
        if !self.legacy && self.status & status::DRIVER_OK != 0 {
            self.status |= status::DEVICE_NEEDS_RESET;
            self.raise(INT_CONFIG_CHANGE);
        }
    }

    fn offered(&self, dev: &dyn VirtioDevice) -> u64 {
        if self.legacy {
            dev.features() & 0xffff_ffff
        } else {
            dev.features() | F_VERSION_1
        }
    }

    fn selected(&self) -> Option<usize> {
        let q = self.queue_sel as usize;
        (q < MAX_QUEUES).then_some(q)
    }

    pub fn read(&self, dev: &dyn VirtioDevice, offset: u64, size: u8) -> u64 {
        if offset >= reg::CONFIG {
            return dev.read_config(offset - reg::CONFIG, size);
        }
        // Registers are 32 bits wide and accessed as such (virtio 1.2 4.2.2.2).
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        let q = self.selected().map(|q| (q, self.queues[q]));
        let v: u32 = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => if self.legacy { VERSION_LEGACY } else { VERSION_MODERN },
            reg::DEVICE_ID => dev.device_id(),
            reg::VENDOR_ID => VENDOR_QEMU,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered(dev) as u32,
                1 => (self.offered(dev) >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |(n, _)| dev.queue_max(n) as u32),
            reg::QUEUE_PFN if self.legacy => q.map_or(0, |(n, _)| self.pfn[n]),
            reg::QUEUE_READY if !self.legacy => q.is_some_and(|(_, c)| c.ready) as u32,
            reg::CONFIG_GENERATION if self.legacy => 0,
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        v as u64
    }

    pub fn write(&mut self, dev: &mut dyn VirtioDevice, offset: u64, size: u8, value: u64) -> Effect {
        if offset >= reg::CONFIG {
            dev.write_config(offset - reg::CONFIG, size, value);
            return Effect::None;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return Effect::None;
        }
        let v = value as u32;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            // Features are fixed once FEATURES_OK is set.
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v as u64) << 32,
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::GUEST_PAGE_SIZE if self.legacy => self.page_size = v,
            reg::QUEUE_NOTIFY => {
                return match self.queues.get(v as usize) {
                    Some(c) if c.ready && !self.broken && self.status & status::DRIVER_OK != 0 => Effect::Notify(v as u16),
                    _ => Effect::None,
                }
            }
            reg::INTERRUPT_ACK => {
                self.interrupt_status &= !v;
                return Effect::InterruptChanged;
            }
            reg::STATUS => return self.write_status(dev, v),
            _ => self.write_queue(dev, offset, v),
        }
        Effect::None
    }

    fn write_status(&mut self, dev: &mut dyn VirtioDevice, v: u32) -> Effect {
        if v == 0 {
            *self = Transport { legacy: self.legacy, config_generation: self.config_generation, ..Transport::default() };
            dev.reset();
            return Effect::Reset;
        }
        let mut new = v & !status::DEVICE_NEEDS_RESET | self.status & status::DEVICE_NEEDS_RESET;
        if self.legacy {
            // No FEATURES_OK in the legacy interface: what the driver wrote is what it
            // accepted, within what was offered.
            new &= !status::FEATURES_OK;
            self.driver_features &= self.offered(dev);
        } else if new & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // Kept only for a subset of what was offered, with VERSION_1.
            let offered = self.offered(dev);
            if self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0 {
                new &= !status::FEATURES_OK;
            }
        }
        let driver_ok = new & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0;
        self.status = new;
        if driver_ok {
            Effect::DriverOk
        } else {
            Effect::None
        }
    }

    /// Queue configuration: only while the selected queue exists and is not live.
    fn write_queue(&mut self, dev: &dyn VirtioDevice, offset: u64, v: u32) {
        let Some(n) = self.selected() else { return };
        let max = dev.queue_max(n);
        if self.legacy {
            self.write_legacy_queue(n, max, offset, v);
            return;
        }
        let c = &mut self.queues[n];
        if max == 0 || (c.ready && offset != reg::QUEUE_READY) {
            return;
        }
        let set_low = |x: &mut u64| *x = (*x & !0xffff_ffff) | v as u64;
        let set_high = |x: &mut u64| *x = (*x & 0xffff_ffff) | (v as u64) << 32;
        match offset {
            reg::QUEUE_NUM if v.is_power_of_two() && v <= max as u32 => c.size = v as u16,
            reg::QUEUE_READY => c.ready = v & 1 != 0 && c.size != 0,
            reg::QUEUE_DESC_LOW => set_low(&mut c.desc),
            reg::QUEUE_DESC_HIGH => set_high(&mut c.desc),
            reg::QUEUE_DRIVER_LOW => set_low(&mut c.driver),
            reg::QUEUE_DRIVER_HIGH => set_high(&mut c.driver),
            reg::QUEUE_DEVICE_LOW => set_low(&mut c.device),
            reg::QUEUE_DEVICE_HIGH => set_high(&mut c.device),
            _ => {}
        }
    }
}

impl Transport {
    /// Legacy queue registers: QueueNum, QueueAlign, QueuePFN (non-zero: the queue is live,
    /// its rings laid out from that page as the legacy interface says; zero: stopped).
    fn write_legacy_queue(&mut self, n: usize, max: u16, offset: u64, v: u32) {
        let c = &mut self.queues[n];
        if max == 0 || (c.ready && offset != reg::QUEUE_PFN) {
            return;
        }
        match offset {
            reg::QUEUE_NUM if v.is_power_of_two() && v <= max as u32 => c.size = v as u16,
            reg::QUEUE_ALIGN if v.is_power_of_two() => self.align[n] = v,
            reg::QUEUE_PFN => {
                self.pfn[n] = v;
                let page = if self.page_size.is_power_of_two() { self.page_size as u64 } else { 4096 };
                let align = if self.align[n].is_power_of_two() { self.align[n] as u64 } else { 4096 };
                let size = c.size as u64;
                if v == 0 || size == 0 {
                    *c = QueueConfig::default();
                    return;
                }
                c.desc = v as u64 * page;
                c.driver = c.desc + 16 * size;
                // The used ring after the available one (flags, idx, ring, used_event),
                // aligned up.
                c.device = (c.driver + 6 + 2 * size + align - 1) & !(align - 1);
                c.ready = true;
            }
            _ => {}
        }
    }
}

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// QEMU's vendor ID ("QEMU").
pub const VENDOR_QEMU: u32 = 0x554d_4551;
/// The legacy transport (version 1), what QEMU's virt machine shows by default.
pub const VERSION_LEGACY: u32 = 1;

/// A little-endian read of `size` bytes at `offset` of a device's config space, given as
/// bytes; bytes past its end read as zero.
pub fn config_bytes_read(config: &[u8], offset: u64, size: u8) -> u64 {
    (0..size as u64).filter_map(|i| config.get((offset + i) as usize).map(|b| (*b as u64) << (8 * i))).fold(0, |a, b| a | b)
}

/// A read of `size` bytes at `offset` of an empty transport.
pub fn empty_slot_read(offset: u64, size: u8) -> u64 {
    let value = match offset {
        reg::MAGIC => MAGIC,
        reg::VERSION => VERSION_LEGACY,
        reg::VENDOR_ID => VENDOR_QEMU,
        _ => 0,
    } as u64;
    if size >= 8 {
        value
    } else {
        value & ((1u64 << (8 * size as u32)) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_slot_says_virtio_but_no_device() {
        assert_eq!(empty_slot_read(reg::MAGIC, 4), 0x7472_6976);
        assert_eq!(empty_slot_read(reg::VERSION, 4), 1);
        assert_eq!(empty_slot_read(reg::DEVICE_ID, 4), 0);
        assert_eq!(empty_slot_read(reg::VENDOR_ID, 4), 0x554d_4551);
        assert_eq!(empty_slot_read(0x070, 4), 0, "Status");
        assert_eq!(empty_slot_read(reg::MAGIC, 1), 0x76, "a byte read sees the low byte");
        assert_eq!(empty_slot_read(0x1ff, 1), 0);
    }

    /// A block-like device: one queue of up to 128, 8 bytes of config.
    #[derive(Default)]
    struct Dev {
        config: u64,
        resets: u32,
    }

    impl VirtioDevice for Dev {
        fn device_id(&self) -> u32 {
            2
        }
        fn features(&self) -> u64 {
            1 << 9 | F_RING_INDIRECT_DESC
        }
        fn queue_max(&self, q: usize) -> u16 {
            if q == 0 { 128 } else { 0 }
        }
        fn read_config(&self, offset: u64, size: u8) -> u64 {
            if offset >= 8 {
                return 0;
            }
            (self.config >> (8 * offset)) & (u64::MAX >> (64 - 8 * size.clamp(1, 8) as u32))
        }
        fn write_config(&mut self, _offset: u64, _size: u8, _value: u64) {}
        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    fn w(t: &mut Transport, d: &mut Dev, offset: u64, v: u64) -> Effect {
        t.write(d, offset, 4, v)
    }

    /// A driver's start as Linux's virtio_mmio does it, up to DRIVER_OK with queue 0 live.
    fn bring_up(t: &mut Transport, d: &mut Dev, features: u64) {
        w(t, d, reg::STATUS, 0);
        w(t, d, reg::STATUS, status::ACKNOWLEDGE as u64);
        w(t, d, reg::STATUS, (status::ACKNOWLEDGE | status::DRIVER) as u64);
        w(t, d, reg::DRIVER_FEATURES_SEL, 0);
        w(t, d, reg::DRIVER_FEATURES, features & 0xffff_ffff);
        w(t, d, reg::DRIVER_FEATURES_SEL, 1);
        w(t, d, reg::DRIVER_FEATURES, features >> 32);
        w(t, d, reg::STATUS, (status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK) as u64);
        w(t, d, reg::QUEUE_SEL, 0);
        w(t, d, reg::QUEUE_NUM, 128);
        w(t, d, reg::QUEUE_DESC_LOW, 0x4000_1000);
        w(t, d, reg::QUEUE_DRIVER_LOW, 0x4000_2000);
        w(t, d, reg::QUEUE_DEVICE_LOW, 0x4000_3000);
        w(t, d, reg::QUEUE_DEVICE_HIGH, 0x1);
        w(t, d, reg::QUEUE_READY, 1);
    }

    #[test]
    fn a_driver_brings_a_device_up() {
        let (mut t, mut d) = (Transport::default(), Dev { config: 0x1122_3344_5566_7788, resets: 0 });
        assert_eq!(t.read(&d, reg::VERSION, 4), 2);
        assert_eq!(t.read(&d, reg::DEVICE_ID, 4), 2);
        w(&mut t, &mut d, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(t.read(&d, reg::DEVICE_FEATURES, 4), 1, "VERSION_1 offered");
        bring_up(&mut t, &mut d, F_VERSION_1 | 1 << 9);
        assert_eq!(t.status() & status::FEATURES_OK, status::FEATURES_OK);
        assert_eq!(w(&mut t, &mut d, reg::STATUS, 0xf), Effect::DriverOk);
        let q = *t.queue(0).unwrap();
        assert_eq!((q.size, q.ready, q.desc, q.driver, q.device), (128, true, 0x4000_1000, 0x4000_2000, 0x1_4000_3000));
        assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, 0), Effect::Notify(0));
        assert_eq!(t.read(&d, reg::CONFIG + 2, 2), 0x5566, "config space through the device, any width");
        // Used buffers: the line rises, InterruptACK lowers it.
        t.raise(INT_USED_BUFFER);
        assert!(t.interrupt_line());
        assert_eq!(t.read(&d, reg::INTERRUPT_STATUS, 4), 1);
        assert_eq!(w(&mut t, &mut d, reg::INTERRUPT_ACK, 1), Effect::InterruptChanged);
        assert!(!t.interrupt_line());
        // Reset: everything back to the start, the device told.
        assert_eq!(w(&mut t, &mut d, reg::STATUS, 0), Effect::Reset);
        assert_eq!((t.status(), t.queue(0).unwrap().ready, d.resets), (0, false, 2));
    }

    #[test]
    fn features_ok_needs_version_1_and_nothing_unoffered() {
        for bad in [1 << 9, F_VERSION_1 | 1 << 3, F_VERSION_1 | F_RING_EVENT_IDX] {
            let (mut t, mut d) = (Transport::default(), Dev::default());
            bring_up(&mut t, &mut d, bad);
            assert_eq!(t.status() & status::FEATURES_OK, 0, "{bad:#x}");
        }
        // Features cannot change once accepted.
        let (mut t, mut d) = (Transport::default(), Dev::default());
        bring_up(&mut t, &mut d, F_VERSION_1);
        w(&mut t, &mut d, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, &mut d, reg::DRIVER_FEATURES, 1 << 9);
        assert_eq!(t.driver_features(), F_VERSION_1);
    }

    /// The legacy interface as Linux's virtio_mmio drives it (version 1): 32 feature bits,
    /// no FEATURES_OK, GuestPageSize, QueueAlign and QueuePFN placing the rings.
    #[test]
    fn the_legacy_interface_places_queues_by_page_frame() {
        let (mut t, mut d) = (Transport::legacy(), Dev::default());
        assert_eq!(t.read(&d, reg::VERSION, 4), VERSION_LEGACY as u64);
        w(&mut t, &mut d, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(t.read(&d, reg::DEVICE_FEATURES, 4), 0, "no VERSION_1");
        w(&mut t, &mut d, reg::STATUS, (status::ACKNOWLEDGE | status::DRIVER) as u64);
        w(&mut t, &mut d, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, &mut d, reg::DRIVER_FEATURES, 1 << 9 | 1 << 3);
        w(&mut t, &mut d, reg::GUEST_PAGE_SIZE, 4096);
        w(&mut t, &mut d, reg::QUEUE_SEL, 0);
        w(&mut t, &mut d, reg::QUEUE_NUM, 8);
        w(&mut t, &mut d, reg::QUEUE_ALIGN, 4096);
        assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, 0), Effect::None, "no queue yet");
        w(&mut t, &mut d, reg::QUEUE_PFN, 0x4_0001);
        assert_eq!(t.read(&d, reg::QUEUE_PFN, 4), 0x4_0001);
        let q = *t.queue(0).unwrap();
        assert_eq!((q.size, q.ready, q.desc, q.driver, q.device), (8, true, 0x4000_1000, 0x4000_1080, 0x4000_2000));
        assert_eq!(w(&mut t, &mut d, reg::STATUS, (status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK | status::FEATURES_OK) as u64), Effect::DriverOk);
        assert_eq!(t.status() & status::FEATURES_OK, 0, "no FEATURES_OK in the legacy interface");
        assert_eq!(t.driver_features(), 1 << 9, "what was not offered is dropped");
        assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, 0), Effect::Notify(0));
        // A live queue does not move; PFN 0 stops it; a reset keeps the interface.
        w(&mut t, &mut d, reg::QUEUE_NUM, 4);
        assert_eq!(t.queue(0).unwrap().size, 8);
        w(&mut t, &mut d, reg::QUEUE_PFN, 0);
        assert!(!t.queue(0).unwrap().ready);
        assert_eq!(w(&mut t, &mut d, reg::STATUS, 0), Effect::Reset);
        assert_eq!(t.read(&d, reg::VERSION, 4), VERSION_LEGACY as u64);
        assert_eq!(t.read(&d, reg::QUEUE_READY, 4), 0, "no QueueReady register");
    }

    #[test]
    fn bad_queue_configuration_is_ignored() {
        let (mut t, mut d) = (Transport::default(), Dev::default());
        w(&mut t, &mut d, reg::QUEUE_SEL, 0);
        for bad in [0, 3, 256, u32::MAX as u64] {
            w(&mut t, &mut d, reg::QUEUE_NUM, bad);
            assert_eq!(t.queue(0).unwrap().size, 0, "size {bad}");
        }
        w(&mut t, &mut d, reg::QUEUE_READY, 1);
        assert!(!t.queue(0).unwrap().ready, "no size yet");
        // A queue the device does not have, or a selector past the end.
        for sel in [1, 7, 8, u32::MAX as u64] {
            w(&mut t, &mut d, reg::QUEUE_SEL, sel);
            w(&mut t, &mut d, reg::QUEUE_NUM, 64);
            assert_eq!(t.read(&d, reg::QUEUE_NUM_MAX, 4), 0);
            assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, sel), Effect::None);
        }
        // A live queue's addresses do not move; notifying before DRIVER_OK does nothing.
        bring_up(&mut t, &mut d, F_VERSION_1);
        w(&mut t, &mut d, reg::QUEUE_SEL, 0);
        w(&mut t, &mut d, reg::QUEUE_DESC_LOW, 0xdead_0000);
        assert_eq!(t.queue(0).unwrap().desc, 0x4000_1000);
        assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, 0), Effect::None);
        // Registers are 32-bit: other widths read 0 and writes are dropped.
        assert_eq!(t.read(&d, reg::MAGIC, 1), 0);
        assert_eq!(t.write(&mut d, reg::STATUS, 1, 0), Effect::None);
    }

    #[test]
    fn needs_reset_only_once_live_and_until_reset() {
        let (mut t, mut d) = (Transport::default(), Dev::default());
        t.needs_reset();
        assert_eq!(t.status(), 0, "not live yet");
        bring_up(&mut t, &mut d, F_VERSION_1);
        w(&mut t, &mut d, reg::STATUS, 0xf);
        t.needs_reset();
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(t.read(&d, reg::INTERRUPT_STATUS, 4), INT_CONFIG_CHANGE as u64);
        assert_eq!(t.read(&d, reg::CONFIG_GENERATION, 4), 1);
        // The driver cannot clear it by writing status, only by resetting; till then the
        // device serves no notification.
        w(&mut t, &mut d, reg::STATUS, 0xf);
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, 0), Effect::None);
        w(&mut t, &mut d, reg::STATUS, 0);
        assert_eq!(t.status(), 0);
        bring_up(&mut t, &mut d, F_VERSION_1);
        w(&mut t, &mut d, reg::STATUS, 0xf);
        assert_eq!(w(&mut t, &mut d, reg::QUEUE_NOTIFY, 0), Effect::Notify(0));
    }

    #[test]
    fn garbage_writes_never_panic() {
        let mut rng = crate::rng::Rng::new(7);
        let (mut t, mut d) = (Transport::default(), Dev::default());
        for i in 0..crate::fuzz_tests::iters(100_000) {
            if i == 50_000 {
                t = Transport::legacy();
            }
            let offset = rng.next() % 0x140;
            let size = [1u8, 2, 4, 8][(rng.next() % 4) as usize];
            if rng.next() % 2 == 0 {
                t.write(&mut d, offset, size, rng.next());
            } else {
                t.read(&d, offset, size);
            }
            if i % 16 == 0 {
                t.raise(rng.next() as u32);
            }
            if i % 1000 == 999 {
                t.needs_reset();
            }
            // What a register image watches without the driver writing is what reads say.
            let regs = [reg::INTERRUPT_STATUS, reg::STATUS, reg::CONFIG_GENERATION].map(|r| t.read(&d, r, 4) as u32);
            assert_eq!(t.device_driven(), regs, "step {i}");
        }
    }
}
