//! Who may use the export and as whom: client rules by network (read-write or read-only,
//! root squashing), and the per-thread file-system identity a request runs under (see
//! [`crate::identity`] for the two modes).

use std::net::IpAddr;
use std::str::FromStr;

pub use crate::identity::{Creds, assume, server_creds};

use super::rpc::AuthSys;

/// What a client network may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write.
    ReadWrite,
    /// Read only: every modifying procedure answers NFS3ERR_ROFS.
    ReadOnly,
}

/// How identities are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Squash {
    /// uid 0 and gid 0 become the anonymous ids.
    Root,
    /// Identities are kept.
    None,
    /// Every identity becomes the anonymous ids.
    All,
}

/// One `--nfs-client` rule: `CIDR[,rw|ro][,root_squash|no_root_squash|all_squash]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRule {
    network: IpAddr,
    prefix: u8,
    /// Access granted.
    pub access: Access,
    /// Identity mapping.
    pub squash: Squash,
}

impl FromStr for ClientRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let cidr = parts.next().unwrap_or_default();
        let (ip, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
        let network: IpAddr = ip
            .parse()
            .map_err(|_| format!("{cidr:?} is not a CIDR such as 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {cidr:?}"))?
        };
        let mut rule = ClientRule {
            network,
            prefix,
            access: Access::ReadWrite,
            squash: Squash::Root,
        };
        for option in parts {
            match option {
                "rw" => rule.access = Access::ReadWrite,
                "ro" => rule.access = Access::ReadOnly,
                "root_squash" => rule.squash = Squash::Root,
                "no_root_squash" => rule.squash = Squash::None,
                "all_squash" => rule.squash = Squash::All,
                other => {
                    return Err(format!(
                        "unknown client option {other:?} (rw, ro, root_squash, no_root_squash, all_squash)"
                    ));
                }
            }
        }
        Ok(rule)
    }
}

impl ClientRule {
    /// Whether `ip` is in this rule's network (IPv4-mapped IPv6 peers match IPv4 rules).
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The first rule matching `peer`; with no rules every client gets read-write with root
/// squashing (the usual export default). `None`: the client is not allowed.
pub fn decide(rules: &[ClientRule], peer: IpAddr) -> Option<(Access, Squash)> {
    if rules.is_empty() {
        return Some((Access::ReadWrite, Squash::Root));
    }
    rules
        .iter()
        .find(|r| r.matches(peer))
        .map(|r| (r.access, r.squash))
}

impl Creds {
    /// The identity a request runs as after squashing.
    pub fn squashed(auth: &AuthSys, squash: Squash, anon: (u32, u32)) -> Creds {
        let anonymous = Creds {
            uid: anon.0,
            gid: anon.1,
            gids: Vec::new(),
        };
        match squash {
            Squash::All => anonymous,
            Squash::Root if auth.uid == 0 => anonymous,
            Squash::Root => Creds {
                uid: auth.uid,
                gid: if auth.gid == 0 { anon.1 } else { auth.gid },
                gids: auth.gids.iter().copied().filter(|g| *g != 0).collect(),
            },
            Squash::None => Creds {
                uid: auth.uid,
                gid: auth.gid,
                gids: auth.gids.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(uid: u32, gid: u32) -> AuthSys {
        AuthSys {
            machine: "m".into(),
            uid,
            gid,
            gids: vec![gid, 0],
        }
    }

    #[test]
    fn parses_and_matches_rules() {
        let r: ClientRule = "10.0.0.0/8,ro,no_root_squash".parse().unwrap();
        assert_eq!((r.access, r.squash), (Access::ReadOnly, Squash::None));
        assert!(r.matches("10.1.2.3".parse().unwrap()));
        assert!(r.matches("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!r.matches("11.0.0.1".parse().unwrap()));
        let all: ClientRule = "0.0.0.0/0".parse().unwrap();
        assert!(all.matches("192.168.1.1".parse().unwrap()));
        let host: ClientRule = "127.0.0.1".parse().unwrap();
        assert!(
            host.matches("127.0.0.1".parse().unwrap())
                && !host.matches("127.0.0.2".parse().unwrap())
        );
        let v6: ClientRule = "fd00::/8,rw".parse().unwrap();
        assert!(v6.matches("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope/8", "10.0.0.0/8,rx", ""] {
            assert!(bad.parse::<ClientRule>().is_err(), "{bad}");
        }
        let rules = [r, "127.0.0.0/8,rw".parse().unwrap()];
        assert_eq!(
            decide(&rules, "127.0.0.1".parse().unwrap()),
            Some((Access::ReadWrite, Squash::Root))
        );
        assert_eq!(decide(&rules, "192.168.0.1".parse().unwrap()), None);
        assert_eq!(
            decide(&[], "192.168.0.1".parse().unwrap()),
            Some((Access::ReadWrite, Squash::Root))
        );
    }

    #[test]
    fn squashing_and_permissions() {
        let anon = (65534, 65534);
        assert_eq!(Creds::squashed(&auth(0, 0), Squash::Root, anon).uid, 65534);
        let user = Creds::squashed(&auth(1000, 100), Squash::Root, anon);
        assert_eq!(
            (user.uid, user.gid, user.gids.clone()),
            (1000, 100, vec![100])
        );
        assert_eq!(Creds::squashed(&auth(0, 0), Squash::None, anon).uid, 0);
        assert_eq!(
            Creds::squashed(&auth(1000, 100), Squash::All, anon).uid,
            65534
        );
        assert!(user.permits(0o600, 1000, 0, 6));
        assert!(user.permits(0o400, 1000, 0, 2), "owner override for writes");
        assert!(!user.may(0o400, 1000, 0, 2), "but not for ACCESS");
        assert!(user.may(0o400, 1000, 0, 4));
        assert!(!user.permits(0o600, 1, 100, 4));
        assert!(user.permits(0o640, 1, 100, 4));
        assert!(!user.permits(0o640, 1, 100, 2));
        assert!(user.permits(0o604, 1, 2, 4));
    }
}
