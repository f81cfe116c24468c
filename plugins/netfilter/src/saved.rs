//! Reading `iptables-save` output: chains and rules of one table, found again by comment or
//! target, and turned into exact deletes.

use ipnetwork::IpNetwork;

use crate::{Batch, Family, Rule, Table};

/// One `-A CHAIN ...` line of a saved table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// The tokens after `-A CHAIN`, unquoted and unescaped.
    pub args: Vec<String>,
    /// The line as saved; replayed verbatim (with `-D`) to delete the rule.
    pub line: String,
}

impl SavedRule {
    /// An `-A CHAIN ...` line; anything else is `None`.
    fn parse(line: &str) -> Option<SavedRule> {
        if !line.starts_with("-A ") {
            return None;
        }
        let mut tokens = tokenize(line).into_iter().skip(1);
        let chain = tokens.next()?;
        Some(SavedRule {
            chain,
            args: tokens.collect(),
            line: line.to_string(),
        })
    }

    /// The token following the first occurrence of `flag`.
    pub fn value_of(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// The `--comment` text, if any.
    pub fn comment(&self) -> Option<&str> {
        self.value_of("--comment")
    }

    /// The `-j` (or `-g`) target.
    pub fn target(&self) -> Option<&str> {
        self.value_of("-j").or_else(|| self.value_of("-g"))
    }

    /// Whether this is `rule`: the same tokens, addresses compared as networks (so that a
    /// spelling `iptables-save` normalises still matches).
    pub fn same_as(&self, rule: &Rule) -> bool {
        let same = |saved: &String, want: &str| {
            saved == want
                || matches!(
                    (saved.parse::<IpNetwork>(), want.parse::<IpNetwork>()),
                    (Ok(a), Ok(b)) if a == b
                )
        };
        self.args.len() == rule.words().count()
            && self.args.iter().zip(rule.words()).all(|(s, w)| same(s, w))
    }

    /// The `-s` network unless it is negated (`! -s`).
    pub fn source(&self) -> Option<IpNetwork> {
        let i = self.args.iter().position(|a| a == "-s")?;
        if i > 0 && self.args[i - 1] == "!" {
            return None;
        }
        self.args.get(i + 1)?.parse().ok()
    }
}

/// The chains and rules of one table, parsed from `iptables-save` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTable {
    pub table: Table,
    /// Declared chains (built-in and user), in saved order.
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
}

impl SavedTable {
    /// Parses the `*<table>` section of `saved`; a missing section is an empty table.
    pub fn parse(saved: &str, table: Table) -> SavedTable {
        let mut out = SavedTable {
            table,
            chains: Vec::new(),
            rules: Vec::new(),
        };
        let mut inside = false;
        for line in saved.lines() {
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix('*') {
                inside = name == table.as_str();
            } else if !inside || line.starts_with('#') {
                continue;
            } else if line == "COMMIT" {
                inside = false;
            } else if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    out.chains.push(name.to_string());
                }
            } else if let Some(rule) = SavedRule::parse(line) {
                out.rules.push(rule);
            }
        }
        out
    }

    /// Parses `iptables -S <chain>` output: `-N`/`-P` lines declare the chain, `-A` lines are
    /// its rules, in the same form as a save's.
    pub fn parse_listing(listing: &str, table: Table) -> SavedTable {
        let mut out = SavedTable {
            table,
            chains: Vec::new(),
            rules: Vec::new(),
        };
        for line in listing.lines().map(str::trim_end) {
            let declared = line
                .strip_prefix("-N ")
                .or_else(|| line.strip_prefix("-P "));
            if let Some(name) = declared.and_then(|d| d.split_whitespace().next()) {
                out.chains.push(name.to_string());
            } else if let Some(rule) = SavedRule::parse(line) {
                out.rules.push(rule);
            }
        }
        out
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// Rules whose comment starts with `prefix`.
    pub fn rules_with_comment<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.comment().is_some_and(|c| c.starts_with(prefix)))
    }
}

