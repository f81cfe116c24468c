//! A batch: the messages of one transaction, framed by `BATCH_BEGIN`/`BATCH_END` and sent in
//! one `sendmsg`. The kernel applies all of them or none; every message asks for an ACK, so the
//! answer names exactly which object failed.
//!
//! ```text
//!  BATCH_BEGIN(res_id=NFTABLES)  NEWTABLE  NEWCHAIN …  NEWSET  NEWSETELEM  NEWRULE  BATCH_END
//!     seq n                       n+1       n+2          …                            seq m
//!  ← NLMSG_ERROR(0 | -errno, seq) for each object message (the kernel answers them all before
//!    sendmsg returns, so reading stops when the socket is empty)
//! ```
//! Additions use `NLM_F_CREATE` without `NLM_F_EXCL` for tables, chains and sets (adding what
//! exists is a no-op, like `nft add`) and with it for elements and nothing for rules (rules
//! always append), so an element that is already there is an [`Error::Exists`].

use crate::error::{Error, Result};
use crate::expr::encode_verdict;
use crate::model::{Chain, Elem, Set, SetData, Table, encode_values};
use crate::wire::{self, Attrs, Msg, attr};

#[derive(Debug, Default)]
pub struct Batch {
    /// Each message with what it does, for errors.
    pub(crate) msgs: Vec<(String, Vec<u8>)>,
    next_set_id: u32,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    fn push(&mut self, op: String, msg: Msg, flags: u16, table: &Table, a: Attrs) {
        let flags = wire::NLM_F_REQUEST | wire::NLM_F_ACK | flags;
        let m = wire::message(wire::nft_type(msg), flags, table.family as u8, 0, &a.0);
        self.msgs.push((op, m));
    }

    fn obj(table: &Table, what: &str) -> String {
        format!("{what} in table {} {}", table.family.as_str(), table.name)
    }

