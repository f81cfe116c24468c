//! Reading back, narrowly: one set's elements, one element by key, the names and comments of
//! a table's sets and chains, the comments of one chain's rules. Each is one request (a dump
//! filtered by table, set or chain, or a single `GETSETELEM`), never a listing of the ruleset:
//! what a caller reads stays as small as what it owns.
//!
//! ```text
//!  request (NLM_F_DUMP or not)  ──►  NEWSETELEM | NEWSET | NEWCHAIN | NEWRULE …  NLMSG_DONE
//!                                     nfgenmsg + attributes (nested TLVs, parsed by `attrs`)
//!                                or  NLMSG_ERROR(-errno)        ENOENT: the object is not there
//! ```

use std::io;

use crate::error::{Error, Result};
use crate::model::{Concat, DataType, Elem, Set, SetData, Table, Value, encode_values};
use crate::socket::Nft;
use crate::wire::{self, Attrs, Msg, attr};

/// The attributes of one message body (or nest): `(type without flags, payload)`.
pub(crate) fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn find(a: &[(u16, &[u8])], ty: u16) -> Option<Vec<u8>> {
    a.iter().find(|(t, _)| *t == ty).map(|(_, v)| v.to_vec())
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or(&[])).into_owned()
}

/// The comment in libnftnl userdata TLVs (`type`, `len`, value NUL-terminated).
fn udata_comment(mut ud: &[u8], ty: u8) -> Option<String> {
    while ud.len() >= 2 {
        let (t, l) = (ud[0], ud[1] as usize);
        if ud.len() < 2 + l {
            break;
        }
        if t == ty {
            return Some(string(&ud[2..2 + l]));
        }
        ud = &ud[2 + l..];
    }
    None
}

/// The value inside an `NFTA_DATA_VALUE` nest.
fn data_value(nest: &[u8]) -> Option<Vec<u8>> {
    find(&attrs(nest), attr::DATA_VALUE)
}

fn decode(ty: &Concat, bytes: &[u8]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut at = 0;
    for t in &ty.0 {
        let n = t.size();
        let b = bytes.get(at..at + n)?;
        out.push(match t {
            DataType::Ipv4Addr => Value::Ipv4(<[u8; 4]>::try_from(b).ok()?.into()),
            DataType::Ipv6Addr => Value::Ipv6(<[u8; 16]>::try_from(b).ok()?.into()),
            DataType::InetProto => Value::Proto(b[0]),
            DataType::InetService => Value::Port(u16::from_be_bytes([b[0], b[1]])),
            DataType::IfName => Value::IfName(<[u8; 16]>::try_from(b).ok()?),
        });
        at += if ty.0.len() > 1 { n.div_ceil(4) * 4 } else { n };
    }
    Some(out)
}

fn elem_of(set: &Set, el: &[u8]) -> Option<Elem> {
    let a = attrs(el);
    let key = decode(&set.key, &data_value(&find(&a, attr::ELEM_KEY)?)?)?;
    let mut e = Elem::key(&key);
    if let Some(end) = find(&a, attr::ELEM_KEY_END) {
        e.key_end = Some(decode(&set.key, &data_value(&end)?)?);
    }
    if let (SetData::Value(ty), Some(d)) = (&set.data, find(&a, attr::ELEM_DATA)) {
        e.data = Some(decode(ty, &data_value(&d)?)?);
    }
    if let Some(ud) = find(&a, attr::ELEM_USERDATA) {
        e.comment = udata_comment(&ud, wire::UDATA_COMMENT);
    }
    Some(e)
}

fn elems_of(set: &Set, body: &[u8]) -> Vec<Elem> {
    let a = attrs(body);
    let Some(list) = find(&a, attr::ELEM_LIST_ELEMENTS) else {
        return Vec::new();
    };
    attrs(&list)
        .into_iter()
        .filter(|(t, _)| *t == attr::LIST_ELEM)
        .filter_map(|(_, el)| elem_of(set, el))
        .collect()
}