/// Several tables of one family, read together ([`Netfilter::save_tables`](crate::Netfilter::save_tables)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTables {
    pub family: Family,
    tables: Vec<SavedTable>,
}

impl SavedTables {
    /// Parses the sections of `tables` out of one `iptables-save` output; a missing section is
    /// an empty table.
    pub fn parse(family: Family, saved: &str, tables: &[Table]) -> SavedTables {
        SavedTables {
            family,
            tables: tables
                .iter()
                .map(|&t| SavedTable::parse(saved, t))
                .collect(),
        }
    }

    /// `table`, if it was read.
    pub fn get(&self, table: Table) -> Option<&SavedTable> {
        self.tables.iter().find(|t| t.table == table)
    }

    /// `table`. Panics if it was not read: asking for a table one did not read is a bug.
    pub fn table(&self, table: Table) -> &SavedTable {
        self.get(table)
            .unwrap_or_else(|| panic!("the {table} table was not read"))
    }
}

/// Adds to `batch` a `-D` for every rule of `saved` whose comment starts with `prefix`, and
/// returns how many. The generic cleanup for rules found by comment (portmap, firewall).
pub fn delete_rules_with_comment(batch: &mut Batch, saved: &SavedTable, prefix: &str) -> usize {
    let mut n = 0;
    for rule in saved.rules_with_comment(prefix) {
        batch.delete_saved_line(saved.table, &rule.line);
        n += 1;
    }
    n
}

/// Splits a saved line the way `iptables-restore` does: on whitespace, with double quotes
/// grouping and, inside them, backslash escaping the next character.
fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (token, after) = next_token(rest);
        tokens.push(token);
        rest = after.trim_start();
    }
    tokens
}

