//! The hypervisor's Ethernet switch between the VMs' network cards (and the uplink, when
//! the machine has one): where a frame goes, by its destination MAC address.
//!
//! A learning switch, as a Linux bridge: source addresses are learned per port, a frame to
//! a learned address goes to that port only, broadcast, multicast and unknown destinations
//! are flooded to every other port. Each VM card's own address (given by the hypervisor) is
//! pinned to its port: a frame from another port claiming it is dropped (counted), so a
//! guest cannot take another VM's traffic by spoofing. Learned entries are bounded
//! (LEARNED_MAX, the oldest forgotten first), so a guest sending from random addresses
//! costs at most flooding, never memory.

use alloc::vec::Vec;

pub type Mac = [u8; 6];

/// Learned (not pinned) addresses kept at most.
pub const LEARNED_MAX: usize = 256;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// To this port only.
    To(usize),
    /// To every port but the one it came from.
    Flood,
    /// Nowhere: its destination is behind the port it came from.
    Drop,
    /// Nowhere: its source address is another port's pinned one.
    Spoofed,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Mac,
    port: usize,
    pinned: bool,
    /// When it was last seen (the switch's frame count), for forgetting the oldest.
    seen: u64,
}

#[derive(Default)]
pub struct Switch {
    entries: Vec<Entry>,
    frames: u64,
}

pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

impl Switch {
    pub const fn new() -> Switch {
        Switch { entries: Vec::new(), frames: 0 }
    }

    /// Pins `mac` to `port` (a VM card's own address), replacing whatever was known of it.
    pub fn pin(&mut self, mac: Mac, port: usize) {
        self.entries.retain(|e| e.mac != mac);
        self.entries.push(Entry { mac, port, pinned: true, seen: self.frames });
    }

    /// Forgets everything of `port` (its VM stopped).
    pub fn remove_port(&mut self, port: usize) {
        self.entries.retain(|e| e.port != port);
    }

    /// The port a frame from `port` with these addresses goes to; learns its source.
    pub fn forward(&mut self, port: usize, destination: Mac, source: Mac) -> Forward {
        self.frames += 1;
        if !self.learn(port, source) {
            return Forward::Spoofed;
        }
        if is_multicast(&destination) {
            return Forward::Flood;
        }
        match self.entries.iter_mut().find(|e| e.mac == destination) {
            Some(e) if e.port == port => Forward::Drop,
            Some(e) => Forward::To(e.port),
            None => Forward::Flood,
        }
    }

    /// Learns that `source` is behind `port`; false if it is pinned to another port.
    fn learn(&mut self, port: usize, source: Mac) -> bool {
        if is_multicast(&source) || source == [0; 6] {
            return true;
        }
        let now = self.frames;
        if let Some(e) = self.entries.iter_mut().find(|e| e.mac == source) {
            if e.pinned {
                return e.port == port;
            }
            e.port = port;
            e.seen = now;
            return true;
        }
        let learned = self.entries.iter().filter(|e| !e.pinned).count();
        if learned >= LEARNED_MAX {
            if let Some(oldest) = self.entries.iter().enumerate().filter(|(_, e)| !e.pinned).min_by_key(|(_, e)| e.seen).map(|(i, _)| i) {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push(Entry { mac: source, port, pinned: false, seen: now });
        true
    }

    /// Addresses known now (pinned and learned).
    pub fn known(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x52, 0x54, 0, 0xab, 0, 0];
    const B: Mac = [0x52, 0x54, 0, 0xab, 0, 1];
    const GATEWAY: Mac = [0x52, 0x55, 10, 0, 2, 2];
    const BROADCAST: Mac = [0xff; 6];

    #[test]
    fn learns_floods_and_forwards() {
        let mut s = Switch::new();
        s.pin(A, 0);
        s.pin(B, 1);
        assert_eq!(s.forward(0, B, A), Forward::To(1));
        assert_eq!(s.forward(1, A, B), Forward::To(0));
        assert_eq!(s.forward(0, BROADCAST, A), Forward::Flood);
        assert_eq!(s.forward(0, [0x33, 0x33, 0, 0, 0, 1], A), Forward::Flood, "IPv6 multicast");
        assert_eq!(s.forward(0, GATEWAY, A), Forward::Flood, "unknown yet");
        assert_eq!(s.forward(8, A, GATEWAY), Forward::To(0), "the uplink's gateway learned");
        assert_eq!(s.forward(1, GATEWAY, B), Forward::To(8));
        assert_eq!(s.forward(0, A, A), Forward::Drop, "to the port it came from");
    }

    #[test]
    fn pinned_addresses_cannot_be_taken() {
        let mut s = Switch::new();
        s.pin(A, 0);
        s.pin(B, 1);
        assert_eq!(s.forward(2, BROADCAST, A), Forward::Spoofed, "VM 2 claiming VM 0's address");
        assert_eq!(s.forward(1, A, B), Forward::To(0), "VM 0 still gets its traffic");
        s.remove_port(0);
        assert_eq!(s.forward(1, A, B), Forward::Flood, "forgotten with its VM");
        assert_eq!(s.forward(2, B, A), Forward::To(1), "and learnable again");
    }

    /// Random frames, pins and removals: every answer names a port that exists, never the
    /// source; learning stays bounded (`make fuzz` runs it long).
    #[test]
    fn garbage_traffic_stays_bounded() {
        let mut rng = crate::rng::Rng::new(0x5a1);
        let mut s = Switch::new();
        let mut pinned = 0;
        for _ in 0..crate::fuzz_tests::iters(50_000) {
            let mac = |rng: &mut crate::rng::Rng| {
                let x = rng.next();
                [x as u8 & if rng.below(2) == 0 { 0xfe } else { 0xff }, (x >> 8) as u8, 0, 0, rng.below(4) as u8, rng.below(300) as u8]
            };
            match rng.below(100) {
                0 => {
                    s.pin(mac(&mut rng), rng.below(8) as usize);
                    pinned += 1;
                }
                1 => s.remove_port(rng.below(9) as usize),
                _ => {
                    let port = rng.below(9) as usize;
                    match s.forward(port, mac(&mut rng), mac(&mut rng)) {
                        Forward::To(p) => assert!(p != port && p < 9),
                        Forward::Flood | Forward::Drop | Forward::Spoofed => {}
                    }
                }
            }
            assert!(s.known() <= LEARNED_MAX + pinned);
        }
    }

    #[test]
    fn learning_is_bounded() {
        let mut s = Switch::new();
        s.pin(A, 0);
        for i in 0..10_000u32 {
            let mac = [0x02, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0];
            s.forward(3, BROADCAST, mac);
        }
        assert_eq!(s.known(), LEARNED_MAX + 1);
        assert_eq!(s.forward(3, A, [0x02, 0, 0, 0, 1, 0]), Forward::To(0), "pinned entries are never forgotten");
        // The most recent are kept.
        assert_eq!(s.forward(0, [0x02, 0, 0, 0x27, 0x0f, 0], A), Forward::To(3));
        assert_eq!(s.forward(0, [0x02, 0, 0, 0, 5, 0], A), Forward::Flood);
    }
}
