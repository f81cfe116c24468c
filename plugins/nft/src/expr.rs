//! Rule expressions: the kernel's small register machine, and readable builders for the
//! matches Tether needs. A match loads a field into a register, then compares or looks it up:
//!
//! ```text
//!  ip saddr @subnets      = payload(network, 12, 4) → reg 1 ; lookup reg 1 in @subnets
//!  ip daddr != 224.0.0.0/4 = payload(network, 16, 4) → reg 1 ; bitwise reg 1 & 240.0.0.0 ;
//!                           cmp reg 1 != 224.0.0.0
//!  dnat ip to meta l4proto . th dport map @ports
//!                         = meta l4proto → reg 1 ; payload(transport, 2, 2) → reg 9 ;
//!                           lookup reg 1 in @ports → reg 1 (addr) , reg 9 (port) ; nat dnat
//! ```
//! Register 1 is the first 16-byte register; 9 is the second 4-byte slot inside it, where a
//! concatenation's second field goes.

use std::net::Ipv4Addr;

use crate::model::{Family, Verdict};
use crate::wire::{Attrs, attr};

/// The verdict register, and the two registers Tether's rules use.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
/// The first 4-byte slot of register 1: the same place as [`REG_1`].
pub const REG32_00: u32 = 8;
pub const REG32_01: u32 = 9;
pub const REG32_02: u32 = 10;
/// The 4-byte slot right after a 16-byte IPv6 address in register 1 (`NFT_REG32_04`).
pub const REG32_04: u32 = 12;
pub const REG32_05: u32 = 13;

/// `NFT_CT_*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State = 0,
    Status = 2,
}

/// `IPS_DST_NAT`: the connection's destination was NATed (`ct status dnat`).
pub const CT_STATUS_DNAT: u32 = 1 << 5;
/// `ct state established,related`.
pub const CT_STATE_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);
/// `RTN_LOCAL`: what `fib daddr type local` compares with.
const RTN_LOCAL: u32 = 2;

/// `NFT_META_*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    IifName = 6,
    OifName = 7,
    NfProto = 15,
    L4Proto = 16,
}

/// `NFT_PAYLOAD_*_HEADER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network = 1,
    Transport = 2,
}

