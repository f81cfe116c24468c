//! The typed model of what Tether puts into nf_tables: tables, chains, rules, sets and maps,
//! and their elements. Everything is checked when built ([`Table::new`], [`Set::new`], …), so a
//! batch only ever carries objects the kernel can take; what is left to the kernel is what only
//! it knows (whether a chain exists, whether an element is already there).
//!
//! ```text
//! Table (family, name, comment)
//!  ├── Chain  base: type nat|filter, hook, priority, policy   or regular (jump target)
//!  │    └── Rule  [Expr, Expr, …] + comment (rule userdata, shown by `nft list`)
//!  └── Set    key: one type or a concatenation (proto . port), interval for prefixes,
//!             data: none (set), values (map: addr . port), or verdicts (verdict map)
//!        └── Elem  key [, key end for intervals] [, data] [, comment]
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::expr::Expr;

/// Longest name the kernel accepts (`NFT_NAME_MAXLEN` is 256 with the NUL).
const MAX_NAME: usize = 255;
/// `nft` refuses longer comments (`NFT_USERDATA_MAXLEN` leaves room, the CLI caps at 128).
const MAX_COMMENT: usize = 128;

/// The table's address family (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6 in one table.
    Inet = 1,
    Ip = 2,
    Ip6 = 10,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(Error::Invalid(format!(
            "{what} name {name:?}: must be 1-{MAX_NAME} bytes without NUL"
        )));
    }
    Ok(())
}

pub(crate) fn check_comment(comment: &Option<String>) -> Result<()> {
    match comment {
        Some(c) if c.len() > MAX_COMMENT || c.contains('\0') => Err(Error::Invalid(format!(
            "comment {c:?}: must be at most {MAX_COMMENT} bytes without NUL"
        ))),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
}

impl Table {
    pub fn new(family: Family, name: &str) -> Result<Table> {
        check_name("table", name)?;
        Ok(Table {
            family,
            name: name.into(),
            comment: None,
        })
    }

    pub fn comment(mut self, comment: &str) -> Result<Table> {
        self.comment = Some(comment.into());
        check_comment(&self.comment)?;
        Ok(self)
    }
}

/// `type nat` or `type filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

/// Netfilter hooks (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Drop = 0,
    Accept = 1,
}

/// What makes a chain a base chain: the kernel calls it from `hook` at `priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    /// Lower runs first; `nft` names -100 `dstnat` and 100 `srcnat` for nat chains.
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
}

impl Chain {
    /// A regular chain: reached only by `jump`/`goto`.
    pub fn regular(name: &str) -> Result<Chain> {
        check_name("chain", name)?;
        Ok(Chain {
            name: name.into(),
            base: None,
            comment: None,
        })
    }

    /// A base chain; nat chains only exist at the hooks NAT happens at.
    pub fn base(name: &str, base: BaseChain) -> Result<Chain> {
        check_name("chain", name)?;
        if base.chain_type == ChainType::Nat && base.hook == Hook::Forward {
            return Err(Error::Invalid(format!(
                "chain {name}: type nat has no forward hook"
            )));
        }
        Ok(Chain {
            name: name.into(),
            base: Some(base),
            comment: None,
        })
    }

    pub fn comment(mut self, comment: &str) -> Result<Chain> {
        self.comment = Some(comment.into());
        check_comment(&self.comment)?;
        Ok(self)
    }
}

/// One rule, appended at the end of its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(chain: &str, exprs: Vec<Expr>) -> Result<Rule> {
        check_name("chain", chain)?;
        if exprs.is_empty() {
            return Err(Error::Invalid(format!("rule in {chain}: no expressions")));
        }
        Ok(Rule {
            chain: chain.into(),
            exprs,
            comment: None,
        })
    }

    pub fn comment(mut self, comment: &str) -> Result<Rule> {
        self.comment = Some(comment.into());
        check_comment(&self.comment)?;
        Ok(self)
    }
}

