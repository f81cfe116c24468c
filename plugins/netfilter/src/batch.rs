//! Rules as data and the one-transaction [`Batch`].

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;

use crate::{Family, Netfilter, Result, SavedRule, Table, validate};

/// One rule specification (everything after `-A CHAIN`). Built only from validated pieces, so
/// its text can be pasted into a restore batch as is.
///
/// Build matches in `iptables-save`'s canonical order (addresses, interfaces, protocol, matches,
/// target) so that batch text and saved text look alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Plain(String),
    /// Rendered in double quotes with `"` and `\` escaped, as `iptables-save` writes comments.
    Quoted(String),
}

impl Rule {
    pub fn new() -> Rule {
        Rule::default()
    }

    fn plain(mut self, parts: &[&str]) -> Rule {
        self.tokens
            .extend(parts.iter().map(|p| Token::Plain(p.to_string())));
        self
    }

    fn net(self, negate: bool, flag: &str, net: IpNetwork) -> Rule {
        let text = net.to_string();
        if negate {
            self.plain(&["!", flag, &text])
        } else {
            self.plain(&[flag, &text])
        }
    }

    /// `-s <net>`
    pub fn src(self, net: IpNetwork) -> Rule {
        self.net(false, "-s", net)
    }

    /// `! -s <net>`
    pub fn not_src(self, net: IpNetwork) -> Rule {
        self.net(true, "-s", net)
    }

    /// `-d <net>`
    pub fn dst(self, net: IpNetwork) -> Rule {
        self.net(false, "-d", net)
    }

    /// `! -d <net>`
    pub fn not_dst(self, net: IpNetwork) -> Rule {
        self.net(true, "-d", net)
    }

    /// `-i <ifname>`
    pub fn in_iface(self, ifname: &str) -> Result<Rule> {
        validate::ifname(ifname)?;
        Ok(self.plain(&["-i", ifname]))
    }

    /// `-o <ifname>`
    pub fn out_iface(self, ifname: &str) -> Result<Rule> {
        validate::ifname(ifname)?;
        Ok(self.plain(&["-o", ifname]))
    }

    /// `-m comment --comment "<text>"`
    pub fn comment(self, text: &str) -> Result<Rule> {
        validate::comment(text)?;
        let mut rule = self.plain(&["-m", "comment", "--comment"]);
        rule.tokens.push(Token::Quoted(text.to_string()));
        Ok(rule)
    }

    /// `-m comment --comment "<text>"` for an attachment's comment ([`crate::comment`]), which
    /// carries an interface name the kernel and the bridge plugin accepted: `;`, quotes, `$`,
    /// `#`, `!`, `\` and backticks included. Checked by [`validate::attachment_comment`] (no
    /// control characters) and written quoted, with `"` and `\` escaped, which is how
    /// `iptables-restore` reads a quoted token back and how `iptables-save` prints it.
    pub fn attachment_comment(self, text: &str) -> Result<Rule> {
        validate::attachment_comment(text)?;
        let mut rule = self.plain(&["-m", "comment", "--comment"]);
        rule.tokens.push(Token::Quoted(text.to_string()));
        Ok(rule)
    }

    /// `-j <target>`: a chain or a target such as `ACCEPT` or `MASQUERADE`.
    pub fn jump(self, target: &str) -> Result<Rule> {
        validate::chain(target)?;
        Ok(self.plain(&["-j", target]))
    }

    /// `--to-destination <ip>:<port>` (after `-j DNAT`), IPv6 in brackets (`[fd00::5]:80`) as
    /// ip6tables needs it and `iptables-save` prints it. Typed, so the brackets never need a
    /// place in the free-form [`Rule::arg`] alphabet.
    pub fn to_destination(self, ip: IpAddr, port: u16) -> Rule {
        // A SocketAddr built from an IpAddr has no IPv6 scope id or flow info to print.
        self.plain(&["--to-destination", &SocketAddr::new(ip, port).to_string()])
    }

    /// Any other token (`-p`, `tcp`, `--dport`, `80`, `--to-destination`, `10.0.0.2:80`, ...),
    /// for matches and target options this builder has no method for.
    pub fn arg(self, token: &str) -> Result<Rule> {
        validate::token(token)?;
        Ok(self.plain(&[token]))
    }

    /// Several [`Rule::arg`] tokens.
    pub fn args(self, tokens: &[&str]) -> Result<Rule> {
        tokens.iter().try_fold(self, |rule, t| rule.arg(t))
    }

