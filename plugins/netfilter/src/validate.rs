//! Validation of every string that becomes an iptables argument.
//!
//! The batch text is parsed by `iptables-restore`, which splits on whitespace and honours double
//! quotes: a stray space, quote or newline in a name would change the meaning of the whole
//! transaction. So each kind of argument has a small allowed alphabet, checked before any exec.

use crate::{Error, Result};

/// iptables' limit for chain names (XT_EXTENSION_MAXNAMELEN - 1 = 28 usable characters).
pub const CHAIN_MAX: usize = 28;
/// The comment match stores at most 256 bytes including the NUL.
pub const COMMENT_MAX: usize = 255;
/// Linux interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn check_chars(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    alphabet: &str,
) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(what, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            what,
            value,
            format!("longer than {max} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|&c| !allowed(c)) {
        return Err(invalid(
            what,
            value,
            format!("character {c:?} not allowed (allowed: {alphabet})"),
        ));
    }
    Ok(())
}

/// Chain names and jump targets: `[A-Za-z0-9_-]{1,28}`, not starting with `-` (it would parse as
/// an option).
pub fn chain(name: &str) -> Result<()> {
    check_chars(
        "chain name",
        name,
        CHAIN_MAX,
        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
        "A-Z a-z 0-9 _ -",
    )?;
    if name.starts_with('-') {
        return Err(invalid("chain name", name, "must not start with '-'"));
    }
    Ok(())
}

/// Comments: `[A-Za-z0-9_.:=/() "-]`, at most 255 characters. They are always quoted in the
/// batch, where the restore tokenizer gives parentheses no meaning (the reference firewall's
/// `CNI firewall plugin rules (ingressPolicy: same-bridge)` needs them); `"` is escaped the way
/// `iptables-save` does it.
pub fn comment(text: &str) -> Result<()> {
    check_chars(
        "comment",
        text,
        COMMENT_MAX,
        |c| c.is_ascii_alphanumeric() || "_.:=/() \"-".contains(c),
        "A-Z a-z 0-9 _ . : = / ( ) space \" -",
    )
}

/// An attachment's comment (`tether net=N id=C if=I`): the interface name in it is whatever the
/// kernel took (anything but `/`, `:`, whitespace and NUL), so any character but a control
/// character (a newline would end the restore line) is allowed, at most 255 bytes.
/// [`crate::Rule::attachment_comment`] quotes and escapes it.
pub fn attachment_comment(text: &str) -> Result<()> {
    check_chars(
        "comment",
        text,
        COMMENT_MAX,
        |c| !c.is_control(),
        "any character but control characters",
    )
}

/// Interface names for `-i`/`-o`: `[A-Za-z0-9_.-]{1,15}`, optionally ending in the iptables
/// wildcard `+`.
pub fn ifname(name: &str) -> Result<()> {
    let base = name.strip_suffix('+').unwrap_or(name);
    check_chars(
        "interface name",
        base,
        IFNAME_MAX,
        |c| c.is_ascii_alphanumeric() || "_.-".contains(c),
        "A-Z a-z 0-9 _ . -, optional trailing +",
    )?;
    if base == "." || base == ".." {
        return Err(invalid("interface name", name, "reserved name"));
    }
    Ok(())
}

/// Network names and container ids as they appear in our comments: CNI's own alphabet
/// (`[A-Za-z0-9_.-]`), so the space-separated comment can be parsed back unambiguously.
pub fn name_field(what: &'static str, value: &str) -> Result<()> {
    check_chars(
        what,
        value,
        COMMENT_MAX,
        |c| c.is_ascii_alphanumeric() || "_.-".contains(c),
        "A-Z a-z 0-9 _ . -",
    )
}

/// Any other rule token (`-p`, `tcp`, `--dport`, `8080`, `--to-destination`, `10.0.0.2:80`, `!`):
/// `[A-Za-z0-9_.:/,=!+-]`, no spaces or quotes. No brackets either: the one argument that needs
/// them, an IPv6 DNAT target, has its typed builder ([`crate::Rule::to_destination`]).
pub fn token(value: &str) -> Result<()> {
    check_chars(
        "rule argument",
        value,
        1024,
        |c| c.is_ascii_alphanumeric() || "_.:/,=!+-".contains(c),
        "A-Z a-z 0-9 _ . : / , = ! + -",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names() {
        for ok in [
            "POSTROUTING",
            "TETHER-0123456789abcdef0123",
            "a_b-c",
            "MASQUERADE",
        ] {
            chain(ok).unwrap();
        }
        for bad in [
            "",
            "-X",
            "has space",
            "semi;colon",
            "new\nline",
            "quote\"",
            "TETHER-0123456789abcdef012345",
            "ümlaut",
        ] {
            assert!(
                matches!(chain(bad), Err(Error::Invalid { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn comments() {
        comment("tether net=mynet id=abc.def if=eth0").unwrap();
        comment("name: \"net\" id: \"cid\"").unwrap();
        comment("CNI firewall plugin rules (ingressPolicy: same-bridge)").unwrap();
        comment(&"x".repeat(255)).unwrap();
        for bad in [
            "",
            "line\nbreak",
            "back\\slash",
            "single'quote",
            "semi;",
            "tab\t",
            &"x".repeat(256),
        ] {
            assert!(comment(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ifnames_and_tokens() {
        ifname("eth0").unwrap();
        ifname("veth+").unwrap();
        ifname("br-1.100").unwrap();
        for bad in ["", "..", "a b", "toolonginterface", "a/b", "a:b", "+"] {
            assert!(ifname(bad).is_err(), "{bad:?} accepted");
        }
        for ok in [
            "-p",
            "tcp",
            "--dport",
            "8080",
            "10.0.0.2:80",
            "!",
            "1:65535",
        ] {
            token(ok).unwrap();
        }
        for bad in [
            "",
            "a b",
            "\"",
            "x\ny",
            "$(reboot)",
            "a;b",
            "[fd00::5]:80",
            "(x)",
        ] {
            assert!(token(bad).is_err(), "{bad:?} accepted");
        }
    }
}
