//! Traffic control over rtnetlink: the `tbf` qdisc (which netlink-packet-route has no type for, so
//! its options are built and read here as raw attributes), the `ingress` qdisc, and the u32
//! match-all filter with a `mirred egress redirect` action (which rtnetlink builds).

use crate::Error;
use crate::link::errno;
use futures::TryStreamExt;
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE, Nla, NlasIterator};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcActionAttribute, TcActionMirrorOption, TcActionOption, TcAttribute, TcFilterU32Option,
    TcHandle, TcMessage, TcOption,
};
use nix::errno::Errno;
use rtnetlink::Handle;
use tether_netlink::rtnl_ack;

/// The queueing latency the reference sizes the tbf queue for.
pub const LATENCY_MS: f64 = 25.0;
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const ETH_P_ALL: u16 = 0x0003;

/// The tbf parameters the kernel stores: rate in bytes/s, bucket size in scheduler ticks, queue
/// limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    pub rate: u64,
    pub buffer: u32,
    pub limit: u32,
}

impl Tbf {
    /// The reference's arithmetic (its `createTBF`), so both plugins program identical qdiscs:
    /// buffer = time to send the burst at the rate, in ticks; limit = bytes sent in 25 ms at the
    /// rate, plus the burst.
    pub fn new(rate_bits: u64, burst_bits: u64, tick_in_usec: f64) -> Tbf {
        let rate = rate_bits / 8;
        let burst = burst_bits / 8;
        let burst_usec = (burst as f64 * TIME_UNITS_PER_SEC / rate as f64) as u32;
        let buffer = (f64::from(burst_usec) * tick_in_usec) as u32;
        let latency_usec = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0);
        let limit =
            ((rate as f64 * latency_usec / TIME_UNITS_PER_SEC) as u32).saturating_add(burst as u32);
        Tbf {
            rate,
            buffer,
            limit,
        }
    }

    /// `struct tc_tbf_qopt`: two `tc_ratespec`s (rate, peakrate), then limit, buffer, mtu; all in
    /// host byte order. The link layer is set, so the kernel needs no rate table.
    fn qopt(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(36);
        // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead; i16 cell_align; u16 mpu; u32 rate; }
        b.extend_from_slice(&[0, TC_LINKLAYER_ETHERNET]);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&(self.rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
        b.extend_from_slice(&[0; 12]); // no peak rate
        b.extend_from_slice(&self.limit.to_ne_bytes());
        b.extend_from_slice(&self.buffer.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with a peak rate
        b
    }

    fn options(&self) -> Vec<TcOption> {
        let mut o = vec![TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, self.qopt()))];
        if self.rate >= u64::from(u32::MAX) {
            o.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.rate.to_ne_bytes().to_vec(),
            )));
        }
        o
    }

    /// Reads the parameters back from a dumped tbf qdisc's `TCA_OPTIONS`.
    fn parse(options: &[TcOption]) -> Option<Tbf> {
        // netlink-packet-route keeps an unknown kind's TCA_OPTIONS as one opaque attribute.
        let mut nested = Vec::new();
        for o in options {
            if let TcOption::Other(nla) = o {
                let mut v = vec![0; nla.value_len()];
                nla.emit_value(&mut v);
                nested.extend_from_slice(&v);
            }
        }
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let mut tbf = None;
        let mut rate64 = None;
        for nla in NlasIterator::new(&nested[..]).flatten() {
            let v = nla.value();
            match nla.kind() {
                TCA_TBF_PARMS if v.len() >= 36 => {
                    tbf = Some(Tbf {
                        rate: u64::from(u32_at(v, 8)),
                        limit: u32_at(v, 24),
                        buffer: u32_at(v, 28),
                    })
                }
                TCA_TBF_RATE64 if v.len() >= 8 => {
                    rate64 = Some(u64::from_ne_bytes(v[..8].try_into().unwrap()))
                }
                _ => {}
            }
        }
        tbf.map(|mut t| {
            if let Some(r) = rate64 {
                t.rate = r;
            }
            t
        })
    }
}

/// Microseconds-to-ticks factor of the packet scheduler clock, from `/proc/net/psched` as tc and
/// the reference read it (15.625 on every kernel since 2.6.3x, the fallback).
pub fn tick_in_usec() -> f64 {
    let parse = |s: &str| -> Option<f64> {
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|p| u64::from_str_radix(p, 16).ok())
            .collect::<Option<_>>()?;
        let (t2us, us2t, clock_res) = (*v.first()?, *v.get(1)?, *v.get(2)?);
        if us2t == 0 || clock_res == 0 {
            return None;
        }
        let clock_factor = clock_res as f64 / TIME_UNITS_PER_SEC;
        Some(t2us as f64 / us2t as f64 * clock_factor)
    };
    std::fs::read_to_string("/proc/net/psched")
        .ok()
        .and_then(|s| parse(&s))
        .unwrap_or(15.625)
}

/// One qdisc of a link, as far as this plugin cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    pub handle: TcHandle,
    pub parent: TcHandle,
    pub tbf: Option<Tbf>,
}

