//! The layout's pure functions, on saved tables written by hand.

use super::readback::dnat_addr;
use super::*;
use crate::policy::{HostIp, Mapping, Proto};

/// The reference's default mark bit (portmap's `markMasqBit`).
const DEFAULT_MARK_BIT: u32 = 13;

fn cfg(mappings: Vec<Mapping>) -> PortPolicy {
    PortPolicy {
        snat: true,
        masq_all: false,
        mark: MarkChain::Bit(DEFAULT_MARK_BIT),
        conditions_v4: vec!["!".into(), "-s".into(), "192.0.2.0/24".into()],
        conditions_v6: vec![],
        mappings,
    }
}

fn tcp(hp: u16, cp: u16, host_ip: HostIp) -> Mapping {
    Mapping {
        proto: Proto::Tcp,
        host_port: hp,
        container_port: cp,
        host_ip,
    }
}

const OWNER: AttachmentId<'static> = AttachmentId {
    network: "net1",
    container_id: "c1",
    ifname: "eth0",
};

#[test]
fn batch_for_a_fresh_host() {
    let c = cfg(vec![
        tcp(8080, 80, HostIp::Any),
        tcp(8443, 443, HostIp::Addr("127.0.0.1".parse().unwrap())),
    ]);
    let empty = SavedTable::parse("", Table::Nat);
    let raw = SavedTable::parse("", Table::Raw);
    let mut b = Batch::new(Family::V4);
    ensure_base(&mut b, &c, Family::V4, &empty, Some(&raw)).unwrap();
    add_attachment(&mut b, &c, &OWNER, &"10.88.0.5/16".parse().unwrap()).unwrap();
    let text = b.text();
    let chain = dn_chain(&OWNER);
    for want in [
        ":TETHER-HOSTPORT-DNAT - [0:0]".to_string(),
        "-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment \"tether hostport DNAT\" -j TETHER-HOSTPORT-DNAT".into(),
        "-A TETHER-HOSTPORT-SETMARK -m comment --comment \"tether portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000".into(),
        "-A TETHER-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE".into(),
        format!("-A {chain} -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j TETHER-HOSTPORT-SETMARK"),
        format!("-A {chain} -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 8443 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j TETHER-HOSTPORT-SETMARK"),
        format!("-A {chain} -p tcp -m tcp --dport 8080 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j DNAT --to-destination 10.88.0.5:80"),
        format!("-I TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 8080,8443 ! -s 192.0.2.0/24 -m comment --comment \"tether net=net1 id=c1 if=eth0\" -j {chain}"),
        "*raw\n:TETHER-LOCALNET-GUARD - [0:0]\n-A TETHER-LOCALNET-GUARD -d 127.0.0.0/8 ! -i lo".into(),
    ] {
        assert!(text.contains(&want), "missing {want}\nin\n{text}");
    }
}