/// The `nft` data types Tether's sets use. The numbers are nft's own (`enum datatypes`), which
/// it reads back from the kernel to print elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr = 7,
    Ipv6Addr = 8,
    InetProto = 12,
    InetService = 13,
    /// An interface name, 16 bytes NUL padded (`iifname`, `oifname`).
    IfName = 41,
}

impl DataType {
    /// Bytes of the value; in a register or a concatenation each field takes a multiple of 4.
    pub fn size(self) -> usize {
        match self {
            DataType::Ipv4Addr => 4,
            DataType::Ipv6Addr => 16,
            DataType::InetProto => 1,
            DataType::InetService => 2,
            DataType::IfName => 16,
        }
    }

    fn big_endian(self) -> bool {
        !matches!(self, DataType::InetProto | DataType::IfName)
    }
}

/// A key or data type: one [`DataType`] or a concatenation (`inet_proto . inet_service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concat(pub Vec<DataType>);

impl Concat {
    /// nft's id of a concatenation: 6 bits per field, the first field highest.
    pub(crate) fn type_id(&self) -> u32 {
        self.0.iter().fold(0, |id, t| (id << 6) | *t as u32)
    }

    pub(crate) fn len(&self) -> usize {
        if self.0.len() == 1 {
            return self.0[0].size();
        }
        self.0.iter().map(|t| t.size().div_ceil(4) * 4).sum()
    }

    pub(crate) fn big_endian(&self) -> bool {
        self.0.iter().all(|t| t.big_endian())
    }
}

/// What a set's elements map to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetData {
    /// A plain set: membership only.
    None,
    /// A map to values, e.g. `ipv4_addr . inet_service` for DNAT.
    Value(Concat),
    /// A verdict map (`jump`, `accept`, …).
    Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: Concat,
    pub data: SetData,
    /// Elements are ranges (prefixes); only for single-field keys here.
    pub interval: bool,
    pub comment: Option<String>,
}

impl Set {
    pub fn new(name: &str, key: &[DataType], data: SetData, interval: bool) -> Result<Set> {
        check_name("set", name)?;
        if key.is_empty() || key.len() > 5 {
            return Err(Error::Invalid(format!("set {name}: key needs 1-5 fields")));
        }
        // An interval set with a concatenated key is the kernel's pipapo set (Linux 5.6): each
        // element is a range per field, given as its first and last key ([`Elem::range`]).
        if let SetData::Value(Concat(d)) = &data
            && (d.is_empty() || d.len() > 5)
        {
            return Err(Error::Invalid(format!("set {name}: data needs 1-5 fields")));
        }
        Ok(Set {
            name: name.into(),
            key: Concat(key.to_vec()),
            data,
            interval,
            comment: None,
        })
    }

    pub fn comment(mut self, comment: &str) -> Result<Set> {
        self.comment = Some(comment.into());
        check_comment(&self.comment)?;
        Ok(self)
    }

    /// Whether the key is a concatenation of ranges (pipapo): elements carry a key end.
    pub fn concat_ranges(&self) -> bool {
        self.interval && self.key.0.len() > 1
    }
}

/// One field of an element's key or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// An IP protocol number (`libc::IPPROTO_TCP`, …).
    Proto(u8),
    Port(u16),
    /// An interface name, NUL padded: build it with [`Value::ifname`].
    IfName([u8; 16]),
}

impl Value {
    fn data_type(self) -> DataType {
        match self {
            Value::Ipv4(_) => DataType::Ipv4Addr,
            Value::Ipv6(_) => DataType::Ipv6Addr,
            Value::Proto(_) => DataType::InetProto,
            Value::Port(_) => DataType::InetService,
            Value::IfName(_) => DataType::IfName,
        }
    }

    fn bytes(self) -> Vec<u8> {
        match self {
            Value::Ipv4(a) => a.octets().to_vec(),
            Value::Ipv6(a) => a.octets().to_vec(),
            Value::Proto(p) => vec![p],
            Value::Port(p) => p.to_be_bytes().to_vec(),
            Value::IfName(n) => n.to_vec(),
        }
    }