pub async fn qdiscs(h: &Handle, ifindex: u32) -> Result<Vec<Qdisc>, Error> {
    let msgs: Vec<TcMessage> = h
        .clone()
        .qdisc()
        .get()
        .index(ifindex as i32)
        .execute()
        .try_collect()
        .await
        .map_err(|source| Error::Netlink {
            what: format!("failed to list the qdiscs of link {ifindex}"),
            source: source.into(),
        })?;
    Ok(msgs
        .into_iter()
        // Older kernels ignore the index of a dump request.
        .filter(|m| m.header.index == ifindex as i32)
        .map(|m| {
            let mut kind = String::new();
            let mut tbf = None;
            for a in &m.attributes {
                match a {
                    TcAttribute::Kind(k) => kind = k.clone(),
                    TcAttribute::Options(o) => tbf = Tbf::parse(o),
                    _ => {}
                }
            }
            Qdisc {
                tbf: tbf.filter(|_| kind == "tbf"),
                kind,
                handle: m.header.handle,
                parent: m.header.parent,
            }
        })
        .collect())
}

/// Makes a tbf with handle 1: the root qdisc of the link (replacing what was there, so a repeated
/// ADD converges instead of failing).
pub async fn set_root_tbf(h: &Handle, ifindex: u32, tbf: &Tbf) -> Result<(), Error> {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = TcHandle { major: 1, minor: 0 };
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    m.attributes.push(TcAttribute::Options(tbf.options()));
    rtnl_ack(
        h,
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
    .map_err(|source| Error::Netlink {
        what: format!("failed to add a tbf qdisc to link {ifindex}"),
        source: source.into(),
    })
}

/// Deletes the qdisc at `parent` (root or ingress) if it is of `kind`; absence is success.
pub async fn delete_qdisc(
    h: &Handle,
    ifindex: u32,
    parent: TcHandle,
    kind: &str,
) -> Result<(), Error> {
    let present = qdiscs(h, ifindex)
        .await?
        .into_iter()
        .find(|q| q.parent == parent && q.kind == kind);
    let Some(q) = present else {
        return Ok(());
    };
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = parent;
    m.header.handle = q.handle;
    match rtnl_ack(h, RouteNetlinkMessage::DelQueueDiscipline(m), 0).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(Errno::ENOENT | Errno::ENODEV)) => Ok(()),
        Err(source) => Err(Error::Netlink {
            what: format!("failed to delete the {kind} qdisc of link {ifindex}"),
            source: source.into(),
        }),
    }
}

/// Sends everything arriving on `ifindex` out of `to`: a fresh ingress qdisc (ffff:) with one u32
/// match-all filter (prio 1, all protocols) and a `mirred egress redirect` action. Any earlier
/// ingress qdisc goes first, taking its filters with it, so a repeated ADD leaves one filter.
pub async fn redirect_ingress(h: &Handle, ifindex: u32, to: u32) -> Result<(), Error> {
    delete_qdisc(h, ifindex, TcHandle::INGRESS, "ingress").await?;
    let nl = |what: &str| {
        let what = format!("failed to {what} on link {ifindex}");
        move |source: rtnetlink::Error| Error::Netlink {
            what,
            source: source.into(),
        }
    };
    h.clone()
        .qdisc()
        .add(ifindex as i32)
        .ingress()
        .execute()
        .await
        .map_err(nl("add an ingress qdisc"))?;
    h.clone()
        .traffic_filter(ifindex as i32)
        .add()
        .parent(0xffff_0000)
        .priority(1)
        // The protocol goes in network byte order (tc's htons(ETH_P_ALL)).
        .protocol(ETH_P_ALL.to_be())
        .redirect(to)
        .map_err(nl("build a redirect filter"))?
        .execute()
        .await
        .map_err(nl("add a redirect filter"))
}

/// The interfaces that the ingress filters of `ifindex` redirect to.
pub async fn ingress_redirects(h: &Handle, ifindex: u32) -> Result<Vec<u32>, Error> {
    let msgs: Vec<TcMessage> = h
        .clone()
        .traffic_filter(ifindex as i32)
        .get()
        .ingress()
        .execute()
        .try_collect()
        .await
        .map_err(|source| Error::Netlink {
            what: format!("failed to list the ingress filters of link {ifindex}"),
            source: source.into(),
        })?;
    let mut out = Vec::new();
    for m in msgs {
        for a in m.attributes {
            let TcAttribute::Options(opts) = a else {
                continue;
            };
            for o in opts {
                let TcOption::U32(TcFilterU32Option::Action(actions)) = o else {
                    continue;
                };
                for act in actions {
                    for aa in act.attributes {
                        let TcActionAttribute::Options(aos) = aa else {
                            continue;
                        };
                        for ao in aos {
                            if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                                out.push(p.ifindex);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_arithmetic() {
        // 8 Mbit/s, burst 256 kbit: 1 MB/s, 32 KB burst = 32 ms = 500000 ticks;
        // limit = 25 ms of 1 MB/s + burst = 25000 + 32000.
        let t = Tbf::new(8_000_000, 256_000, 15.625);
        assert_eq!(
            t,
            Tbf {
                rate: 1_000_000,
                buffer: 500_000,
                limit: 57_000
            }
        );
    }

    #[test]
    fn options_round_trip() {
        for rate in [1_000_000u64, 10_000_000_000] {
            let t = Tbf {
                rate,
                buffer: 1234,
                limit: 5678,
            };
            // What a dump hands back: TCA_OPTIONS as one opaque attribute holding the nested ones.
            let nested: Vec<u8> = {
                use netlink_packet_core::Emitable;
                let opts = t.options();
                let mut buf = vec![0; opts.as_slice().buffer_len()];
                opts.as_slice().emit(&mut buf);
                buf
            };
            let opaque = TcOption::Other(DefaultNla::new(2, nested));
            assert_eq!(Tbf::parse(&[opaque]), Some(t));
        }
    }

    #[test]
    fn psched_factor() {
        assert!((tick_in_usec() - 15.625).abs() < 1e-9);
    }
}
