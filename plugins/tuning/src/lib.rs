//! The `tuning` CNI plugin (chained): sets network sysctls and link attributes (MAC, MTU, promisc,
//! allmulti, txqueuelen) of `CNI_IFNAME` inside the container's namespace.
//!
//! ADD saves the original values before changing anything and fails without changing anything
//! when a key is invalid or a sysctl does not exist; if a change fails midway, what was already
//! changed is put back. DEL restores the saved values (sysctls too, unlike the reference) and
//! forgets them; it succeeds when there is nothing to restore or the namespace is gone. CHECK
//! compares the current values with the config. The result is `prevResult`, with the interface's
//! MAC updated when it was changed.

pub mod config;
pub mod link;
pub mod saved;

use cni::netns::NetnsError;
use cni::{CniResult, Plugin, Request};
use config::{Tuning, parse_mac};
use link::{Change, LinkState};
use saved::Saved;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use tether_kit::RequestExt;
use tether_netlink::{Rtnl, format_mac};

/// The plugin kit's error type: its variants' codes are the kit's one table.
pub use tether_kit::Error;

/// The plugin, for `cni::run`.
pub struct TuningPlugin;

const UNCHAINED: &str = "tuning must be chained: prevResult is missing";

impl Plugin for TuningPlugin {
    fn name(&self) -> &'static str {
        "tuning"
    }

    fn known_args(&self) -> &'static [&'static str] {
        &["MAC"]
    }

    fn add(&self, req: &Request) -> Result<CniResult, cni::Error> {
        let t = config::parse(&req.stdin, req.cni_arg("MAC"))?;
        config::check_allowlist(Path::new(config::ALLOWLIST_FILE), &t.sysctl)?;
        let sysctls = sysctl_paths(&t, &req.ifname)?;
        let mut result = req.prev_result_required(UNCHAINED)?.clone();
        let netns = req.netns_required()?;
        let backup = saved::file(&t.data_dir, &req.container_id, &req.ifname);
        in_netns(netns, || add_in_netns(&t, &sysctls, &req.ifname, &backup))?;
        if let Some(mac) = t.mac {
            for i in result
                .interfaces
                .iter_mut()
                .filter(|i| i.name == req.ifname)
            {
                i.mac = Some(format_mac(mac));
            }
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<(), cni::Error> {
        let backup = saved::file(&config::data_dir(&req.raw), &req.container_id, &req.ifname);
        let saved = match saved::load(&backup) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(Error::Config(m)) => {
                // Nothing usable to restore; keeping the file would only fail every later DEL.
                tracing::warn!("{m}; removing it");
                return Ok(saved::remove(&backup)?);
            }
            Err(e) => return Err(e.into()),
        };
        let netns = req.netns.as_deref().filter(|p| p.exists());
        if let Some(netns) = netns {
            match in_netns(netns, || restore(&saved, &req.ifname)) {
                Ok(()) => {}
                // The namespace went away while we looked: nothing left to restore.
                Err(
                    Error::Namespace(NetnsError::Missing(_))
                    | Error::Netns(tether_netlink::Error::NotFound(_)),
                ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(saved::remove(&backup)?)
    }

    fn check(&self, req: &Request) -> Result<(), cni::Error> {
        let t = config::parse(&req.stdin, req.cni_arg("MAC"))?;
        let sysctls = sysctl_paths(&t, &req.ifname)?;
        req.prev_result_required(UNCHAINED)?;
        let netns = req.netns_required()?;
        Ok(in_netns(netns, || {
            check_in_netns(&t, &sysctls, &req.ifname)
        })?)
    }
}

/// Runs `f` on a short-lived thread inside the network namespace at `path`: sysctl files under
/// `/proc/sys/net` and netlink sockets opened there are the namespace's.
fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    let ns = cni::netns::open(path)?;
    tether_netlink::in_netns(ns.as_fd(), f)?
}

/// The sysctl files to write, in config order. Two keys naming one file (`IFNAME` and the
/// interface's name, dots and slashes) are refused as the reference refuses a key given twice:
/// which value would win is otherwise an accident of order.
fn sysctl_paths(t: &Tuning, ifname: &str) -> Result<Vec<(PathBuf, String)>, Error> {
    let mut out: Vec<(PathBuf, String)> = Vec::with_capacity(t.sysctl.len());
    for (k, v) in &t.sysctl {
        let p = config::sysctl_path(k, ifname)?;
        if let Some(j) = out.iter().position(|(seen, _)| *seen == p) {
            return Err(Error::Config(format!(
                "sysctl keys {:?} and {k:?} both name {}",
                t.sysctl[j].0,
                p.display()
            )));
        }
        out.push((p, v.clone()));
    }
    Ok(out)
}

/// A sysctl's value without the trailing newline; `None` for a write-only sysctl.
fn read_sysctl(p: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Config(format!(
            "sysctl {} does not exist in the container's namespace",
            p.display()
        ))),
        Err(e) if e.kind() == ErrorKind::IsADirectory => Err(Error::Config(format!(
            "{} is a directory of sysctls, not a sysctl",
            p.display()
        ))),
        Err(source) => Err(Error::Sysctl {
            what: format!("failed to read {}", p.display()),
            source,
        }),
    }
}