    /// An interface name as the kernel compares it; at most 15 bytes (`IFNAMSIZ` - 1).
    pub fn ifname(name: &str) -> Result<Value> {
        if name.is_empty() || name.len() > 15 || name.contains('\0') {
            return Err(Error::Invalid(format!(
                "interface name {name:?}: 1-15 bytes"
            )));
        }
        let mut v = [0u8; 16];
        v[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Value::IfName(v))
    }

    pub fn ip(addr: IpAddr) -> Value {
        match addr {
            IpAddr::V4(a) => Value::Ipv4(a),
            IpAddr::V6(a) => Value::Ipv6(a),
        }
    }
}

/// The bytes of `values` laid out for `ty`, or why they do not fit it.
pub(crate) fn encode_values(what: &str, ty: &Concat, values: &[Value]) -> Result<Vec<u8>> {
    let got: Vec<DataType> = values.iter().map(|v| v.data_type()).collect();
    if got != ty.0 {
        return Err(Error::Invalid(format!(
            "{what}: values {got:?} do not match the type {:?}",
            ty.0
        )));
    }
    let mut out = Vec::with_capacity(ty.len());
    for v in values {
        let mut b = v.bytes();
        if values.len() > 1 {
            b.resize(b.len().div_ceil(4) * 4, 0);
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// A verdict: where a rule or a verdict map sends the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

/// A set or map element. Build it with [`Elem::key`] (or [`Elem::prefix`] for interval sets),
/// then [`Elem::to`] / [`Elem::verdict`] for maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    pub key: Vec<Value>,
    /// For interval sets: the first address after the range, `None` when it runs to the end.
    pub prefix: Option<u8>,
    /// For concatenated interval sets: the last key of the range (inclusive), field by field;
    /// `None` is the single key.
    pub key_end: Option<Vec<Value>>,
    pub data: Option<Vec<Value>>,
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
}

impl Elem {
    pub fn key(key: &[Value]) -> Elem {
        Elem {
            key: key.to_vec(),
            prefix: None,
            key_end: None,
            data: None,
            verdict: None,
            comment: None,
        }
    }

    /// A prefix (`10.88.0.0/16`) for an interval set; host bits must be zero.
    pub fn prefix(net: ipnetwork::IpNetwork) -> Result<Elem> {
        if net.network() != net.ip() {
            return Err(Error::Invalid(format!("prefix {net}: host bits are set")));
        }
        Ok(Elem {
            prefix: Some(net.prefix()),
            ..Elem::key(&[Value::ip(net.ip())])
        })
    }

    /// A range per field for a concatenated interval set, from `first` to `last` inclusive:
    /// e.g. `10.88.0.5 . 10.88.0.0/16` is `[10.88.0.5, 10.88.0.0]` to `[10.88.0.5, 10.88.255.255]`.
    pub fn range(first: &[Value], last: &[Value]) -> Elem {
        Elem {
            key_end: Some(last.to_vec()),
            ..Elem::key(first)
        }
    }

    pub fn to(mut self, data: &[Value]) -> Elem {
        self.data = Some(data.to_vec());
        self
    }

    pub fn verdict(mut self, v: Verdict) -> Elem {
        self.verdict = Some(v);
        self
    }

    pub fn comment(mut self, comment: &str) -> Result<Elem> {
        self.comment = Some(comment.into());
        check_comment(&self.comment)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenations_have_nfts_type_ids_and_padded_lengths() {
        let key = Concat(vec![DataType::InetProto, DataType::InetService]);
        assert_eq!((key.type_id(), key.len()), ((12 << 6) | 13, 8));
        let data = Concat(vec![DataType::Ipv4Addr, DataType::InetService]);
        assert_eq!((data.type_id(), data.len()), ((7 << 6) | 13, 8));
        assert_eq!(Concat(vec![DataType::Ipv6Addr]).len(), 16);
        let v = [Value::Proto(6), Value::Port(8080)];
        assert_eq!(
            encode_values("k", &key, &v).unwrap(),
            [6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
    }
}
