//! Node sets: the `-w` / `-x` arguments expanded into the hosts to work on,
//! in node-set order, and host names folded back for display.
//!
//! IPv6 literals (`::1`, `[::1]`, `[::1]:2222`, `user@[::1]`) are entries of
//! their own: the node-set grammar reads brackets as ranges and has no room
//! for them, so they are kept beside the node set (as clush takes them, and
//! unlike pdsh, which refuses them), come after the node set's names, and
//! are never expanded.
//!
//! Invariant: every target label is either a node-set name or an IPv6
//! literal as typed, and `Host::parse` accepts both.
//!
//! May use: nothing of this program (the `nodeset` crate and std only).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, ToSocketAddrs};

use nodeset::NodeSet;

/// One host to work on: its label (the node name, `host[:port]`) and the
/// user named in its `user@` prefix, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node name, used as the label and the output prefix.
    pub label: String,
    /// The user of a `user@node` entry.
    pub user: Option<String>,
}

/// Expands the `-w` values minus the `-x` values. `^FILE` reads node sets from
/// a file and `-` from standard input (one or more a line, `#` comments).
pub fn select(hosts: &[String], exclude: &[String]) -> Result<Vec<Target>, String> {
    let mut stdin_used = false;
    let included = expand_all(hosts, &mut stdin_used)?;
    let excluded = expand_all(exclude, &mut stdin_used)?;
    let chosen = included.set.difference(&excluded.set);
    let literals = included.literals.difference(&excluded.literals).cloned();
    Ok(chosen
        .iter()
        .chain(literals)
        .map(|label| Target {
            user: included.users.get(label.as_str()).cloned(),
            label,
        })
        .collect())
}

/// What `-w` or `-x` values name.
#[derive(Default)]
struct Named {
    /// The node-set names.
    set: NodeSet,
    /// The IPv6 literals, as typed (without their `user@`).
    literals: BTreeSet<String>,
    /// The user of each `user@` entry, by name or literal.
    users: BTreeMap<String, String>,
}

fn expand_all(values: &[String], stdin_used: &mut bool) -> Result<Named, String> {
    let mut all = Named::default();
    for value in values {
        for text in sources(value, stdin_used)? {
            parse_with_users(&text, &mut all)?;
        }
    }
    Ok(all)
}

/// Whether `entry` is an IPv6 address, bare or in brackets with an optional
/// `:port` (`::1`, `[::1]`, `[fe80::1]:2222`).
fn is_ipv6_literal(entry: &str) -> bool {
    let Some(inner) = entry.strip_prefix('[') else {
        return entry.parse::<Ipv6Addr>().is_ok();
    };
    let Some((addr, after)) = inner.split_once(']') else {
        return false;
    };
    let port_ok = match after.strip_prefix(':') {
        None => after.is_empty(),
        Some(p) => p.parse::<u16>().is_ok_and(|p| p > 0),
    };
    port_ok && addr.parse::<Ipv6Addr>().is_ok()
}

