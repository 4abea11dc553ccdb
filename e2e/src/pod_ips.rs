//! Pod IPs for the local node agent: each pod gets its own address in the pod network (a /24
//! routed as local inside the e2e network namespace, see `scripts/netns.sh`), so several
//! dataplanes listen on the same ports (2049, 8080, 9090) side by side.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Hands out addresses `a.b.c.2` ..= `a.b.c.254` of the /24 network `a.b.c.0`.
#[derive(Debug, Clone)]
pub struct PodIpPool {
    network: [u8; 3],
    in_use: BTreeSet<u8>,
}

impl PodIpPool {
    /// A pool in the /24 `network` (its last octet must be 0, and it must not be
    /// `127.0.0.0`, which holds 127.0.0.1).
    pub fn new(network: Ipv4Addr) -> Option<Self> {
        let [a, b, c, d] = network.octets();
        (d == 0 && network != Ipv4Addr::new(127, 0, 0, 0)).then(|| Self {
            network: [a, b, c],
            in_use: BTreeSet::new(),
        })
    }

    /// The lowest free address, or `None` when all 253 are taken.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let host = (2..=254u8).find(|h| !self.in_use.contains(h))?;
        self.in_use.insert(host);
        let [a, b, c] = self.network;
        Some(Ipv4Addr::new(a, b, c, host))
    }

    /// Returns an address to the pool; false if it was not handed out by this pool.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        let [a, b, c, d] = ip.octets();
        [a, b, c] == self.network && self.in_use.remove(&d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_addresses_and_reuses_released_ones() {
        assert!(PodIpPool::new(Ipv4Addr::new(127, 0, 0, 0)).is_none());
        assert!(PodIpPool::new(Ipv4Addr::new(10, 244, 0, 1)).is_none());
        let mut pool = PodIpPool::new(Ipv4Addr::new(10, 244, 0, 0)).unwrap();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 244, 0, 2), Ipv4Addr::new(10, 244, 0, 3))
        );
        assert!(pool.release(a));
        assert!(!pool.release(a));
        assert!(!pool.release(Ipv4Addr::new(10, 0, 9, 3)));
        assert_eq!(pool.allocate(), Some(a));
        let mut full = PodIpPool::new(Ipv4Addr::new(10, 1, 1, 0)).unwrap();
        assert_eq!((0..253).filter_map(|_| full.allocate()).count(), 253);
        assert!(full.allocate().is_none());
    }

    #[test]
    fn a_pod_ip_can_really_be_bound() {
        // Outside the e2e namespace only loopback networks are local; the pool is the same.
        let mut pool = PodIpPool::new(Ipv4Addr::new(127, 0, 77, 0)).unwrap();
        let ip = pool.allocate().unwrap();
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a 127.0.77.x address");
        let addr = listener.local_addr().unwrap();
        std::net::TcpStream::connect(addr).expect("connect to the pod IP");
    }
}