/// The first token of `s` (which starts with a non-space) and what follows it. Most tokens hold
/// no quote and are copied as one slice (a save of 500 rules is parsed on every plugin call, so
/// this matters); a quote, even mid-token, switches to unescaping up to the next whitespace
/// outside quotes.
fn next_token(s: &str) -> (String, &str) {
    let plain = s
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(s.len());
    if !s[plain..].starts_with('"') {
        return (s[..plain].to_string(), &s[plain..]);
    }
    let mut token = s[..plain].to_string();
    let mut quoted = false;
    let mut chars = s[plain..].char_indices();
    while let Some((i, c)) = chars.next() {
        if quoted {
            match c {
                '\\' => token.extend(chars.next().map(|(_, c)| c)),
                '"' => quoted = false,
                _ => token.push(c),
            }
        } else if c == '"' {
            quoted = true;
        } else if c.is_whitespace() {
            return (token, &s[plain + i..]);
        } else {
            token.push(c);
        }
    }
    (token, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Family;

    const SAVED: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 29 06:00:38 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -m comment --comment "tether net=a id=1 if=eth0" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [3:180]
:TETHER-abc - [0:0]
-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "tether net=a id=1 if=eth0" -j TETHER-abc
-A POSTROUTING ! -s 10.0.0.3/32 -m comment --comment plain -j RETURN
-A TETHER-abc ! -d 224.0.0.0/4 -m comment --comment "x \"q\" y\'z" -j MASQUERADE
COMMIT
# Completed on Sun Nov 29 06:00:38 2026
"#;

    #[test]
    fn parses_one_table() {
        let t = SavedTable::parse(SAVED, Table::Nat);
        assert_eq!(t.chains, ["PREROUTING", "POSTROUTING", "TETHER-abc"]);
        assert_eq!(t.rules.len(), 3);
        let r = &t.rules[0];
        assert_eq!(r.chain, "POSTROUTING");
        assert_eq!(r.comment(), Some("tether net=a id=1 if=eth0"));
        assert_eq!(r.target(), Some("TETHER-abc"));
        assert_eq!(r.source(), Some("10.0.0.2/32".parse().unwrap()));
        assert_eq!(t.rules[1].source(), None, "negated source");
        assert_eq!(t.rules[1].comment(), Some("plain"));
        assert_eq!(t.rules[2].comment(), Some("x \"q\" y'z"));
        assert!(t.has_chain("TETHER-abc"));
        assert!(SavedTable::parse(SAVED, Table::Raw).rules.is_empty());
    }

    #[test]
    fn tokenizes_like_iptables_restore() {
        let t = |line: &str| tokenize(line);
        assert_eq!(t("-A X  -j\tRETURN "), ["-A", "X", "-j", "RETURN"]);
        assert_eq!(
            t(r#"--comment "a \"b\" c" next"#),
            ["--comment", "a \"b\" c", "next"]
        );
        assert_eq!(t(r#"x"y z"w v"#), ["xy zw", "v"], "quote inside a token");
        assert_eq!(t(r#"a "" b"#), ["a", "", "b"], "empty quoted token");
        assert_eq!(t(r#"a "open end"#), ["a", "open end"], "unterminated quote");
        assert_eq!(t(r#""\\""#), ["\\"], "escaped backslash");
        assert!(t("   ").is_empty());
    }

    #[test]
    fn parses_a_chain_listing() {
        let t = SavedTable::parse_listing(
            "-N TETHER-abc\n-A TETHER-abc -m comment --comment \"x y\" -j RETURN\n",
            Table::Nat,
        );
        assert_eq!(t.chains, ["TETHER-abc"]);
        assert_eq!(t.rules.len(), 1);
        assert_eq!(t.rules[0].comment(), Some("x y"));
        assert_eq!(
            t.rules[0].line,
            "-A TETHER-abc -m comment --comment \"x y\" -j RETURN"
        );
        let builtin = SavedTable::parse_listing("-P POSTROUTING ACCEPT\n", Table::Nat);
        assert_eq!(builtin.chains, ["POSTROUTING"]);
        assert!(builtin.rules.is_empty());
    }

    #[test]
    fn compares_with_a_rule() {
        let t = SavedTable::parse(SAVED, Table::Nat);
        let rule = |src: &str, text: &str| {
            Rule::new()
                .src(src.parse().unwrap())
                .comment(text)
                .unwrap()
                .jump("TETHER-abc")
                .unwrap()
        };
        let r = &t.rules[0];
        assert!(r.same_as(&rule("10.0.0.2/32", "tether net=a id=1 if=eth0")));
        assert!(!r.same_as(&rule("10.0.0.2/31", "tether net=a id=1 if=eth0")));
        assert!(!r.same_as(&rule("10.0.0.2/32", "tether net=a id=1 if=eth1")));
        assert!(!r.same_as(&Rule::new().jump("TETHER-abc").unwrap()));
        let saved_v6 = SavedTable::parse(
            "*nat\n-A X -d fd00:0:0:0::/64 -j RETURN\nCOMMIT\n",
            Table::Nat,
        );
        let v6 = Rule::new()
            .dst("fd00::/64".parse().unwrap())
            .jump("RETURN")
            .unwrap();
        assert!(
            saved_v6.rules[0].same_as(&v6),
            "addresses compare as networks"
        );
    }

    #[test]
    fn parses_several_tables_of_one_dump() {
        let t = SavedTables::parse(Family::V4, SAVED, &[Table::Nat, Table::Filter, Table::Raw]);
        assert_eq!(t.table(Table::Nat), &SavedTable::parse(SAVED, Table::Nat));
        assert_eq!(t.table(Table::Filter).rules.len(), 1);
        assert_eq!(t.table(Table::Filter).rules[0].chain, "INPUT");
        assert!(t.table(Table::Raw).rules.is_empty(), "missing section");
        assert!(t.get(Table::Mangle).is_none(), "not asked for");
    }

    #[test]
    fn deletes_by_comment_prefix_verbatim() {
        let t = SavedTable::parse(SAVED, Table::Nat);
        let mut b = Batch::new(Family::V4);
        assert_eq!(delete_rules_with_comment(&mut b, &t, "tether net=a "), 1);
        assert_eq!(
            b.text(),
            "*nat\n-D POSTROUTING -s 10.0.0.2/32 -m comment --comment \"tether net=a id=1 if=eth0\" -j TETHER-abc\nCOMMIT\n"
        );
    }
}