/// The node-set texts a `-w`/`-x` value stands for.
fn sources(value: &str, stdin_used: &mut bool) -> Result<Vec<String>, String> {
    let content = if let Some(path) = value.strip_prefix('^') {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read host file {path:?}: {e}"))?
    } else if value == "-" {
        if *stdin_used {
            return Err("'-' (hosts from standard input) may be given only once".into());
        }
        *stdin_used = true;
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read hosts from standard input: {e}"))?;
        s
    } else {
        return Ok(vec![value.to_owned()]);
    };
    Ok(content
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The most hosts one command line may name. The node-set parser expands
/// ranges as it parses (100 million names take seconds and gigabytes), so a
/// typo such as `h[1-1000000000]` is refused before parsing.
pub const MAX_HOSTS: u128 = 1_000_000;

/// An upper bound on how many names `entry` expands to: every operand of
/// `!`, `&` and `^` counted in full, each the product of its brackets' sizes.
fn upper_bound(entry: &str) -> u128 {
    let mut total: u128 = 0;
    let mut operand: u128 = 1;
    let mut bracket = String::new();
    let mut depth = 0u32;
    for c in entry.chars() {
        match c {
            '[' => {
                depth += 1;
                bracket.clear();
            }
            ']' if depth > 0 => {
                depth -= 1;
                operand = operand.saturating_mul(bracket_size(&bracket));
            }
            '!' | '&' | '^' if depth == 0 => {
                total = total.saturating_add(operand);
                operand = 1;
            }
            _ if depth > 0 => bracket.push(c),
            _ => {}
        }
    }
    total.saturating_add(operand)
}

/// How many values a bracket's `a-b[/step]` and `n` pieces list.
fn bracket_size(inside: &str) -> u128 {
    inside
        .split(',')
        .map(|piece| {
            let range = piece.split('/').next().unwrap_or("");
            match range.split_once('-') {
                Some((a, b)) => match (a.trim().parse::<u128>(), b.trim().parse::<u128>()) {
                    (Ok(a), Ok(b)) if b >= a => b - a + 1,
                    _ => 1,
                },
                None => 1,
            }
        })
        .fold(0u128, u128::saturating_add)
}

/// Parses one node-set text whose comma-separated entries may carry a
/// `user@` prefix (the node-set parser would read `@` as a group reference)
/// or be IPv6 literals, into `into`.
fn parse_with_users(text: &str, into: &mut Named) -> Result<(), String> {
    for entry in split_top_level(text) {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(format!("invalid node set {text:?}: empty entry (check the commas)"));
        }
        let (user, nodes) = match entry.split_once('@') {
            Some((u, rest)) if !u.is_empty() => (Some(u), rest),
            _ => (None, entry),
        };
        if let Some(u) = user {
            if u.chars().any(|c| c.is_whitespace() || "[]!&^,".contains(c)) {
                return Err(format!("invalid user {u:?} in node set {text:?}"));
            }
        }
        if is_ipv6_literal(nodes) {
            if let Some(u) = user {
                into.users.insert(nodes.to_owned(), u.to_owned());
            }
            into.literals.insert(nodes.to_owned());
            continue;
        }
        let bound = upper_bound(nodes);
        if bound > MAX_HOSTS {
            return Err(format!(
                "node set {nodes:?} names up to {bound} hosts, more than the {MAX_HOSTS} one run accepts"
            ));
        }
        let part: NodeSet = nodes.parse().map_err(|e| format!("invalid node set {text:?}: {e}"))?;
        if let Some(u) = user {
            for node in part.iter() {
                into.users.insert(node, u.to_owned());
            }
        }
        into.set = into.set.union(&part);
    }
    Ok(())
}

/// Splits on the commas outside brackets (an IPv6 literal's brackets hold
/// no comma).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Folds node names into the shortest node set (`web[01-03,07]`); IPv6
/// literals follow it as they are, and so does everything when some other
/// name does not fit the node-set syntax.
pub fn fold<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let (literals, names): (Vec<&str>, Vec<&str>) = names.into_iter().partition(|n| is_ipv6_literal(n));
    let folded = fold_names(&names);
    let mut all: Vec<&str> = Vec::new();
    if !folded.is_empty() {
        all.push(&folded);
    }
    all.extend(literals);
    all.join(",")
}

/// `names` folded by `nodeset` when that reads back as the same names. It
/// does not for mixed padding (`n8,n09` becomes `n[8-09]`, which `nodeset`
/// itself refuses); the library's folding, which keeps each width apart
/// (`n8,n09`), is next, and the names as given last.
fn fold_names(names: &[&str]) -> String {
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    let reads_back = |shown: &String| {
        shown
            .parse::<NodeSet>()
            .is_ok_and(|set| set.len() == unique.len() && set.iter().all(|n| unique.contains(n.as_str())))
    };
    let joined = names.join(",");
    joined
        .parse::<NodeSet>()
        .ok()
        .map(|set| set.to_string())
        .filter(reads_back)
        .or_else(|| Some(ssh_parallel::fold_labels(names)).filter(reads_back))
        .unwrap_or(joined)
}