/// `NFT_CMP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor`, over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Membership in a named set (or, with `dreg`, a map lookup into it).
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    Immediate(Verdict),
    /// A conntrack field into `dreg` (host byte order).
    Ct {
        key: CtKey,
        dreg: u32,
    },
    /// The route type of the destination address (`fib daddr type`) into `dreg`.
    FibDaddrType {
        dreg: u32,
    },
    Counter,
    Masquerade,
    /// Destination NAT to the address (and port) held in the registers.
    Dnat {
        family: Family,
        addr_reg: u32,
        port_reg: Option<u32>,
    },
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate(_) => "immediate",
            Expr::Ct { .. } => "ct",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Counter => "counter",
            Expr::Masquerade => "masq",
            Expr::Dnat { .. } => "nat",
        }
    }

    /// Appends this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub(crate) fn encode(&self, a: &mut Attrs) {
        a.nest(attr::LIST_ELEM, |e| {
            e.str(attr::EXPR_NAME, self.name());
            e.nest(attr::EXPR_DATA, |d| self.encode_data(d));
        });
    }

    fn encode_data(&self, d: &mut Attrs) {
        match self {
            Expr::Meta { key, dreg } => {
                d.be32(1, *dreg).be32(2, *key as u32);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                d.be32(1, *dreg)
                    .be32(2, *base as u32)
                    .be32(3, *offset)
                    .be32(4, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                d.be32(1, *sreg).be32(2, *op as u32);
                d.data_value(3, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                d.be32(1, *sreg).be32(2, *dreg).be32(3, mask.len() as u32);
                d.data_value(4, mask);
                d.data_value(5, xor);
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                d.str(1, set).be32(2, *sreg);
                if let Some(r) = dreg {
                    d.be32(3, *r);
                }
                if *invert {
                    d.be32(5, 1); // NFT_LOOKUP_F_INV
                }
            }
            Expr::Immediate(v) => {
                d.be32(1, REG_VERDICT);
                d.nest(2, |data| encode_verdict(data, v));
            }
            Expr::Ct { key, dreg } => {
                d.be32(1, *dreg).be32(2, *key as u32);
            }
            Expr::FibDaddrType { dreg } => {
                // NFTA_FIB_DREG, NFTA_FIB_RESULT = ADDRTYPE, NFTA_FIB_FLAGS = DADDR.
                d.be32(1, *dreg).be32(2, 3).be32(3, 1 << 1);
            }
            Expr::Counter | Expr::Masquerade => {}
            Expr::Dnat {
                family,
                addr_reg,
                port_reg,
            } => {
                d.be32(1, 1) // NFT_NAT_DNAT
                    .be32(2, *family as u32)
                    .be32(3, *addr_reg);
                if let Some(r) = port_reg {
                    d.be32(5, *r);
                }
            }
        }
    }
}

/// `NFTA_DATA_VERDICT { code, chain }`, inside an `NFTA_DATA_*` nest.
pub(crate) fn encode_verdict(data: &mut Attrs, v: &Verdict) {
    let (code, chain): (i32, Option<&str>) = match v {
        Verdict::Drop => (0, None),
        Verdict::Accept => (1, None),
        Verdict::Jump(c) => (-3, Some(c)),
        Verdict::Goto(c) => (-4, Some(c)),
        Verdict::Return => (-5, None),
    };
    data.nest(attr::DATA_VERDICT, |vd| {
        vd.be32(attr::VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            vd.str(attr::VERDICT_CHAIN, c);
        }
    });
}

// Builders for the matches Tether writes; each is what `nft` itself emits for the same text.

/// `meta nfproto ipv4`: needed before `ip` fields in an `inet` table.
pub fn nfproto_ipv4() -> Vec<Expr> {
    meta_eq(MetaKey::NfProto, vec![libc::NFPROTO_IPV4 as u8])
}

/// `meta nfproto ipv6`.
pub fn nfproto_ipv6() -> Vec<Expr> {
    meta_eq(MetaKey::NfProto, vec![libc::NFPROTO_IPV6 as u8])
}

/// `meta <key>` into register 1, e.g. for a lookup.
pub fn meta(key: MetaKey) -> Expr {
    Expr::Meta { key, dreg: REG_1 }
}

/// `vmap @<map>`: the verdict the map holds for register 1 (no verdict when it has no key).
pub fn vmap(map: &str) -> Expr {
    Expr::Lookup {
        set: map.into(),
        sreg: REG_1,
        dreg: Some(REG_VERDICT),
        invert: false,
    }
}

/// `meta l4proto <proto>`.
pub fn l4proto(proto: u8) -> Vec<Expr> {
    meta_eq(MetaKey::L4Proto, vec![proto])
}

/// `iifname "<name>"` / `oifname "<name>"`: names compare as 16 bytes, NUL padded.
pub fn ifname(key: MetaKey, name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0);
    meta_eq(key, data)
}

fn meta_eq(key: MetaKey, data: Vec<u8>) -> Vec<Expr> {
    vec![
        Expr::Meta { key, dreg: REG_1 },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data,
        },
    ]
}

/// IPv4 source or destination address into register 1.
pub fn ip_addr(source: bool) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset: if source { 12 } else { 16 },
        len: 4,
        dreg: REG_1,
    }
}

/// IPv6 source or destination address into register 1.
pub fn ip6_addr(source: bool) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset: if source { 8 } else { 24 },
        len: 16,
        dreg: REG_1,
    }
}

/// `ip6 daddr != ff00::/8`: multicast is never masqueraded.
pub fn not_multicast_v6() -> Vec<Expr> {
    let mut mask = [0u8; 16];
    mask[0] = 0xff;
    let mut mcast = [0u8; 16];
    mcast[0] = 0xff;
    vec![
        ip6_addr(false),
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: mask.to_vec(),
            xor: vec![0; 16],
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: mcast.to_vec(),
        },
    ]
}