    /// The tokens as `iptables-restore` reads them (comments unquoted), for comparing with a
    /// [`SavedRule`]'s `args`.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|t| match t {
            Token::Plain(w) | Token::Quoted(w) => w.as_str(),
        })
    }

    /// The rule specification as restore text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, token) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match token {
                Token::Plain(t) => out.push_str(t),
                Token::Quoted(t) => {
                    // Inside quotes iptables-restore takes `\` as "the next character as is":
                    // the only two that need it are the quote and the backslash itself.
                    out.push('"');
                    for c in t.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
        }
        out
    }
}

/// One `iptables-restore --noflush` transaction for one family.
///
/// Lines keep their order within a table; tables appear in the order they were first used. With
/// nf_tables the whole batch commits atomically: if any line fails (say a `-D` of a rule that is
/// not there) nothing is changed, which is what lets teardown try the exact deletes first and fall
/// back to reading the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    family: Family,
    lines: Vec<(Table, String)>,
}

impl Batch {
    pub fn new(family: Family) -> Batch {
        Batch {
            family,
            lines: Vec::new(),
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    fn push(&mut self, table: Table, line: String) -> &mut Batch {
        self.lines.push((table, line));
        self
    }

    fn rule_line(
        &mut self,
        table: Table,
        op: &str,
        chain: &str,
        rule: &Rule,
    ) -> Result<&mut Batch> {
        validate::chain(chain)?;
        let spec = rule.text();
        let line = if spec.is_empty() {
            format!("{op} {chain}")
        } else {
            format!("{op} {chain} {spec}")
        };
        Ok(self.push(table, line))
    }

    /// `:NAME - [0:0]`: creates the user chain, or flushes it if it exists. Idempotent for chains
    /// we own, and needs no existence check.
    pub fn new_chain(&mut self, table: Table, name: &str) -> Result<&mut Batch> {
        validate::chain(name)?;
        Ok(self.push(table, format!(":{name} - [0:0]")))
    }

    /// `-N NAME`: creates the user chain, and fails the batch if the restore finds it when it
    /// reads the table. Not exclusive on its own: iptables-nft-restore's commit does not fail
    /// when another restore created the chain between that read and the commit, so two racing
    /// batches can both commit. Batches that race to create one chain must hold
    /// [`crate::lock::netfilter_lock`] from before the restore starts.
    pub fn create_chain(&mut self, table: Table, name: &str) -> Result<&mut Batch> {
        validate::chain(name)?;
        Ok(self.push(table, format!("-N {name}")))
    }

    /// `-A CHAIN rule`
    pub fn append(&mut self, table: Table, chain: &str, rule: &Rule) -> Result<&mut Batch> {
        self.rule_line(table, "-A", chain, rule)
    }

    /// `-I CHAIN rule` (at the top).
    pub fn insert(&mut self, table: Table, chain: &str, rule: &Rule) -> Result<&mut Batch> {
        self.rule_line(table, "-I", chain, rule)
    }

    /// `-D CHAIN rule`: fails the batch if no such rule exists.
    pub fn delete(&mut self, table: Table, chain: &str, rule: &Rule) -> Result<&mut Batch> {
        self.rule_line(table, "-D", chain, rule)
    }

    /// `-C CHAIN rule`: changes nothing, and fails the batch if no such rule exists. A batch of
    /// checks alone verifies rules without reading the table, whose size is everyone's rules.
    pub fn check(&mut self, table: Table, chain: &str, rule: &Rule) -> Result<&mut Batch> {
        self.rule_line(table, "-C", chain, rule)
    }

    /// `-F CHAIN`
    pub fn flush_chain(&mut self, table: Table, chain: &str) -> Result<&mut Batch> {
        validate::chain(chain)?;
        Ok(self.push(table, format!("-F {chain}")))
    }

    /// `-X CHAIN`: fails the batch if the chain is missing, not empty or still referenced.
    pub fn delete_chain(&mut self, table: Table, chain: &str) -> Result<&mut Batch> {
        validate::chain(chain)?;
        Ok(self.push(table, format!("-X {chain}")))
    }

    /// Deletes a rule exactly as `iptables-save` printed it. The line comes from the kernel's own
    /// dump (not from user input), so it is replayed verbatim rather than re-validated: that is the
    /// only way to reproduce rules written by other tools byte for byte.
    pub(crate) fn delete_saved_line(&mut self, table: Table, line: &str) -> &mut Batch {
        let spec = line.strip_prefix("-A ").unwrap_or(line);
        self.push(table, format!("-D {spec}"))
    }

    /// `-D` for a rule found in a [`SavedTable`](crate::SavedTable) of `table`, replayed verbatim.
    pub fn delete_saved(&mut self, table: Table, rule: &SavedRule) -> &mut Batch {
        self.delete_saved_line(table, &rule.line)
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The restore input this batch feeds on stdin.
    pub fn text(&self) -> String {
        let mut tables: Vec<Table> = Vec::new();
        for (table, _) in &self.lines {
            if !tables.contains(table) {
                tables.push(*table);
            }
        }
        let mut out = String::new();
        for table in tables {
            let _ = writeln!(out, "*{table}");
            for (_, line) in self.lines.iter().filter(|(t, _)| *t == table) {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// Applies the batch with one `iptables-restore --noflush --wait` (or `ip6tables-restore`).
    /// An empty batch runs nothing.
    pub fn apply(&self, nf: &Netfilter) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        nf.restore(self.family, &self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn batch_text_groups_tables_in_order() {
        let mut b = Batch::new(Family::V4);
        assert!(b.is_empty());
        b.new_chain(Table::Nat, "TETHER-x").unwrap();
        let rule = Rule::new()
            .src(net("10.0.0.2/32"))
            .comment("a \"b\" c")
            .unwrap()
            .jump("TETHER-x")
            .unwrap();
        b.append(Table::Nat, "POSTROUTING", &rule).unwrap();
        let fwd = Rule::new()
            .in_iface("br0")
            .unwrap()
            .args(&["-p", "tcp", "--dport", "80"])
            .unwrap()
            .jump("ACCEPT")
            .unwrap();
        b.insert(Table::Filter, "FORWARD", &fwd).unwrap();
        b.flush_chain(Table::Nat, "TETHER-x").unwrap();
        b.delete_chain(Table::Nat, "TETHER-x").unwrap();
        b.create_chain(Table::Nat, "TETHER-y").unwrap();
        b.check(Table::Nat, "TETHER-y", &Rule::new().jump("RETURN").unwrap())
            .unwrap();
        assert_eq!(
            b.text(),
            "*nat\n:TETHER-x - [0:0]\n\
             -A POSTROUTING -s 10.0.0.2/32 -m comment --comment \"a \\\"b\\\" c\" -j TETHER-x\n\
             -F TETHER-x\n-X TETHER-x\n-N TETHER-y\n-C TETHER-y -j RETURN\nCOMMIT\n\
             *filter\n-I FORWARD -i br0 -p tcp --dport 80 -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn dnat_targets_render_as_iptables_save_prints_them() {
        let v4 = Rule::new()
            .jump("DNAT")
            .unwrap()
            .to_destination("10.88.0.5".parse().unwrap(), 80);
        assert_eq!(v4.text(), "-j DNAT --to-destination 10.88.0.5:80");
        let v6 = Rule::new()
            .jump("DNAT")
            .unwrap()
            .to_destination("fd00::5".parse().unwrap(), 8080);
        assert_eq!(v6.text(), "-j DNAT --to-destination [fd00::5]:8080");
        let mapped = Rule::new().to_destination("::ffff:10.0.0.1".parse().unwrap(), 1);
        assert_eq!(mapped.text(), "--to-destination [::ffff:10.0.0.1]:1");
    }

    #[test]
    fn builder_rejects_bad_arguments() {
        let mut b = Batch::new(Family::V6);
        assert!(b.new_chain(Table::Nat, "bad chain").is_err());
        assert!(b.new_chain(Table::Nat, "X\n-F POSTROUTING").is_err());
        assert!(b.create_chain(Table::Nat, "-F").is_err());
        assert!(b.append(Table::Nat, "-F", &Rule::new()).is_err());
        assert!(Rule::new().comment("evil\"\nCOMMIT").is_err());
        assert!(Rule::new().comment("back\\slash").is_err());
        assert!(Rule::new().jump("A B").is_err());
        assert!(Rule::new().in_iface("eth 0").is_err());
        assert!(Rule::new().arg("--dport 80").is_err());
        assert!(b.is_empty(), "failed calls must not add lines");
    }
}
