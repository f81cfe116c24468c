//! A thin, blocking facade over rtnetlink for short-lived plugin processes.
//!
//! [`NsHandle`] talks to one network namespace through a netlink socket created inside it, so no
//! thread ever has to switch namespaces around the calls. Errors carry the operation and object
//! and map the interesting errnos (EEXIST, ENODEV/ENOENT, EBUSY, EPERM) to variants in one place.
//! [`Rtnl`] is the escape hatch to raw rtnetlink for what the facade does not cover.

mod addr;
mod error;
mod handle;
mod link;
mod mac;
mod ns;
mod raw;
mod route;
mod sysctl;

pub use addr::{Addr, IFA_F_NODAD, IFA_F_PERMANENT, IFA_F_TEMPORARY, IFA_F_TENTATIVE};
pub use error::{Error, Result};
pub use handle::NsHandle;
pub use ipnetwork::IpNetwork;
pub use link::{BridgePort, Link, PortState, VethSpec};
pub use mac::{format_mac, parse_mac};
pub use ns::{in_netns, open_netns};
pub use raw::{Rtnl, rtnl_ack, rtnl_errno};
pub use route::{RTPROT_BOOT, RTPROT_STATIC, RouteInfo, RouteSpec};
pub use sysctl::{sysctl_get, sysctl_set};
