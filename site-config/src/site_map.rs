//! Subnet → site lookup ([`SiteMap`]) and subnet overlap detection.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::{Problem, SiteId};

/// An address that falls in no site's subnets.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{ip} is in no site's subnets")]
pub struct NoSite {
    /// The address that was looked up.
    pub ip: IpAddr,
}

/// One subnet as an inclusive address range in its family's number space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u128,
    end: u128,
    site: SiteId,
}

/// Subnet → site lookup, cheap to clone, used on hot paths.
///
/// Built from non-overlapping subnets; a lookup is a binary search.
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are looked up as IPv4.
#[derive(Clone, Debug)]
pub struct SiteMap {
    v4: Arc<[Range]>,
    v6: Arc<[Range]>,
}

/// The inclusive numeric range of `net` (host bits ignored) and whether it is IPv6.
fn bounds(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => {
            let n = n.trunc();
            (
                false,
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )
        }
        IpNet::V6(n) => {
            let n = n.trunc();
            (true, u128::from(n.network()), u128::from(n.broadcast()))
        }
    }
}

/// Find overlapping subnets. Returns pairs `(later, earlier)` of indices into
/// `nets`, where `later > earlier`; every subnet that overlaps another one
/// appears in at least one pair.
pub(crate) fn overlapping_pairs(nets: &[IpNet]) -> Vec<(usize, usize)> {
    let mut order: Vec<(bool, u128, u128, usize)> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (v6, start, end) = bounds(n);
            (v6, start, end, i)
        })
        .collect();
    // Sort by family, start, then widest first so a supernet precedes its subnets.
    order.sort_by(|a, b| (a.0, a.1, b.2, a.3).cmp(&(b.0, b.1, a.2, b.3)));
    let mut pairs = Vec::new();
    let mut widest: Option<(bool, u128, usize)> = None; // family, end, index
    for &(v6, start, end, i) in &order {
        match widest {
            Some((w6, wend, wi)) if w6 == v6 && start <= wend => {
                pairs.push((i.max(wi), i.min(wi)));
                if end > wend {
                    widest = Some((v6, end, i));
                }
            }
            _ => widest = Some((v6, end, i)),
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

impl SiteMap {
    /// Build the map. Rejects overlapping subnets (within one site or across
    /// sites) with one [`Problem`] per offending subnet, keyed
    /// `site[<id>].subnets[<j>]`. Host bits in a subnet are ignored.
    pub fn new(sites: &[(SiteId, Vec<IpNet>)]) -> Result<Self, Vec<Problem>> {
        let mut nets = Vec::new();
        let mut origin = Vec::new();
        for (site, subnets) in sites {
            for (j, net) in subnets.iter().enumerate() {
                nets.push(*net);
                origin.push((*site, j));
            }
        }
        let pairs = overlapping_pairs(&nets);
        if !pairs.is_empty() {
            let key = |i: usize| format!("site[{}].subnets[{}]", origin[i].0 .0, origin[i].1);
            return Err(pairs
                .into_iter()
                .map(|(later, earlier)| Problem {
                    key: key(later),
                    message: format!(
                        "subnet {} overlaps {} ({})",
                        nets[later],
                        nets[earlier],
                        key(earlier)
                    ),
                })
                .collect());
        }
        Ok(Self::build_unchecked(sites))
    }

    /// Build the map without checking for overlaps (lookups in overlapping
    /// parts then return one of the candidates, or none).
    pub(crate) fn build_unchecked(sites: &[(SiteId, Vec<IpNet>)]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (site, subnets) in sites {
            for net in subnets {
                let (is_v6, start, end) = bounds(net);
                let range = Range {
                    start,
                    end,
                    site: *site,
                };
                if is_v6 {
                    v6.push(range);
                } else {
                    v4.push(range);
                }
            }
        }
        v4.sort_by_key(|r| r.start);
        v6.sort_by_key(|r| r.start);
        SiteMap {
            v4: v4.into(),
            v6: v6.into(),
        }
    }

    /// The site whose subnets contain `ip`.
    pub fn site_of(&self, ip: IpAddr) -> Result<SiteId, NoSite> {
        let (ranges, n) = match ip.to_canonical() {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (&self.v6, u128::from(a)),
        };
        // Index of the first range starting after `n`; the candidate is the one before.
        let after = ranges.partition_point(|r| r.start <= n);
        match after.checked_sub(1).and_then(|i| ranges.get(i)) {
            Some(r) if n <= r.end => Ok(r.site),
            _ => Err(NoSite { ip }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn lookup_basic() {
        let map = SiteMap::new(&[
            (SiteId(0), vec![net("127.1.0.0/16"), net("fd00:1::/32")]),
            (SiteId(1), vec![net("127.2.0.0/16")]),
        ])
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(map.site_of(ip("127.1.0.11")), Ok(SiteId(0)));
        assert_eq!(map.site_of(ip("127.2.255.255")), Ok(SiteId(1)));
        assert_eq!(map.site_of(ip("::ffff:127.2.0.1")), Ok(SiteId(1)));
        assert_eq!(map.site_of(ip("fd00:1::5")), Ok(SiteId(0)));
        let err = map.site_of(ip("127.3.0.1")).unwrap_err();
        assert_eq!(err.to_string(), "127.3.0.1 is in no site's subnets");
        assert!(map.site_of(ip("fd00:2::1")).is_err());
        assert!(map.site_of(ip("0.0.0.0")).is_err());
    }

    #[test]
    fn overlap_message() {
        let err = SiteMap::new(&[
            (SiteId(0), vec![net("127.1.0.0/16")]),
            (SiteId(1), vec![net("10.0.0.0/8"), net("127.1.128.0/17")]),
        ])
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].key, "site[1].subnets[1]");
        assert_eq!(
            err[0].message,
            "subnet 127.1.128.0/17 overlaps 127.1.0.0/16 (site[0].subnets[0])"
        );
    }

    #[test]
    fn v4_and_v6_never_overlap() {
        // ::/0 and 0.0.0.0/0 are different families.
        assert!(SiteMap::new(&[
            (SiteId(0), vec![net("0.0.0.0/0")]),
            (SiteId(1), vec![net("::/0")]),
        ])
        .is_ok());
    }

    /// A set of pairwise-disjoint subnets: distinct /16s of 10.0.0.0/8,
    /// distinct /24s of 127.0.0.0/8 and distinct /32s of fd00::/16.
    fn disjoint_subnets() -> impl Strategy<Value = Vec<IpNet>> {
        (
            proptest::collection::btree_set(any::<u8>(), 0..8),
            proptest::collection::btree_set(any::<(u8, u8)>(), 0..8),
            proptest::collection::btree_set(any::<u16>(), 0..6),
        )
            .prop_map(|(tens, locals, v6s)| {
                let mut nets: Vec<IpNet> = Vec::new();
                for b in tens {
                    nets.push(IpNet::new(Ipv4Addr::new(10, b, 0, 0).into(), 16).unwrap());
                }
                for (b, c) in locals {
                    nets.push(IpNet::new(Ipv4Addr::new(127, b, c, 0).into(), 24).unwrap());
                }
                for x in v6s {
                    let a = Ipv6Addr::new(0xfd00, x, 0, 0, 0, 0, 0, 0);
                    nets.push(IpNet::new(a.into(), 32).unwrap());
                }
                nets
            })
    }

    /// Random addresses biased towards the ranges the subnets come from.
    fn address(nets: Vec<IpNet>) -> impl Strategy<Value = IpAddr> {
        let inside = if nets.is_empty() {
            Just(IpAddr::V4(Ipv4Addr::LOCALHOST)).boxed()
        } else {
            (proptest::sample::select(nets), any::<u128>())
                .prop_map(|(n, r)| match n {
                    IpNet::V4(n) => {
                        let host = (r as u32) & !u32::from(n.netmask());
                        IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
                    }
                    IpNet::V6(n) => {
                        let host = r & !u128::from(n.netmask());
                        IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
                    }
                })
                .boxed()
        };
        prop_oneof![
            inside,
            any::<u32>().prop_map(|r| IpAddr::V4(Ipv4Addr::from(r))),
            any::<(u8, u16)>().prop_map(|(b, r)| {
                let [c, d] = r.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(10, b, c, d))
            }),
            any::<(u8, u16)>().prop_map(|(b, r)| {
                let [c, d] = r.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(127, b, c, d))
            }),
            any::<u128>()
                .prop_map(|r| { IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) | (r >> 16))) }),
        ]
    }

    /// Sites with their subnets, all subnets, and addresses to look up.
    type Layout = (Vec<(SiteId, Vec<IpNet>)>, Vec<IpNet>, Vec<IpAddr>);

    fn layout() -> impl Strategy<Value = Layout> {
        disjoint_subnets().prop_flat_map(|nets| {
            let n = nets.len();
            (
                Just(nets.clone()),
                proptest::collection::vec(0u16..4, n),
                proptest::collection::vec(address(nets), 1..40),
            )
                .prop_map(|(nets, owners, addrs)| {
                    let mut sites: Vec<(SiteId, Vec<IpNet>)> =
                        (0..4).map(|i| (SiteId(i), Vec::new())).collect();
                    for (net, owner) in nets.iter().zip(owners) {
                        sites[usize::from(owner)].1.push(*net);
                    }
                    (sites, nets, addrs)
                })
        })
    }

    proptest! {
        #[test]
        fn site_of_matches_brute_force((sites, _nets, addrs) in layout()) {
            let map = SiteMap::new(&sites).unwrap();
            for ip in addrs {
                let containing: Vec<SiteId> = sites
                    .iter()
                    .flat_map(|(id, nets)| nets.iter().map(move |n| (*id, n)))
                    .filter(|(_, n)| n.contains(&ip.to_canonical()))
                    .map(|(id, _)| id)
                    .collect();
                prop_assert!(containing.len() <= 1, "{ip} in several subnets");
                match containing.first() {
                    Some(site) => prop_assert_eq!(map.site_of(ip), Ok(*site)),
                    None => prop_assert_eq!(map.site_of(ip), Err(NoSite { ip })),
                }
            }
        }

        #[test]
        fn overlapping_sets_are_rejected(
            (sites, _nets, _addrs) in layout(),
            base_is_v6 in any::<bool>(),
            base_addr in any::<u128>(),
            base_len in 0u8..=128,
            inner in any::<u128>(),
            other_len in 0u8..=128,
            put_in in 0usize..4,
            other_in in 0usize..4,
        ) {
            // `base` and `other` share the address `inner_addr`, so they overlap.
            let (base, other) = if base_is_v6 {
                let base = IpNet::new(Ipv6Addr::from(base_addr).into(), base_len).unwrap().trunc();
                let IpNet::V6(b) = base else { unreachable!() };
                let host = inner & !u128::from(b.netmask());
                let inner_addr = Ipv6Addr::from(u128::from(b.network()) | host);
                (base, IpNet::new(inner_addr.into(), other_len).unwrap().trunc())
            } else {
                let base = IpNet::new(Ipv4Addr::from(base_addr as u32).into(), base_len % 33).unwrap().trunc();
                let IpNet::V4(b) = base else { unreachable!() };
                let host = (inner as u32) & !u32::from(b.netmask());
                let inner_addr = Ipv4Addr::from(u32::from(b.network()) | host);
                (base, IpNet::new(inner_addr.into(), other_len % 33).unwrap().trunc())
            };
            let mut sites = sites;
            sites[put_in].1.push(base);
            sites[other_in].1.push(other);
            let problems = SiteMap::new(&sites).unwrap_err();
            prop_assert!(!problems.is_empty());
            for p in &problems {
                prop_assert!(p.key.starts_with("site["), "{}", p.key);
                prop_assert!(p.message.contains(" overlaps "), "{}", p.message);
            }
        }
    }
}