/// The host names (not IP addresses) among `names` that do not resolve,
/// looked up a few at a time.
pub fn unresolvable(names: &[String]) -> Vec<String> {
    let to_check: Vec<&String> = names
        .iter()
        .filter(|n| n.parse::<IpAddr>().is_err())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut bad = Vec::new();
    // getaddrinfo blocks, and a slow DNS server would make a serial loop
    // over hundreds of names crawl.
    for chunk in to_check.chunks(32) {
        let found: Vec<Option<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|name| {
                    s.spawn(move || match (name.as_str(), 22).to_socket_addrs() {
                        Ok(addrs) if addrs.len() > 0 => None,
                        _ => Some((*name).clone()),
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(None)).collect()
        });
        bad.extend(found.into_iter().flatten());
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(w: &[&str], x: &[&str]) -> Vec<String> {
        let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
        let x: Vec<String> = x.iter().map(|s| s.to_string()).collect();
        select(&w, &x).unwrap().into_iter().map(|t| t.label).collect()
    }

    #[test]
    fn ranges_users_and_exclusions() {
        assert_eq!(
            labels(&["web[01-03],db1", "web05"], &["web02"]),
            ["db1", "web01", "web03", "web05"]
        );
        let t = select(&["alice@h[1-2],h3".into()], &[]).unwrap();
        assert_eq!(t[0].user.as_deref(), Some("alice"));
        assert_eq!(t[2].user, None);
        assert_eq!(
            labels(&["127.0.0.1:[4001-4002]"], &[]),
            ["127.0.0.1:4001", "127.0.0.1:4002"]
        );
    }

    #[test]
    fn absurd_ranges_are_refused_before_expansion() {
        let t = std::time::Instant::now();
        for text in [
            "h[1-100000000]",
            "r[1-1000]n[1-1001]",
            "a[1-2]!b[0-99999999999999999999999999]",
        ] {
            let e = select(&[text.into()], &[]).unwrap_err();
            assert!(e.contains("more than the 1000000"), "{text}: {e}");
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(labels(&["r[1-1000]n[1-1000]"], &[]).len(), 1_000_000);
        assert_eq!(upper_bound("web[01-03,07]"), 4);
        assert_eq!(upper_bound("a[1-4]&a[2-6]"), 9);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
        /// Any `-w`/`-x` text expands or is refused with a message; never a
        /// panic. (Texts starting with `^` or equal to `-` read files or
        /// stdin and are left to the fixed tests.)
        #[test]
        fn node_sets_expand_or_are_refused(
            w in "[a-z0-9@:.,!&^\\[\\]/-]{0,24}",
            x in proptest::option::of("[a-z0-9,\\[\\]-]{0,12}"),
        ) {
            proptest::prop_assume!(!w.starts_with('^') && w != "-");
            let exclude: Vec<String> = x.into_iter().collect();
            match select(std::slice::from_ref(&w), &exclude) {
                Ok(targets) => proptest::prop_assert!(targets.len() as u128 <= MAX_HOSTS),
                Err(e) => proptest::prop_assert!(!e.is_empty() && !e.contains('\n'), "{w:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn ipv6_literals_are_entries_of_their_own() {
        let t = select(&["alice@[::1]:2222,web[1-2],::1,[fe80::1]".into()], &["web2".into()]).unwrap();
        let labels: Vec<&str> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["web1", "::1", "[::1]:2222", "[fe80::1]"]);
        assert_eq!(t[2].user.as_deref(), Some("alice"));
        assert_eq!(t[1].user, None);
        for l in &labels {
            assert!(ssh_parallel::Host::parse(l).is_ok(), "{l}");
        }
        let t = select(&["[::1],[::1]:22".into()], &["[::1]".into()]).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].label, "[::1]:22");
        for bad in ["[::1", "[::1]:x", "[::1]:0", "[zz::1]", "[::1]x"] {
            assert!(select(&[bad.into()], &[]).is_err(), "{bad}");
        }
        assert_eq!(fold(["web2", "[::1]:22", "web1"]), "web[1-2],[::1]:22");
        assert_eq!(fold(["::1"]), "::1");
    }

    #[test]
    fn folding() {
        assert_eq!(fold(["web03", "web07", "web01", "web02"]), "web[01-03,07]");
        assert!(select(&["web[1-".into()], &[]).is_err());
        // Mixed padding: `nodeset` 0.6 folds these to `n[8-09]`, which it
        // cannot parse back; what is shown must be a set that reads back.
        for names in [vec!["n8", "n09"], vec!["n8", "n09", "n10"], vec!["a1", "a01", "a2"]] {
            let shown = fold(names.iter().copied());
            let back: BTreeSet<String> = shown
                .parse::<NodeSet>()
                .unwrap_or_else(|e| panic!("{shown}: {e}"))
                .iter()
                .collect();
            let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
            assert_eq!(back, want, "{names:?} shown as {shown}");
        }
    }
}