    pub fn add_table(&mut self, t: &Table) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::TABLE_NAME, &t.name);
        if let Some(c) = &t.comment {
            a.bytes(
                attr::TABLE_USERDATA,
                &wire::udata_comment(wire::UDATA_COMMENT, c),
            );
        }
        let op = format!("add table {} {}", t.family.as_str(), t.name);
        self.push(op, Msg::NewTable, wire::NLM_F_CREATE, t, a);
        self
    }

    /// Deletes the table and everything in it.
    pub fn delete_table(&mut self, t: &Table) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::TABLE_NAME, &t.name);
        let op = format!("delete table {} {}", t.family.as_str(), t.name);
        self.push(op, Msg::DelTable, 0, t, a);
        self
    }

    pub fn add_chain(&mut self, t: &Table, c: &Chain) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::CHAIN_TABLE, &t.name)
            .str(attr::CHAIN_NAME, &c.name);
        if let Some(b) = &c.base {
            a.nest(attr::CHAIN_HOOK, |h| {
                h.be32(attr::HOOK_HOOKNUM, b.hook as u32)
                    .be32(attr::HOOK_PRIORITY, b.priority as u32);
            });
            a.be32(attr::CHAIN_POLICY, b.policy as u32);
            let ty = match b.chain_type {
                crate::ChainType::Filter => "filter",
                crate::ChainType::Nat => "nat",
            };
            a.str(attr::CHAIN_TYPE, ty);
        }
        if let Some(cm) = &c.comment {
            a.bytes(
                attr::CHAIN_USERDATA,
                &wire::udata_comment(wire::UDATA_COMMENT, cm),
            );
        }
        let op = format!("add chain {}", c.name);
        self.push(Self::obj(t, &op), Msg::NewChain, wire::NLM_F_CREATE, t, a);
        self
    }

    /// Appends the rule at the end of its chain.
    pub fn add_rule(&mut self, t: &Table, r: &crate::Rule) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::RULE_TABLE, &t.name)
            .str(attr::RULE_CHAIN, &r.chain);
        a.nest(attr::RULE_EXPRESSIONS, |l| {
            for e in &r.exprs {
                e.encode(l);
            }
        });
        if let Some(c) = &r.comment {
            a.bytes(
                attr::RULE_USERDATA,
                &wire::udata_comment(wire::UDATA_COMMENT, c),
            );
        }
        let op = format!("add rule to chain {}", r.chain);
        let flags = wire::NLM_F_CREATE | wire::NLM_F_APPEND;
        self.push(Self::obj(t, &op), Msg::NewRule, flags, t, a);
        self
    }

    pub fn add_set(&mut self, t: &Table, s: &Set) -> &mut Self {
        self.next_set_id += 1;
        let mut flags = 0;
        if s.interval {
            flags |= wire::NFT_SET_INTERVAL;
        }
        if s.concat_ranges() {
            flags |= wire::NFT_SET_CONCAT;
        }
        if s.data != SetData::None {
            flags |= wire::NFT_SET_MAP;
        }
        let mut a = Attrs::default();
        a.str(attr::SET_TABLE, &t.name)
            .str(attr::SET_NAME, &s.name)
            .be32(attr::SET_FLAGS, flags)
            .be32(attr::SET_KEY_TYPE, s.key.type_id())
            .be32(attr::SET_KEY_LEN, s.key.len() as u32);
        match &s.data {
            SetData::None => {}
            SetData::Value(d) => {
                a.be32(attr::SET_DATA_TYPE, d.type_id())
                    .be32(attr::SET_DATA_LEN, d.len() as u32);
            }
            SetData::Verdict => {
                a.be32(attr::SET_DATA_TYPE, wire::NFT_DATA_VERDICT)
                    .be32(attr::SET_DATA_LEN, 0);
            }
        }
        if s.concat_ranges() {
            // The length of each field, so the kernel can match each one as a range.
            a.nest(attr::SET_DESC, |d| {
                d.nest(attr::SET_DESC_CONCAT, |c| {
                    for f in &s.key.0 {
                        c.nest(attr::LIST_ELEM, |e| {
                            e.be32(attr::SET_FIELD_LEN, f.size() as u32);
                        });
                    }
                });
            });
        }
        a.be32(attr::SET_ID, self.next_set_id);
        let mut ud = Vec::new();
        // nft's BYTEORDER_BIG_ENDIAN (2) / BYTEORDER_HOST_ENDIAN (1), host-order u32.
        let order = |big: bool| if big { 2u32 } else { 1u32 }.to_ne_bytes();
        wire::udata(
            &mut ud,
            wire::UDATA_SET_KEYBYTEORDER,
            &order(s.key.big_endian()),
        );
        if let SetData::Value(d) = &s.data {
            wire::udata(
                &mut ud,
                wire::UDATA_SET_DATABYTEORDER,
                &order(d.big_endian()),
            );
        }
        if let Some(c) = &s.comment {
            ud.extend(wire::udata_comment(wire::UDATA_SET_COMMENT, c));
        }
        a.bytes(attr::SET_USERDATA, &ud);
        let kind = if s.data == SetData::None {
            "set"
        } else {
            "map"
        };
        let op = format!("add {kind} {}", s.name);
        self.push(Self::obj(t, &op), Msg::NewSet, wire::NLM_F_CREATE, t, a);
        self
    }

    /// Adds elements to `set` (as built by [`Set::new`]); an element already there fails the
    /// whole batch with [`Error::Exists`].
    pub fn add_elements(&mut self, t: &Table, set: &Set, elems: &[Elem]) -> Result<&mut Self> {
        let a = Self::elements(t, set, elems, true)?;
        let op = format!("add elements to {}", set.name);
        self.push(
            Self::obj(t, &op),
            Msg::NewSetElem,
            wire::NLM_F_CREATE | wire::NLM_F_EXCL,
            t,
            a,
        );
        Ok(self)
    }

    /// Adds elements, where one already there with the same data is no error (like
    /// `nft add element`); one there with other data still fails the batch.
    pub fn ensure_elements(&mut self, t: &Table, set: &Set, elems: &[Elem]) -> Result<&mut Self> {
        let a = Self::elements(t, set, elems, true)?;
        let op = format!("add elements to {}", set.name);
        self.push(Self::obj(t, &op), Msg::NewSetElem, wire::NLM_F_CREATE, t, a);
        Ok(self)
    }

    /// Deletes elements (by key; data is ignored); a missing one is [`Error::NotFound`].
    pub fn delete_elements(&mut self, t: &Table, set: &Set, elems: &[Elem]) -> Result<&mut Self> {
        let a = Self::elements(t, set, elems, false)?;
        let op = format!("delete elements from {}", set.name);
        self.push(Self::obj(t, &op), Msg::DelSetElem, 0, t, a);
        Ok(self)
    }

    /// Deletes elements that are there; missing ones (or a missing set) are no error.
    pub fn destroy_elements(&mut self, t: &Table, set: &Set, elems: &[Elem]) -> Result<&mut Self> {
        let a = Self::elements(t, set, elems, false)?;
        let op = format!("destroy elements of {}", set.name);
        self.push(Self::obj(t, &op), Msg::DestroySetElem, 0, t, a);
        Ok(self)
    }

    /// Deletes every rule of the chain (`nft flush chain`).
    pub fn flush_chain(&mut self, t: &Table, chain: &str) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::RULE_TABLE, &t.name)
            .str(attr::RULE_CHAIN, chain);
        let op = format!("flush chain {chain}");
        self.push(Self::obj(t, &op), Msg::DelRule, 0, t, a);
        self
    }

    /// Deletes the chain with its rules if it is there (`nft destroy chain`); a chain something
    /// still jumps to fails the batch.
    pub fn destroy_chain(&mut self, t: &Table, chain: &str) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::CHAIN_TABLE, &t.name)
            .str(attr::CHAIN_NAME, chain);
        let op = format!("destroy chain {chain}");
        self.push(Self::obj(t, &op), Msg::DestroyChain, 0, t, a);
        self
    }

    /// Deletes the set with its elements if it is there (`nft destroy set`); a set a rule still
    /// uses fails the batch.
    pub fn destroy_set(&mut self, t: &Table, set: &str) -> &mut Self {
        let mut a = Attrs::default();
        a.str(attr::SET_TABLE, &t.name).str(attr::SET_NAME, set);
        let op = format!("destroy set {set}");
        self.push(Self::obj(t, &op), Msg::DestroySet, 0, t, a);
        self
    }

    fn elements(t: &Table, set: &Set, elems: &[Elem], with_data: bool) -> Result<Attrs> {
        if elems.is_empty() {
            return Err(Error::Invalid(format!("set {}: no elements", set.name)));
        }
        let mut encoded = Vec::new();
        for e in elems {
            crate::model::check_comment(&e.comment)?;
            encoded.extend(encode_elem(set, e, with_data)?);
        }
        let mut a = Attrs::default();
        a.str(attr::ELEM_LIST_TABLE, &t.name)
            .str(attr::ELEM_LIST_SET, &set.name);
        a.nest(attr::ELEM_LIST_ELEMENTS, |l| {
            for (key, key_end, flags, data, comment) in &encoded {
                l.nest(attr::LIST_ELEM, |el| {
                    el.data_value(attr::ELEM_KEY, key);
                    if let Some(end) = key_end {
                        el.data_value(attr::ELEM_KEY_END, end);
                    }
                    if *flags != 0 {
                        el.be32(attr::ELEM_FLAGS, *flags);
                    }
                    match data {
                        Some(ElemData::Value(v)) => {
                            el.data_value(attr::ELEM_DATA, v);
                        }
                        Some(ElemData::Verdict(v)) => {
                            el.nest(attr::ELEM_DATA, |d| encode_verdict(d, v));
                        }
                        None => {}
                    }
                    if let Some(c) = comment {
                        el.bytes(attr::ELEM_USERDATA, c);
                    }
                });
            }
        });
        Ok(a)
    }
}