/// A set or chain as listed: its name and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub comment: Option<String>,
}

impl Nft {
    /// Every element of `set` (a hash or concatenated-range set; not a single-field interval
    /// set). A missing table or set is [`Error::NotFound`].
    pub fn elements(&mut self, t: &Table, set: &Set) -> Result<Vec<Elem>> {
        let mut a = Attrs::default();
        a.str(attr::ELEM_LIST_TABLE, &t.name)
            .str(attr::ELEM_LIST_SET, &set.name);
        let op = format!("list set {} in table {}", set.name, t.name);
        let bodies = self.request(Msg::GetSetElem, t, a, true, &op)?;
        Ok(bodies.iter().flat_map(|b| elems_of(set, b)).collect())
    }

    /// The element of `set` with `key`'s key, as the kernel holds it (data, comment), or `None`.
    /// A missing table or set is [`Error::NotFound`].
    pub fn element(&mut self, t: &Table, set: &Set, key: &Elem) -> Result<Option<Elem>> {
        let bytes = encode_values(&format!("element of {}", set.name), &set.key, &key.key)?;
        let mut a = Attrs::default();
        a.str(attr::ELEM_LIST_TABLE, &t.name)
            .str(attr::ELEM_LIST_SET, &set.name);
        a.nest(attr::ELEM_LIST_ELEMENTS, |l| {
            l.nest(attr::LIST_ELEM, |el| {
                el.data_value(attr::ELEM_KEY, &bytes);
            });
        });
        let op = format!("get element of {} in table {}", set.name, t.name);
        // Tell a missing element from a missing set: the set is looked up first.
        match self.request(Msg::GetSetElem, t, a, false, &op) {
            Ok(bodies) => Ok(bodies.iter().flat_map(|b| elems_of(set, b)).next()),
            Err(Error::NotFound { .. }) => {
                if !self.set_exists(t, &set.name)? {
                    return Err(Error::NotFound {
                        op: format!("set {} in table {}", set.name, t.name),
                    });
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether set `name` exists in table `t` (one `GETSET` by name; a missing table is `false`).
    pub fn set_exists(&mut self, t: &Table, name: &str) -> Result<bool> {
        let mut a = Attrs::default();
        a.str(attr::SET_TABLE, &t.name).str(attr::SET_NAME, name);
        let op = format!("get set {name} in table {}", t.name);
        match self.request(Msg::GetSet, t, a, false, &op) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether table `t` exists (one `GETTABLE` by name, nothing listed).
    pub fn table_exists(&mut self, t: &Table) -> Result<bool> {
        let mut a = Attrs::default();
        a.str(attr::TABLE_NAME, &t.name);
        let op = format!("get table {} {}", t.family.as_str(), t.name);
        match self.request(Msg::GetTable, t, a, false, &op) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The sets (and maps) of table `t`. A missing table is [`Error::NotFound`].
    pub fn sets(&mut self, t: &Table) -> Result<Vec<Named>> {
        let mut a = Attrs::default();
        a.str(attr::SET_TABLE, &t.name);
        let op = format!("list sets of table {}", t.name);
        let bodies = self.request(Msg::GetSet, t, a, true, &op)?;
        Ok(bodies
            .iter()
            .filter_map(|b| {
                let a = attrs(b);
                if find(&a, attr::SET_TABLE).map(|n| string(&n)) != Some(t.name.clone()) {
                    return None;
                }
                Some(Named {
                    name: string(&find(&a, attr::SET_NAME)?),
                    comment: find(&a, attr::SET_USERDATA)
                        .and_then(|u| udata_comment(&u, wire::UDATA_SET_COMMENT)),
                })
            })
            .collect())
    }

    /// The chains of table `t` (an empty list when the table is not there).
    pub fn chains(&mut self, t: &Table) -> Result<Vec<Named>> {
        let mut a = Attrs::default();
        a.str(attr::CHAIN_TABLE, &t.name);
        let op = format!("list chains of table {}", t.name);
        let bodies = self.request(Msg::GetChain, t, a, true, &op)?;
        Ok(bodies
            .iter()
            .filter_map(|b| {
                let a = attrs(b);
                if find(&a, attr::CHAIN_TABLE).map(|n| string(&n)) != Some(t.name.clone()) {
                    return None;
                }
                Some(Named {
                    name: string(&find(&a, attr::CHAIN_NAME)?),
                    comment: find(&a, attr::CHAIN_USERDATA)
                        .and_then(|u| udata_comment(&u, wire::UDATA_COMMENT)),
                })
            })
            .collect())
    }

    /// The comment of each rule of `chain`, in order (`None` for a rule without one). A missing
    /// table or chain is [`Error::NotFound`].
    pub fn rule_comments(&mut self, t: &Table, chain: &str) -> Result<Vec<Option<String>>> {
        let mut a = Attrs::default();
        a.str(attr::RULE_TABLE, &t.name)
            .str(attr::RULE_CHAIN, chain);
        let op = format!("list chain {chain} in table {}", t.name);
        let bodies = self.request(Msg::GetRule, t, a, true, &op)?;
        Ok(bodies
            .iter()
            .filter(|b| {
                let a = attrs(b);
                find(&a, attr::RULE_TABLE).map(|n| string(&n)) == Some(t.name.clone())
                    && find(&a, attr::RULE_CHAIN).map(|n| string(&n)) == Some(chain.to_string())
            })
            .map(|b| {
                find(&attrs(b), attr::RULE_USERDATA)
                    .and_then(|u| udata_comment(&u, wire::UDATA_COMMENT))
            })
            .collect())
    }

    /// `(chain, comment)` of every rule of table `t`, in order: one dump filtered by table (for
    /// a table whose rules are a constant handful, a constant read). A missing table is
    /// [`Error::NotFound`].
    pub fn rules(&mut self, t: &Table) -> Result<Vec<(String, Option<String>)>> {
        let mut a = Attrs::default();
        a.str(attr::RULE_TABLE, &t.name);
        let op = format!("list rules of table {}", t.name);
        let bodies = self.request(Msg::GetRule, t, a, true, &op)?;
        Ok(bodies
            .iter()
            .filter_map(|b| {
                let a = attrs(b);
                if find(&a, attr::RULE_TABLE).map(|n| string(&n)) != Some(t.name.clone()) {
                    return None;
                }
                let chain = string(&find(&a, attr::RULE_CHAIN)?);
                let comment = find(&a, attr::RULE_USERDATA)
                    .and_then(|u| udata_comment(&u, wire::UDATA_COMMENT));
                Some((chain, comment))
            })
            .collect())
    }

    /// One request, and the bodies (after `nfgenmsg`) of the messages that answer it.
    fn request(
        &mut self,
        msg: Msg,
        t: &Table,
        a: Attrs,
        dump: bool,
        op: &str,
    ) -> Result<Vec<Vec<u8>>> {
        let mut flags = wire::NLM_F_REQUEST | wire::NLM_F_ACK;
        if dump {
            flags |= wire::NLM_F_DUMP;
        }
        let mut m = wire::message(wire::nft_type(msg), flags, t.family as u8, 0, &a.0);
        let seq = self.next_seq();
        wire::set_seq(&mut m, seq);
        self.socket().send(&m, 0).map_err(Error::Socket)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match self.socket().recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
            };
            let mut rest = &buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > rest.len() {
                    break;
                }
                let body = &rest[16..len];
                rest = &rest[((len + 3) & !3).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    wire::NLMSG_DONE => return Ok(out),
                    wire::NLMSG_ERROR => {
                        let errno = -i32::from_ne_bytes(body[0..4].try_into().expect("4 bytes"));
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(Error::from_errno(op.to_string(), errno));
                    }
                    _ if body.len() >= 4 => out.push(body[4..].to_vec()),
                    _ => {}
                }
            }
        }
    }
}
