//! The nf_tables netlink wire format: message headers, attributes (TLVs, nested or not) and the
//! numbers from `<linux/netfilter/nf_tables.h>` and `<linux/netfilter/nfnetlink.h>`.
//!
//! ```text
//!  nlmsghdr (16 B)          nfgenmsg (4 B)            attributes, each padded to 4 B
//! ┌────┬────┬─────┬───┬───┐┌──────┬───────┬────────┐┌─────┬──────┬─────────┬─────┐
//! │len │type│flags│seq│pid││family│version│res_id BE││ len │ type │ payload │ pad │ ...
//! └────┴────┴─────┴───┴───┘└──────┴───────┴────────┘└─────┴──────┴─────────┴─────┘
//!  type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*       type | NLA_F_NESTED for nests
//! ```
//! Integers inside nf_tables attributes are big-endian; the netlink headers are host order.

pub(crate) const NETLINK_NETFILTER: isize = 12;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

/// `NFT_MSG_*`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Msg {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
    NewSet = 9,
    GetSet = 10,
    NewSetElem = 12,
    GetSetElem = 13,
    DelSetElem = 14,
    // The DESTROY variants (Linux 6.3) are deletes for which "not there" is success.
    DestroyChain = 27,
    DestroySet = 29,
    DestroySetElem = 30,
}

pub(crate) mod attr {
    pub const TABLE_NAME: u16 = 1;
    pub const TABLE_USERDATA: u16 = 6;

    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const CHAIN_USERDATA: u16 = 12;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;

    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_USERDATA: u16 = 7;
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;

    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_DATA_TYPE: u16 = 6;
    pub const SET_DATA_LEN: u16 = 7;
    pub const SET_DESC: u16 = 9;
    pub const SET_DESC_CONCAT: u16 = 2;
    pub const SET_FIELD_LEN: u16 = 1;
    pub const SET_ID: u16 = 10;
    pub const SET_USERDATA: u16 = 13;

    pub const ELEM_LIST_TABLE: u16 = 1;
    pub const ELEM_LIST_SET: u16 = 2;
    pub const ELEM_LIST_ELEMENTS: u16 = 3;
    pub const ELEM_KEY: u16 = 1;
    pub const ELEM_DATA: u16 = 2;
    pub const ELEM_FLAGS: u16 = 3;
    pub const ELEM_USERDATA: u16 = 6;
    pub const ELEM_KEY_END: u16 = 10;

    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// Set flags (`NFT_SET_*`) and the element flag marking the end of an interval.
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
pub(crate) const NFT_SET_CONCAT: u32 = 0x80;
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// The kernel's data type of verdict maps' values.
pub(crate) const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// Userdata TLV types libnftnl uses, so `nft` shows our comments (`NFTNL_UDATA_*_COMMENT`) and
/// the byte order of set keys (`NFTNL_UDATA_SET_KEYBYTEORDER`).
pub(crate) const UDATA_COMMENT: u8 = 0;
pub(crate) const UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(crate) const UDATA_SET_DATABYTEORDER: u8 = 1;
pub(crate) const UDATA_SET_COMMENT: u8 = 7;

/// An attribute list being written; nests patch their length when closed.
#[derive(Debug, Default)]
pub(crate) struct Attrs(pub(crate) Vec<u8>);

impl Attrs {
    pub(crate) fn bytes(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policies expect from libnftnl.
    pub(crate) fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(ty, &v)
    }

    pub(crate) fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    pub(crate) fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// An `NFTA_DATA_VALUE` nested in `ty`: how the kernel takes every constant an expression
    /// or a set element carries.
    pub(crate) fn data_value(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        self.nest(ty, |v| {
            v.bytes(attr::DATA_VALUE, value);
        })
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

/// One userdata TLV (type, length, value), the format libnftnl's `nftnl_udata` reads.
pub(crate) fn udata(buf: &mut Vec<u8>, ty: u8, value: &[u8]) {
    buf.push(ty);
    buf.push(value.len() as u8);
    buf.extend_from_slice(value);
}

/// A comment as userdata: NUL-terminated, as `nft` writes it.
pub(crate) fn udata_comment(ty: u8, comment: &str) -> Vec<u8> {
    let mut v = comment.as_bytes().to_vec();
    v.push(0);
    let mut buf = Vec::new();
    udata(&mut buf, ty, &v);
    buf
}

/// A whole netlink message: header, `nfgenmsg`, attributes.
pub(crate) fn message(ty: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq, set when the batch is sent
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills in ours
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

pub(crate) fn set_seq(msg: &mut [u8], seq: u32) {
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
}

pub(crate) fn nft_type(msg: Msg) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg as u16
}