fn write_sysctl(p: &Path, value: &str) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| Error::Sysctl {
            what: format!("failed to set sysctl {} to {value:?}", p.display()),
            source,
        })
}

fn get_link(rtnl: &Rtnl, ifname: &str) -> Result<LinkState, Error> {
    rtnl.block_on(async |h| link::get(&h, ifname).await)?
        .ok_or_else(|| Error::Mismatch(format!("interface {ifname} not found in the container")))
}

/// ADD inside the container: read originals, save them, then change. Runs on the netns thread.
fn add_in_netns(
    t: &Tuning,
    sysctls: &[(PathBuf, String)],
    ifname: &str,
    backup: &Path,
) -> Result<(), Error> {
    // Reading first also proves every sysctl exists, so a bad key changes nothing.
    let mut originals = Saved::default();
    for (p, _) in sysctls {
        if let Some(v) = read_sysctl(p)? {
            originals.sysctl.insert(p.display().to_string(), v);
        }
    }
    // Netlink, like the sysctls, from this thread: the connection is the container's.
    let rtnl = t.touches_link().then(Rtnl::current).transpose()?;
    let link = rtnl.as_ref().map(|r| get_link(r, ifname)).transpose()?;
    if let Some(l) = &link {
        originals.mac = t.mac.and(l.mac.map(format_mac));
        originals.mtu = t.mtu.map(|_| l.mtu);
        originals.promisc = t.promisc.map(|_| l.promisc);
        originals.allmulti = t.allmulti.map(|_| l.allmulti);
        originals.tx_qlen = t.tx_qlen.map(|_| l.tx_qlen);
    }
    if originals.is_empty() && sysctls.is_empty() {
        return Ok(());
    }
    let mut on_disk = saved::load(backup)?.unwrap_or_default();
    on_disk.merge_missing(originals);
    saved::store(backup, &on_disk)?;

    let changed = (|| {
        for (p, v) in sysctls {
            write_sysctl(p, v)?;
        }
        if let (Some(rtnl), Some(l)) = (&rtnl, &link) {
            let c = Change {
                mac: t.mac,
                mtu: t.mtu,
                promisc: t.promisc,
                allmulti: t.allmulti,
                tx_qlen: t.tx_qlen,
            };
            rtnl.block_on(async |h| link::apply(&h, l.index, ifname, &c).await)?;
        }
        Ok(())
    })();
    if let Err(e) = changed {
        match restore(&on_disk, ifname) {
            Ok(()) => saved::remove(backup)?,
            Err(re) => {
                tracing::warn!(error = %re, "rolling back a failed ADD failed; DEL will retry")
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Puts the saved values back (inside the container). Keeps going after an error and reports all.
/// A sysctl or link that no longer exists has nothing to restore.
fn restore(s: &Saved, ifname: &str) -> Result<(), Error> {
    let mut errors = Vec::new();
    for (p, v) in &s.sysctl {
        // The file is root's, but a path from disk is still checked before it is written to.
        let path = Path::new(p);
        let safe =
            path.starts_with("/proc/sys/net") && !path.components().any(|c| c.as_os_str() == "..");
        if !safe {
            errors.push(format!("refusing to restore {p}: not under /proc/sys/net"));
            continue;
        }
        match write_sysctl(path, v) {
            Err(Error::Sysctl { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => errors.push(e.to_string()),
            Ok(()) => {}
        }
    }
    let wants_link = s.mac.is_some()
        || s.mtu.is_some_and(|m| m != 0)
        || s.promisc.is_some()
        || s.allmulti.is_some()
        || s.tx_qlen.is_some();
    if wants_link {
        let mac = match s.mac.as_deref().map(|m| (m, parse_mac(m))) {
            Some((m, None)) => {
                errors.push(format!("saved MAC {m:?} is invalid"));
                None
            }
            Some((_, Some(b))) => Some(b),
            None => None,
        };
        // One attribute per change, so that one refusal does not stop the others.
        let changes = [
            Change {
                mtu: s.mtu.filter(|m| *m != 0),
                ..Default::default()
            },
            Change {
                mac,
                ..Default::default()
            },
            Change {
                promisc: s.promisc,
                ..Default::default()
            },
            Change {
                allmulti: s.allmulti,
                ..Default::default()
            },
            Change {
                tx_qlen: s.tx_qlen,
                ..Default::default()
            },
        ];
        let r = Rtnl::current().map_err(Error::from).and_then(|rtnl| {
            rtnl.block_on(async |h| {
                let Some(l) = link::get(&h, ifname).await? else {
                    return Ok(Vec::new());
                };
                let mut errs = Vec::new();
                for c in &changes {
                    if let Err(e) = link::apply(&h, l.index, ifname, c).await {
                        errs.push(e.to_string());
                    }
                }
                Ok(errs)
            })
        });
        match r {
            Ok(errs) => errors.extend(errs),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch(format!(
            "failed to restore the original values of {ifname}: {}",
            errors.join("; ")
        )))
    }
}

/// Values compare by their words: the kernel prints some sysctls with tabs where configs use
/// spaces (`net.ipv4.tcp_rmem`).
fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

fn check_in_netns(t: &Tuning, sysctls: &[(PathBuf, String)], ifname: &str) -> Result<(), Error> {
    for (p, want) in sysctls {
        let Some(have) = read_sysctl(p)? else {
            continue;
        };
        if !same_value(&have, want) {
            return Err(Error::Mismatch(format!(
                "sysctl {} is {have:?}, the config says {want:?}",
                p.display()
            )));
        }
    }
    if !t.touches_link() {
        return Ok(());
    }
    let l = get_link(&Rtnl::current()?, ifname)?;
    let mismatch = |what: &str, have: String, want: String| {
        Err(Error::Mismatch(format!(
            "{what} of {ifname} is {have}, the config says {want}"
        )))
    };
    if let Some(m) = t.mac
        && l.mac != Some(m)
    {
        return mismatch(
            "MAC",
            l.mac.map(format_mac).unwrap_or_default(),
            format_mac(m),
        );
    }
    if let Some(m) = t.mtu
        && l.mtu != m
    {
        return mismatch("MTU", l.mtu.to_string(), m.to_string());
    }
    if let Some(p) = t.promisc
        && l.promisc != p
    {
        return mismatch("promisc", l.promisc.to_string(), p.to_string());
    }
    if let Some(a) = t.allmulti
        && l.allmulti != a
    {
        return mismatch("allmulti", l.allmulti.to_string(), a.to_string());
    }
    if let Some(q) = t.tx_qlen
        && l.tx_qlen != q
    {
        return mismatch("txqueuelen", l.tx_qlen.to_string(), q.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_comparison() {
        assert!(same_value("4096\t87380\t6291456", "4096 87380 6291456"));
        assert!(!same_value("1", "0"));
    }
}
