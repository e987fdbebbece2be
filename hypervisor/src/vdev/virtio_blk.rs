//! A disk of the VM in one of its virtio-mmio slots: hv_core's virtio-mmio transport
//! (modern, version 2, or legacy, version 1) and virtio-blk device, backed by a host disk kept for the VM
//! (drivers::disks). Requests are served when the guest notifies, on the notifying vCPU,
//! through the host driver (which polls for completion) in requests of up to 256 KiB; the
//! used-buffer interrupt is the slot's SPI.

use crate::drivers::disks::HostDisk;
use crate::mm::guest::GuestMemory;
use hv_core::virtio_blk_device::{Backend, BlockDevice, IoError, QUEUE_SIZE};
use hv_core::virtio_mmio::{Effect, Transport, INT_USED_BUFFER};
use hv_core::virtqueue::{DeviceQueue, GuestRam, OutOfRam};
use spin::Mutex;

/// The host disk as the device model's backend.
struct HostBackend(&'static HostDisk);

impl Backend for HostBackend {
    fn sectors(&self) -> u64 {
        self.0.sectors
    }

    fn read_only(&self) -> bool {
        self.0.read_only
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.0.blk.lock().read(sector, buf).map_err(|_| IoError)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        self.0.blk.lock().write(sector, data).map_err(|_| IoError)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.0.blk.lock().flush().map_err(|_| IoError)
    }

    fn serial(&self) -> &[u8] {
        self.0.serial.as_bytes()
    }
}

/// The VM's RAM as the queue and the device reach it (only RAM, only what the guest may
/// access: GuestMemory checks).
struct Ram<'a>(&'a GuestMemory);

impl GuestRam for Ram<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        self.0.read(gpa, buf).map_err(|_| OutOfRam)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        self.0.write(gpa, data).map_err(|_| OutOfRam)
    }
}

struct State {
    transport: Transport,
    device: BlockDevice<HostBackend>,
    /// The request queue, once the driver made the device live.
    queue: Option<DeviceQueue>,
}

pub struct GuestDisk {
    /// Its virtio-mmio slot (0..32).
    pub slot: u64,
    pub host: &'static HostDisk,
    state: Mutex<State>,
}

/// Requests served per notification at most: a driver that keeps adding requests while
/// they are served cannot hold its vCPU in the hypervisor for ever (it notifies again).
const REQUESTS_PER_NOTIFY: usize = QUEUE_SIZE as usize;

impl GuestDisk {
    /// `legacy`: the legacy virtio-mmio interface (version 1) instead of the modern one.
    pub fn new(slot: u64, host: &'static HostDisk, legacy: bool) -> GuestDisk {
        let transport = if legacy { Transport::legacy() } else { Transport::modern() };
        let state = State { transport, device: BlockDevice::new(HostBackend(host)), queue: None };
        GuestDisk { slot, host, state: Mutex::new(state) }
    }

    pub fn read(&self, offset: u64, size: u8) -> u64 {
        let st = self.state.lock();
        st.transport.read(&st.device, offset, size)
    }

    /// A register write (requests are served on a queue notification). Returns the level
    /// of the slot's interrupt line afterwards.
    pub fn write(&self, mem: &GuestMemory, offset: u64, size: u8, value: u64) -> bool {
        let mut st = self.state.lock();
        let State { transport, device, queue } = &mut *st;
        match transport.write(device, offset, size, value) {
            Effect::DriverOk => {
                *queue = transport.queue(0).filter(|q| q.ready).map(|q| DeviceQueue::new(q, transport.driver_features()));
            }
            Effect::Reset => *queue = None,
            Effect::Notify(0) => {
                if let Some(q) = queue {
                    let ram = Ram(mem);
                    for _ in 0..REQUESTS_PER_NOTIFY {
                        let chain = match q.pop(&ram) {
                            Ok(Some(chain)) => chain,
                            Ok(None) => break,
                            Err(_) => {
                                transport.needs_reset();
                                break;
                            }
                        };
                        let written = device.serve(&chain, &ram);
                        match q.push(&ram, chain.head, written) {
                            Ok(true) => transport.raise(INT_USED_BUFFER),
                            Ok(false) => {}
                            Err(_) => {
                                transport.needs_reset();
                                break;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        transport.interrupt_line()
    }
}