#[test]
fn v6_skips_v4_only_mappings_and_localhost() {
    let c = cfg(vec![
        tcp(8080, 80, HostIp::AnyOf(Family::V4)),
        tcp(9090, 90, HostIp::Any),
    ]);
    let mut b = Batch::new(Family::V6);
    add_attachment(&mut b, &c, &OWNER, &"fd00::5/64".parse().unwrap()).unwrap();
    let text = b.text();
    assert!(!text.contains("8080"), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    assert!(
        text.contains("-j DNAT --to-destination [fd00::5]:90\n"),
        "{text}"
    );
    assert!(text.contains("-s fd00::/64"), "{text}");
}

#[test]
fn masq_all_no_snat_and_external_mark_chain() {
    let addr: IpNetwork = "10.88.0.5/16".parse().unwrap();
    let empty = SavedTable::parse("", Table::Nat);
    let text = |c: &PortPolicy| {
        let mut b = Batch::new(Family::V4);
        ensure_base(&mut b, c, Family::V4, &empty, None).unwrap();
        add_attachment(&mut b, c, &OWNER, &addr).unwrap();
        b.text()
    };
    let mut c = cfg(vec![tcp(8080, 80, HostIp::Any)]);
    c.masq_all = true;
    let t = text(&c);
    assert!(t.contains("-s 0.0.0.0/0 -p tcp"), "{t}");
    assert!(!t.contains("127.0.0.1"), "{t}");
    c.masq_all = false;
    c.mark = MarkChain::External("KUBE-MARK-MASQ".into());
    let t = text(&c);
    assert!(t.contains("-j KUBE-MARK-MASQ"), "{t}");
    assert!(!t.contains(SETMARK_CHAIN) && !t.contains(MASQ_CHAIN), "{t}");
    c.snat = false;
    let t = text(&c);
    assert!(
        !t.contains("KUBE-MARK-MASQ") && t.contains("-j DNAT"),
        "{t}"
    );
    c.mark = MarkChain::Bit(0);
    c.snat = true;
    assert!(text(&c).contains("--set-xmark 0x1/0x1"));
}

#[test]
fn finds_holders_and_conflicts() {
    let saved = SavedTable::parse(
        "*nat\n:TETHER-HOSTPORT-DNAT - [0:0]\n:TETHER-DN-aaa - [0:0]\n:TETHER-DN-bbb - [0:0]\n\
         -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 80 -m comment --comment \"tether net=old id=c1 if=eth0\" -j TETHER-DN-aaa\n\
         -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 81 -m comment --comment \"tether net=net1 id=c2 if=eth0\" -j TETHER-DN-bbb\n\
         -A TETHER-DN-aaa -p tcp -m tcp --dport 80 -m comment --comment \"tether net=old id=c1 if=eth0\" -j DNAT --to-destination 10.0.0.2:80\n\
         -A TETHER-DN-bbb -d 10.1.1.1/32 -p tcp -m tcp --dport 81 -m comment --comment \"tether net=net1 id=c2 if=eth0\" -j DNAT --to-destination 10.0.0.3:81\n\
         COMMIT\n",
        Table::Nat,
    );
    let p = published(&saved, Family::V4);
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].host_ip, HostIp::Addr("10.1.1.1".parse().unwrap()));
    assert_eq!(p[0].to, Some("10.0.0.2".parse().unwrap()));
    // Our own old rules (renamed network) are not a conflict; c2's port 81 is.
    let c = cfg(vec![tcp(80, 80, HostIp::Any), tcp(81, 81, HostIp::Any)]);
    let (m, holder) = conflict(&c, &OWNER, Family::V4, &p).unwrap();
    assert_eq!((m.host_port, holder.container_id.as_str()), (81, "c2"));
    let other_ip = cfg(vec![tcp(81, 81, HostIp::Addr("10.1.1.2".parse().unwrap()))]);
    assert!(conflict(&other_ip, &OWNER, Family::V4, &p).is_none());

    let r = removal(&saved, Family::V4, |_, c, i| c == "c1" && i == "eth0", &[]);
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.chains.iter().collect::<Vec<_>>(), ["TETHER-DN-aaa"]);
    assert_eq!(r.published.len(), 1);
    let mut b = Batch::new(Family::V4);
    r.add_to(&mut b).unwrap();
    assert_eq!(
        b.text(),
        "*nat\n-D TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 80 -m comment --comment \"tether net=old id=c1 if=eth0\" -j TETHER-DN-aaa\n\
         -F TETHER-DN-aaa\n-X TETHER-DN-aaa\nCOMMIT\n"
    );
}

