//! The tag `(network, container id, ifname)` that plugins put on what they create, and GC's one
//! question about it, shared by every plugin that tags so.

use cni::{Attachment, Request};
use tether_netfilter::AttachmentId;

/// The netfilter owner of what this request's attachment makes (firewall and portmap rules).
pub fn owner(req: &Request) -> AttachmentId<'_> {
    AttachmentId {
        network: &req.conf.name,
        container_id: &req.container_id,
        ifname: &req.ifname,
    }
}

/// The runtime's valid list as netfilter owners on `network`: the rules GC must keep.
pub fn valid_owners<'a>(network: &'a str, valid: &'a [Attachment]) -> Vec<AttachmentId<'a>> {
    valid
        .iter()
        .map(|a| AttachmentId {
            network,
            container_id: &a.container_id,
            ifname: &a.ifname,
        })
        .collect()
}

/// Whether something tagged `(net, cid, ifname)` is stale: it belongs to `network` and the
/// runtime's valid list does not name its attachment. Another network's things are never stale.
pub fn stale<'a>(
    network: &'a str,
    valid: &'a [Attachment],
) -> impl Fn(&str, &str, &str) -> bool + Sync + Copy + 'a {
    move |net, cid, ifname| {
        net == network
            && !valid
                .iter()
                .any(|a| a.container_id == cid && a.ifname == ifname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unlisted_attachments_of_this_network() {
        let valid = [Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }];
        let is_stale = stale("net1", &valid);
        assert!(!is_stale("net1", "c1", "eth0"));
        assert!(is_stale("net1", "c1", "eth1"));
        assert!(is_stale("net1", "c2", "eth0"));
        assert!(!is_stale("net2", "c2", "eth0"));
    }
}
