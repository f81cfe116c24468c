//! One query in, one decision out: a local answer, or "forward this". Pure, so the rules are
//! tested without sockets.
//!
//! ```text
//!  name (lowercased, trailing dot dropped)
//!   ├─ <ip reversed>.in-addr.arpa / .ip6.arpa ── a container's address? PTR : Forward
//!   ├─ <domain>                               ── NOERROR, no records (authoritative)
//!   ├─ <label>.<domain>                       ── a name here? A/AAAA : NXDOMAIN
//!   ├─ <anything else>.<domain>               ── NXDOMAIN
//!   ├─ <label> (no dot)                       ── a name here? A/AAAA : Forward
//!   └─ anything else                          ── Forward
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::table::Table;

/// Local answers are never cached for long: a removed container must disappear at once.
pub const TTL: u32 = 0;

#[derive(Debug)]
pub enum Decision {
    /// Send this.
    Answer(Message),
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// Decides what to do with `req` (an already decoded query).
pub fn respond(table: &Table, req: &Message) -> Decision {
    if req.metadata.message_type != MessageType::Query {
        return Decision::Answer(reply(req, ResponseCode::FormErr));
    }
    if req.metadata.op_code != OpCode::Query {
        return Decision::Answer(reply(req, ResponseCode::NotImp));
    }
    let [q] = req.queries.as_slice() else {
        return Decision::Answer(reply(req, ResponseCode::FormErr));
    };
    let qname = q.name().to_ascii().to_ascii_lowercase();
    let name = qname.trim_end_matches('.');
    let qtype = q.query_type();

    if let Some(ip) = reverse_ip(name) {
        return match table.reverse(&ip) {
            Some(target) if matches!(qtype, RecordType::PTR | RecordType::ANY) => {
                let mut m = reply(req, ResponseCode::NoError);
                if let Ok(t) = Name::from_ascii(format!("{target}.")) {
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(PTR(t)),
                    ));
                }
                Decision::Answer(m)
            }
            Some(_) => Decision::Answer(reply(req, ResponseCode::NoError)),
            None => Decision::Forward,
        };
    }

    let domain = table.domain.as_str();
    let label = if name == domain {
        return Decision::Answer(reply(req, ResponseCode::NoError));
    } else if let Some(prefix) = name.strip_suffix(domain).and_then(|p| p.strip_suffix('.')) {
        // Inside our domain: we are the authority, an unknown name does not exist.
        match table.lookup(prefix) {
            Some(_) => prefix,
            None => return Decision::Answer(reply(req, ResponseCode::NXDomain)),
        }
    } else if !name.contains('.') && table.lookup(name).is_some() {
        name
    } else {
        return Decision::Forward;
    };

    let ips = table.lookup(label).unwrap_or_default();
    let mut m = reply(req, ResponseCode::NoError);
    for ip in ips {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        m.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
    }
    Decision::Answer(m)
}

/// An authoritative response to `req` with `code` and its question, no records yet.
fn reply(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(req.metadata.id, req.metadata.op_code, code);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = req.queries.clone();
    // EDNS in, EDNS out (RFC 6891): our payload size, no options echoed.
    if req.edns.is_some() {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.edns = Some(e);
    }
    m
}

/// The UDP payload we accept and send with EDNS (the DNS flag day's 1232).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa` → 1.2.3.4, nibbles for v6.
pub fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = Vec::with_capacity(4);
        for p in rest.split('.') {
            octets.push(p.parse().ok()?);
        }
        let [d, c, b, a] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| match p.as_bytes() {
            [c] => (*c as char).to_digit(16).map(|d| d as u8),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        bytes[i / 2] |= if i % 2 == 0 { n << 4 } else { *n };
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use tether_dns_state::{Entry, Records};

    fn table() -> Table {
        let records = Records {
            entries: vec![Entry {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                names: vec!["web".into(), "www".into()],
                ips: vec!["10.1.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            }],
        };
        Table::new("dns.tether", &records)
    }

    fn ask(name: &str, t: RecordType) -> Decision {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        respond(&table(), &m)
    }

    fn answer(name: &str, t: RecordType) -> (ResponseCode, Vec<String>) {
        match ask(name, t) {
            Decision::Answer(m) => (
                m.metadata.response_code,
                m.answers.iter().map(|r| r.data.to_string()).collect(),
            ),
            Decision::Forward => panic!("{name} was forwarded"),
        }
    }

    #[test]
    fn names_and_aliases_resolve_short_and_qualified_in_any_case() {
        for n in ["web", "WEB.dns.tether.", "www", "www.dns.tether"] {
            assert_eq!(
                answer(n, RecordType::A),
                (ResponseCode::NoError, vec!["10.1.0.2".into()])
            );
            assert_eq!(
                answer(n, RecordType::AAAA),
                (ResponseCode::NoError, vec!["fd00::2".into()])
            );
        }
        assert_eq!(
            answer("web", RecordType::MX),
            (ResponseCode::NoError, vec![])
        );
    }

    #[test]
    fn unknown_names_in_the_domain_do_not_exist_and_others_are_forwarded() {
        assert_eq!(
            answer("nope.dns.tether", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer("a.web.dns.tether", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert!(matches!(ask("nope", RecordType::A), Decision::Forward));
        assert!(matches!(
            ask("example.com", RecordType::A),
            Decision::Forward
        ));
        assert!(matches!(
            ask("web.example.com", RecordType::A),
            Decision::Forward
        ));
    }

    #[test]
    fn container_addresses_have_ptr_records() {
        assert_eq!(
            answer("2.0.1.10.in-addr.arpa", RecordType::PTR),
            (ResponseCode::NoError, vec!["web.dns.tether.".into()])
        );
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_ip(v6), Some("fd00::2".parse().unwrap()));
        assert_eq!(
            answer(v6, RecordType::PTR),
            (ResponseCode::NoError, vec!["web.dns.tether.".into()])
        );
        assert!(matches!(
            ask("3.0.1.10.in-addr.arpa", RecordType::PTR),
            Decision::Forward
        ));
    }
}