#[test]
fn entries_decide_the_fast_paths() {
    let dnat = SavedTable::parse_listing(
        "-N TETHER-HOSTPORT-DNAT\n\
         -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 80,81 -m comment --comment \"tether net=n id=c2 if=eth0\" -j TETHER-DN-bbb\n\
         -A TETHER-HOSTPORT-DNAT -p udp -m multiport --dports 53 -m comment --comment \"tether net=n id=c3 if=eth0\" -j TETHER-DN-ccc\n\
         -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 90 -m comment --comment \"tether net=old id=c1 if=eth0\" -j TETHER-DN-aaa\n\
         -A TETHER-HOSTPORT-DNAT -p tcp -m comment --comment \"hand made\" -j ACCEPT\n",
        Table::Nat,
    );
    let e = entries(&dnat);
    assert_eq!(e.len(), 3, "only rules with an attachment's comment");
    assert_eq!(e[0].ports, Some((Proto::Tcp, vec![80, 81])));
    let c4 = AttachmentId {
        container_id: "c4",
        ..OWNER
    };
    let fresh = cfg(vec![tcp(82, 80, HostIp::Any)]);
    assert!(entries_allow_add(&e, &fresh, &c4, Family::V4));
    // Another's port (any host address: the full check decides), or our own old entry.
    let taken = cfg(vec![tcp(81, 80, HostIp::Addr("10.1.1.1".parse().unwrap()))]);
    assert!(!entries_allow_add(&e, &taken, &c4, Family::V4));
    assert!(!entries_allow_add(&e, &fresh, &OWNER, Family::V4));
    // The same port on another protocol is no conflict.
    let udp81 = cfg(vec![Mapping {
        proto: Proto::Udp,
        ..tcp(81, 80, HostIp::Any)
    }]);
    assert!(entries_allow_add(&e, &udp81, &c4, Family::V4));

    // DEL: our entry (network renamed) and its chain; UDP or no entry need the full table.
    let r = removal_from_entries(&e, &OWNER).unwrap();
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.chains.iter().collect::<Vec<_>>(), ["TETHER-DN-aaa"]);
    let c3 = AttachmentId {
        container_id: "c3",
        ..OWNER
    };
    assert!(removal_from_entries(&e, &c3).is_none(), "UDP");
    assert!(
        removal_from_entries(&e, &c4).unwrap().is_empty(),
        "no entry"
    );
    // A chain of ours that another entry jumps to too.
    let shared = SavedTable::parse_listing(
        "-A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 90 -m comment --comment \"tether net=n id=c1 if=eth0\" -j TETHER-DN-aaa\n\
         -A TETHER-HOSTPORT-DNAT -p tcp -m multiport --dports 91 -m comment --comment \"tether net=n id=c9 if=eth0\" -j TETHER-DN-aaa\n",
        Table::Nat,
    );
    assert!(removal_from_entries(&entries(&shared), &OWNER).is_none());
}

#[test]
fn base_checks_and_creation_put_raw_first() {
    let c = cfg(vec![tcp(8080, 80, HostIp::Any)]);
    let mut b = Batch::new(Family::V4);
    check_base(&mut b, &c, Family::V4).unwrap();
    let text = b.text();
    assert!(
        text.starts_with("*raw\n-C TETHER-LOCALNET-GUARD -d 127.0.0.0/8 ! -i lo "),
        "{text}"
    );
    assert_eq!(text.matches("-C ").count(), 7, "{text}");
    assert!(
        !text.contains("-A ") && !text.contains("-I ") && !text.contains("-N "),
        "{text}"
    );
    // Exactly what ensure_base writes on an empty host, as checks.
    let mut written = Batch::new(Family::V4);
    let empty_nat = SavedTable::parse("", Table::Nat);
    let empty_raw = SavedTable::parse("", Table::Raw);
    ensure_base(&mut written, &c, Family::V4, &empty_nat, Some(&empty_raw)).unwrap();
    let written = written.text();
    for line in text.lines().filter(|l| l.starts_with("-C ")) {
        let spec = &line[3..];
        assert!(
            written.contains(&format!("-A {spec}\n")) || written.contains(&format!("-I {spec}\n")),
            "{line} not in\n{written}"
        );
    }
    let mut created = Batch::new(Family::V4);
    create_base(&mut created, &c, Family::V4).unwrap();
    let created = created.text();
    assert!(
        created.starts_with("*raw\n-N TETHER-LOCALNET-GUARD\n"),
        "{created}"
    );
    assert_eq!(created.matches("-N ").count(), 4, "{created}");
    assert_eq!(
        created.replace("-N ", ":").lines().count(),
        written.lines().count()
    );
    // IPv6: no raw table.
    let mut v6 = Batch::new(Family::V6);
    check_base(&mut v6, &c, Family::V6).unwrap();
    assert!(!v6.text().contains("raw"), "{}", v6.text());
}

#[test]
fn parses_dnat_targets() {
    assert_eq!(dnat_addr("10.0.0.2:80"), Some("10.0.0.2".parse().unwrap()));
    assert_eq!(dnat_addr("[fd00::2]:80"), Some("fd00::2".parse().unwrap()));
    assert_eq!(dnat_addr("10.0.0.2"), Some("10.0.0.2".parse().unwrap()));
}