/// The transport header's destination port (TCP, UDP and SCTP alike) into `dreg`.
pub fn th_dport(dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    }
}

/// `@set` (or `!= @set`) on register 1.
pub fn in_set(set: &str, invert: bool) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg: REG_1,
        dreg: None,
        invert,
    }
}

/// `ip saddr|daddr [!=] <net>/<prefix>`; a /32 compares directly, as `nft` does.
pub fn ip_prefix(source: bool, net: ipnetwork::Ipv4Network, op: CmpOp) -> Vec<Expr> {
    let mut v = vec![ip_addr(source)];
    if net.prefix() < 32 {
        v.push(Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: net.mask().octets().to_vec(),
            xor: vec![0; 4],
        });
    }
    v.push(Expr::Cmp {
        sreg: REG_1,
        op,
        data: net.network().octets().to_vec(),
    });
    v
}

/// `ip daddr != 224.0.0.0/4`: multicast is never masqueraded.
pub fn not_multicast_v4() -> Vec<Expr> {
    let mcast = ipnetwork::Ipv4Network::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("valid");
    ip_prefix(false, mcast, CmpOp::Neq)
}

/// `dnat ip to meta l4proto . th dport map @<map>`, for a map keyed by
/// `inet_proto . inet_service` holding `ipv4_addr . inet_service`.
pub fn dnat_v4_via_map(map: &str) -> Vec<Expr> {
    dnat_via_map(map, Family::Ip, REG32_01)
}

/// `dnat ip6 to meta l4proto . th dport map @<map>`, for a map keyed by
/// `inet_proto . inet_service` holding `ipv6_addr . inet_service`.
pub fn dnat_v6_via_map(map: &str) -> Vec<Expr> {
    dnat_via_map(map, Family::Ip6, REG32_04)
}

fn dnat_via_map(map: &str, family: Family, port_reg: u32) -> Vec<Expr> {
    let mut e = vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: REG_1,
        },
        th_dport(REG32_01),
    ];
    e.extend(dnat_map_lookup(map, family, port_reg));
    e
}

/// `fib daddr type local`: the destination is one of this host's addresses (what iptables'
/// `-m addrtype --dst-type LOCAL` matches).
pub fn fib_daddr_local() -> Vec<Expr> {
    vec![
        Expr::FibDaddrType { dreg: REG_1 },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

/// `ct <key> <bits>`: any of the `bits` set (`ct status dnat`, `ct state established,related`).
pub fn ct_any(key: CtKey, bits: u32) -> Vec<Expr> {
    vec![
        Expr::Ct { key, dreg: REG_1 },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// `iifname|oifname [!=] "<name>"`.
pub fn ifname_op(key: MetaKey, name: &str, op: CmpOp) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0);
    vec![
        Expr::Meta { key, dreg: REG_1 },
        Expr::Cmp {
            sreg: REG_1,
            op,
            data,
        },
    ]
}

/// `meta <key>` into `dreg` (a field of a concatenation).
pub fn meta_to(key: MetaKey, dreg: u32) -> Expr {
    Expr::Meta { key, dreg }
}

/// An IPv4 (`v6 == false`) or IPv6 source or destination address into `dreg`.
pub fn addr_to(v6: bool, source: bool, dreg: u32) -> Expr {
    let (offset, len) = match (v6, source) {
        (false, true) => (12, 4),
        (false, false) => (16, 4),
        (true, true) => (8, 16),
        (true, false) => (24, 16),
    };
    Expr::Payload {
        base: PayloadBase::Network,
        offset,
        len,
        dreg,
    }
}

/// `map @<map>` on register 1 into register 1, then `dnat ip|ip6 to` the address and port it
/// gave: the address in register 1, the port right after it (`port_reg`).
pub fn dnat_map_lookup(map: &str, family: Family, port_reg: u32) -> Vec<Expr> {
    vec![
        Expr::Lookup {
            set: map.into(),
            sreg: REG_1,
            dreg: Some(REG_1),
            invert: false,
        },
        Expr::Dnat {
            family,
            addr_reg: REG_1,
            port_reg: Some(port_reg),
        },
    ]
}
