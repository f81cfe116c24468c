//! Masquerading of one network on nftables: its two subnet sets and its own chain (see
//! [`super::layout`]). Ensure is one batch (declare, flush and rewrite the chain, add subnets),
//! remove is one batch (destroy chain and sets), both by the network's name alone.

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;
use tether_nft::{Batch, Elem};

use super::layout::{self, masq_chain, masq_rule_comment, masq_set};
use super::{Nftables, absent_ok, check_chain};
use crate::{Error, Family, Result};

fn subnet(a: &IpNetwork) -> Result<Elem> {
    let net = IpNetwork::new(a.network(), a.prefix()).expect("same prefix");
    Ok(Elem::prefix(net)?)
}

pub fn ensure(nf: &Nftables, network: &str, addrs: &[IpNetwork]) -> Result<()> {
    crate::validate::name_field("network name", network)?;
    let t = layout::table();
    let mut nft = nf.socket()?;
    let current = absent_ok(nft.rules(&t))?.unwrap_or_default();
    let mut b = Batch::new();
    layout::declare_masq(&mut b, &t, &current, network);
    for f in Family::ALL {
        let elems: Vec<Elem> = addrs
            .iter()
            .filter(|a| Family::of(a) == f)
            .map(subnet)
            .collect::<Result<_>>()?;
        if !elems.is_empty() {
            b.ensure_elements(&t, &masq_set(network, f), &elems)?;
        }
    }
    nft.apply(&b)?;
    Ok(())
}

pub fn check(nf: &Nftables, network: &str, addrs: &[IpNetwork]) -> Result<()> {
    let t = layout::table();
    let mut nft = nf.socket()?;
    let want: Vec<String> = Family::ALL
        .iter()
        .map(|f| masq_rule_comment(network, *f))
        .collect();
    check_chain(&mut nft, &masq_chain(network), &want)?;
    for a in addrs {
        let set = masq_set(network, Family::of(a));
        let found = absent_ok(nft.element(&t, &set, &subnet(a)?))?.flatten();
        if found.is_none() {
            return Err(Error::Check(format!(
                "subnet {}/{} of network {network} is not in nftables set {}",
                a.network(),
                a.prefix(),
                set.name
            )));
        }
    }
    Ok(())
}

pub fn remove(nf: &Nftables, network: &str) -> Result<usize> {
    let t = layout::table();
    let mut nft = nf.socket()?;
    let chain = masq_chain(network);
    let Some(chains) = absent_ok(nft.chains(&t))? else {
        return Ok(0);
    };
    let had = chains.iter().any(|c| c.name == chain);
    let mut b = Batch::new();
    b.destroy_chain(&t, &chain);
    for f in Family::ALL {
        b.destroy_set(&t, &masq_set(network, f).name);
    }
    match nft.apply(&b) {
        Ok(()) => {}
        // The table went meanwhile: nothing left.
        Err(tether_nft::Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(e.into()),
    }
    Ok(usize::from(had))
}

pub fn networks(nf: &Nftables) -> Result<BTreeSet<String>> {
    let mut nft = nf.socket()?;
    let chains = absent_ok(nft.chains(&layout::table()))?.unwrap_or_default();
    Ok(chains
        .into_iter()
        .filter_map(|c| c.name.strip_prefix("masq-").map(String::from))
        .collect())
}
