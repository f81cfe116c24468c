//! STOPGAP until `tether_netfilter::validate::token` accepts `[` and `]`.
//!
//! `ip6tables` needs `--to-destination [fd00::5]:80` (brackets) to DNAT to an IPv6 address with a
//! port, and the netfilter crate's token alphabet has no brackets. The batch is therefore built
//! with a placeholder token that encodes the typed address and port (`V6DNAT_<32 hex>_<port>`,
//! valid as a token), and this module swaps it for the bracketed form right before feeding the
//! batch to `ip6tables-restore` itself. The substituted text comes only from an `Ipv6Addr` and a
//! `u16`, so it cannot inject anything. Remove this module once the token alphabet is widened.

use std::io::Write as _;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};

use tether_netfilter::{Batch, Family, Netfilter};

const PREFIX: &str = "V6DNAT_";

/// The placeholder for `[ip]:port`.
pub fn placeholder(ip: Ipv6Addr, port: u16) -> String {
    format!("{PREFIX}{:032x}_{port}", u128::from(ip))
}

/// Replaces every placeholder in a batch text by its bracketed target.
fn substitute(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split(' ')
                .map(|tok| decode(tok).unwrap_or_else(|| tok.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode(tok: &str) -> Option<String> {
    let (hex, port) = tok.strip_prefix(PREFIX)?.split_once('_')?;
    let ip = Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?);
    let port: u16 = port.parse().ok()?;
    Some(format!("[{ip}]:{port}"))
}

/// Applies `batch`: through the netfilter crate when it has no placeholder, else by running
/// `ip6tables-restore --noflush --wait` on the substituted text (same tool as the crate uses).
pub fn apply(nf: &Netfilter, batch: &Batch) -> Result<(), String> {
    let text = batch.text();
    if batch.family() == Family::V4 || !text.contains(PREFIX) {
        return batch.apply(nf).map_err(|e| e.to_string());
    }
    let input = substitute(&text);
    tracing::debug!(batch = %input, "ip6tables-restore (bracketed DNAT targets)");
    let program = &nf.tools().v6_restore;
    let mut child = Command::new(program)
        .args(["--noflush", "--wait"])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Our batches are small (far below the pipe buffer), so writing before reading is safe.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} --noflush --wait failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = placeholder("fd00::5".parse().unwrap(), 80);
        tether_netfilter::validate::token(&p).unwrap();
        assert_eq!(
            substitute(&format!("-A X -j DNAT --to-destination {p}\nCOMMIT")),
            "-A X -j DNAT --to-destination [fd00::5]:80\nCOMMIT"
        );
        assert_eq!(decode("V6DNAT_zz_1"), None);
    }
}