enum ElemData {
    Value(Vec<u8>),
    Verdict(crate::Verdict),
}

type Encoded = (
    Vec<u8>,
    Option<Vec<u8>>,
    u32,
    Option<ElemData>,
    Option<Vec<u8>>,
);

/// One element as the kernel stores it; an interval is two: its start, and the first key after
/// it flagged `INTERVAL_END` (left out when the range runs to the end of the address space).
fn encode_elem(set: &Set, e: &Elem, with_data: bool) -> Result<Vec<Encoded>> {
    let what = format!("element of {}", set.name);
    let key = encode_values(&what, &set.key, &e.key)?;
    let data = match (&set.data, with_data) {
        (_, false) => None,
        (SetData::None, true) => {
            if e.data.is_some() || e.verdict.is_some() {
                return Err(Error::Invalid(format!(
                    "{what}: a set's elements have no data"
                )));
            }
            None
        }
        (SetData::Value(ty), true) => {
            let d = e
                .data
                .as_deref()
                .ok_or_else(|| Error::Invalid(format!("{what}: no data")))?;
            Some(ElemData::Value(encode_values(&what, ty, d)?))
        }
        (SetData::Verdict, true) => {
            let v = e
                .verdict
                .clone()
                .ok_or_else(|| Error::Invalid(format!("{what}: no verdict")))?;
            Some(ElemData::Verdict(v))
        }
    };
    let comment = e
        .comment
        .as_ref()
        .map(|c| wire::udata_comment(wire::UDATA_COMMENT, c));
    if set.concat_ranges() {
        if e.prefix.is_some() {
            return Err(Error::Invalid(format!(
                "{what}: a concatenation takes a range, not a prefix"
            )));
        }
        let end = match &e.key_end {
            Some(end) => encode_values(&what, &set.key, end)?,
            None => key.clone(),
        };
        return Ok(vec![(key, Some(end), 0, data, comment)]);
    }
    if e.key_end.is_some() {
        return Err(Error::Invalid(format!(
            "{what}: a key end needs a concatenated interval set"
        )));
    }
    if !set.interval {
        if e.prefix.is_some() {
            return Err(Error::Invalid(format!(
                "{what}: a prefix needs an interval set"
            )));
        }
        return Ok(vec![(key, None, 0, data, comment)]);
    }
    let bits = key.len() * 8;
    let prefix = e.prefix.map_or(bits, usize::from);
    let mut out = vec![(key.clone(), None, 0, data, comment)];
    if let Some(end) = after_prefix(&key, prefix) {
        out.push((end, None, wire::NFT_SET_ELEM_INTERVAL_END, None, None));
    }
    Ok(out)
}

