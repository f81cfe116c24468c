//! ADD's last step before the result: wait until the kernel forwards on the new bridge port.
//!
//! ```text
//!   container end up ──> carrier on both ends ──> (later, from link-watch work, under RTNL)
//!                                                 host end IF_OPER_UP, queueing activated,
//!                                                 port Disabled -> Forwarding (STP off)
//! ```

use std::time::{Duration, Instant};

use cni::Error;
use tether_netlink::{Link, NsHandle, PortState};

use crate::nl;

/// Until the host veth is oper-up and its bridge port forwarding, and at most this long.
const PORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits until the kernel has enabled the host veth as a bridge port, and returns it as read
/// last (its `master` and `up` are final then, unlike the creation echo's).
///
/// The container end coming up gives the pair its carrier, but the kernel acts on that from its
/// link-watch work, asynchronously: that work activates the host end's queueing (`IF_OPER_UP`)
/// and moves the port from `Disabled` to `Forwarding` (STP off). Until it has run, the bridge
/// drops what the container sends, and a container that talks at once (its first ARP request)
/// loses its first packet and waits a second for the neighbour code to ask again. Usually the
/// work has run by the time masquerading is checked, so the one read below is all it costs.
///
/// Past [`PORT_TIMEOUT`] ADD still succeeds, with a warning: everything is configured and the
/// kernel will enable the port on its own; failing would make the runtime tear the container
/// down and retry into the same slow kernel. A port in an STP state (`Listening`, `Learning`,
/// `Blocking`: the bridge runs STP) forwards only after `forward_delay` (15 s by default), which
/// no ADD should wait for: it is returned at once.
pub(crate) fn wait_for_port(host: &NsHandle, veth: Link) -> Result<Link, Error> {
    let start = Instant::now();
    let deadline = start + PORT_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let mut last = veth;
    for reads in 1.. {
        last = host
            .link_by_index(last.index)
            .map_err(nl(format!("read host veth {}", last.name)))?
            .ok_or_else(|| Error::internal(format!("host veth {} vanished", last.name)))?;
        let state = last.bridge_port.map(|p| p.state);
        match state {
            Some(PortState::Forwarding) if last.oper_up => {
                let waited = start.elapsed();
                tracing::debug!(veth = %last.name, reads, ?waited, "bridge port forwarding");
                return Ok(last);
            }
            Some(PortState::Disabled | PortState::Forwarding) => {}
            // No bridge-port data (an old kernel) or STP at work: nothing to wait for.
            _ => {
                tracing::debug!(veth = %last.name, ?state, "not waiting for the bridge port");
                return Ok(last);
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                veth = %last.name,
                ?state,
                oper_up = last.oper_up,
                "bridge port not forwarding {PORT_TIMEOUT:?} after ADD: the container's first packets may be lost"
            );
            return Ok(last);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    unreachable!("the loop returns at the deadline")
}
