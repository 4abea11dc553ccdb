//! Pod IPs for the local node agent: each pod gets its own loopback address, so several
//! dataplanes can listen on the same ports (2049, 8080, 9090) side by side, and no test
//! traffic ever leaves 127.0.0.0/8.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Hands out addresses `127.0.<subnet>.2` ..= `127.0.<subnet>.254`.
#[derive(Debug, Clone)]
pub struct PodIpPool {
    subnet: u8,
    in_use: BTreeSet<u8>,
}

impl PodIpPool {
    /// A pool in `127.0.<subnet>.0/24` (`subnet` must not be 0, which holds 127.0.0.1).
    pub fn new(subnet: u8) -> Option<Self> {
        (subnet != 0).then(|| Self {
            subnet,
            in_use: BTreeSet::new(),
        })
    }

    /// The lowest free address, or `None` when all 253 are taken.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let host = (2..=254u8).find(|h| !self.in_use.contains(h))?;
        self.in_use.insert(host);
        Some(Ipv4Addr::new(127, 0, self.subnet, host))
    }

    /// Returns an address to the pool; false if it was not handed out by this pool.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        let [a, b, c, d] = ip.octets();
        (a, b, c) == (127, 0, self.subnet) && self.in_use.remove(&d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_loopback_addresses_and_reuses_released_ones() {
        assert!(PodIpPool::new(0).is_none());
        let mut pool = PodIpPool::new(9).unwrap();
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(127, 0, 9, 2), Ipv4Addr::new(127, 0, 9, 3))
        );
        assert!(a.is_loopback());
        assert!(pool.release(a));
        assert!(!pool.release(a));
        assert!(!pool.release(Ipv4Addr::new(10, 0, 9, 3)));
        assert_eq!(pool.allocate(), Some(a));
        let mut full = PodIpPool::new(1).unwrap();
        assert_eq!((0..253).filter_map(|_| full.allocate()).count(), 253);
        assert!(full.allocate().is_none());
    }

    #[test]
    fn a_pod_ip_can_really_be_bound() {
        let mut pool = PodIpPool::new(77).unwrap();
        let ip = pool.allocate().unwrap();
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a 127.0.77.x address");
        let addr = listener.local_addr().unwrap();
        std::net::TcpStream::connect(addr).expect("connect to the pod IP");
    }
}