/// The first address after `start/prefix`, or `None` past the end of the address space.
fn after_prefix(start: &[u8], prefix: usize) -> Option<Vec<u8>> {
    if prefix == 0 {
        return None;
    }
    // Add 1 at bit `prefix - 1` (counted from the most significant), carrying leftwards.
    let mut v = start.to_vec();
    let bit = prefix - 1;
    let (mut byte, shift) = (bit / 8, 7 - (bit % 8));
    let mut add = 1u16 << shift;
    loop {
        let sum = v[byte] as u16 + add;
        v[byte] = sum as u8;
        if sum <= 0xff {
            return Some(v);
        }
        if byte == 0 {
            return None;
        }
        byte -= 1;
        add = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn the_end_of_a_prefix_is_the_next_network() {
        assert_eq!(after_prefix(&[10, 88, 0, 0], 16), Some(vec![10, 89, 0, 0]));
        assert_eq!(after_prefix(&[10, 255, 0, 0], 16), Some(vec![11, 0, 0, 0]));
        assert_eq!(after_prefix(&[10, 0, 0, 7], 32), Some(vec![10, 0, 0, 8]));
        assert_eq!(after_prefix(&[255, 255, 0, 0], 16), None);
        assert_eq!(after_prefix(&[0, 0, 0, 0], 0), None);
    }
}
