//! The plan file as written: serde types mirroring the TOML, with the spans
//! of what later checks may have to point at. Values whose meaning needs no
//! other part of the file (durations, policies, host-key checks, transfer
//! tools) are checked while they are read, so their errors carry the toml
//! crate's span of the value.
//!
//! Invariant: unknown keys are refused everywhere (`deny_unknown_fields`),
//! so a typo is an error naming the key, never an option silently ignored;
//! hosts keep the order they are written in.
//!
//! May use: `policy` (the `OnError` a policy reads into), `host`
//! (`HostKeyCheck`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::host::HostKeyCheck;
use crate::policy::OnError;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    /// Settings of the run and defaults of every host.
    #[serde(default)]
    pub(crate) defaults: Option<Spanned<RawDefaults>>,
    /// The labels and their hosts, in the order written.
    #[serde(default)]
    pub(crate) hosts: Option<Spanned<HostList>>,
    /// The steps, in the order they are pushed.
    #[serde(default)]
    pub(crate) step: Vec<Spanned<RawStep>>,
    /// The job queues (`[queue.NAME]`), in the order written.
    #[serde(default)]
    pub(crate) queue: QueueList,
}

/// `[defaults]`: the run's settings, then what every host gets unless its
/// own entry says otherwise.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub(crate) workers: Option<usize>,
    pub(crate) connections: Option<usize>,
    pub(crate) reconnections: Option<u32>,
    pub(crate) reconnect_delay: Option<Dur>,
    pub(crate) on_error: Option<Policy>,
    pub(crate) idle_timeout: Option<Dur>,
    pub(crate) io_threads: Option<usize>,
    pub(crate) channels_ahead: Option<bool>,
    /// `"none"`, or the one OpenSSH client configuration file to read.
    pub(crate) ssh_config: Option<Spanned<String>>,
    // What every host gets unless its entry says otherwise (written out
    // rather than `flatten`ed: serde's flatten buffers values and loses their
    // spans, and with them the line of an error).
    pub(crate) user: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) key: Option<Strings>,
    pub(crate) connect_timeout: Option<Dur>,
    pub(crate) auth_timeout: Option<Dur>,
    pub(crate) keepalive: Option<Dur>,
    pub(crate) host_key_check: Option<KeyCheck>,
    pub(crate) vars: Option<BTreeMap<String, String>>,
    pub(crate) expand_vars: Option<bool>,
}

/// What a host entry and `[defaults]` share.
#[derive(Default, Clone)]
pub(crate) struct HostDefaults {
    pub(crate) user: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) key: Option<Strings>,
    pub(crate) connect_timeout: Option<Dur>,
    pub(crate) auth_timeout: Option<Dur>,
    pub(crate) keepalive: Option<Dur>,
    pub(crate) host_key_check: Option<KeyCheck>,
    pub(crate) vars: Option<BTreeMap<String, String>>,
    pub(crate) expand_vars: Option<bool>,
}

macro_rules! host_defaults {
    ($($t:ty),*) => {$(
        impl $t {
            /// The host settings written here.
            pub(crate) fn host_defaults(&self) -> HostDefaults {
                HostDefaults {
                    user: self.user.clone(),
                    port: self.port,
                    key: self.key.clone(),
                    connect_timeout: self.connect_timeout,
                    auth_timeout: self.auth_timeout,
                    keepalive: self.keepalive,
                    host_key_check: self.host_key_check,
                    vars: self.vars.clone(),
                    expand_vars: self.expand_vars,
                }
            }
        }
    )*};
}
host_defaults!(RawDefaults, RawHostTable);

/// A table of named entries (`[hosts]`, `[queue]`), with the spans of names
/// and values, in the order written.
pub(crate) struct Named<T>(pub(crate) Vec<(Spanned<String>, Spanned<T>)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

/// `[hosts]`: label, host pairs.
pub(crate) type HostList = Named<RawHost>;

/// One host: `"[user@]host[:port]"`, or a table.
pub(crate) enum RawHost {
    Spec(String),
    Table(Box<RawHostTable>),
}

/// A host written as a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHostTable {
    /// `[user@]host[:port]` (default: the label).
    pub(crate) host: Option<Spanned<String>>,
    /// This machine instead of an SSH server.
    #[serde(default)]
    pub(crate) local: bool,
    pub(crate) on_error: Option<Policy>,
    pub(crate) reconnections: Option<u32>,
    pub(crate) user: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) key: Option<Strings>,
    pub(crate) connect_timeout: Option<Dur>,
    pub(crate) auth_timeout: Option<Dur>,
    pub(crate) keepalive: Option<Dur>,
    pub(crate) host_key_check: Option<KeyCheck>,
    pub(crate) vars: Option<BTreeMap<String, String>>,
    pub(crate) expand_vars: Option<bool>,
}

/// One `[[step]]`: a selector, one action key, and options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    /// The selector (default `*`).
    pub(crate) on: Option<Spanned<String>>,
    pub(crate) run: Option<Spanned<Run>>,
    pub(crate) put: Option<Spanned<Strings>>,
    pub(crate) get: Option<Spanned<Strings>>,
    pub(crate) join: Option<Spanned<String>>,
    pub(crate) here: Option<Spanned<String>>,
    pub(crate) goto: Option<Spanned<String>>,
    pub(crate) stop: Option<Spanned<bool>>,
    pub(crate) connect: Option<Spanned<bool>>,
    /// The name of the job queue the selected labels take jobs from.
    pub(crate) drain: Option<Spanned<String>>,
    // Transfers.
    pub(crate) to: Option<Spanned<String>>,
    pub(crate) with: Option<Spanned<Tool>>,
    pub(crate) recursive: Option<Spanned<bool>>,
    pub(crate) args: Option<Spanned<Vec<String>>>,
    // Every remote task.
    pub(crate) timeout: Option<Spanned<Dur>>,
    pub(crate) on_error: Option<Spanned<Policy>>,
    pub(crate) or_goto: Option<Spanned<String>>,
    pub(crate) reconnections: Option<Spanned<u32>>,
    // Commands.
    pub(crate) idle_timeout: Option<Spanned<Dur>>,
    pub(crate) ok_exit_codes: Option<Spanned<Vec<i32>>>,
    pub(crate) env: Option<Spanned<BTreeMap<String, String>>>,
    pub(crate) pty: Option<Spanned<bool>>,
    pub(crate) stdin: Option<Spanned<String>>,
}

/// `[queue]`: name, queue pairs.
pub(crate) type QueueList = Named<RawQueue>;

/// `[queue.NAME]`: a fixed bag of jobs, pushed and closed when the plan is
/// built; `jobs` come first (a table's keys precede its sub-tables), then
/// each `[[queue.NAME.job]]` in file order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    /// Shell lines, each a job with no options of its own.
    #[serde(default)]
    pub(crate) jobs: Vec<Spanned<String>>,
    /// Jobs written as tables: a `run`, `put` or `get` with the options a
    /// step of that action takes (`on` and `or_goto` excepted, refused later
    /// with the file's position rather than by serde).
    #[serde(default)]
    pub(crate) job: Vec<Spanned<RawStep>>,
}

/// A command: a shell line, or words quoted one by one.
pub(crate) enum Run {
    Line(String),
    Argv(Vec<String>),
}

/// `scp` (the default) or `rsync`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Tool {
    Scp,
    Rsync,
}

/// One string or an array of strings.
#[derive(Clone)]
pub(crate) struct Strings(pub(crate) Vec<String>);

/// A duration: seconds as a number, or text such as `"1m30s"`, `"250ms"`.
#[derive(Clone, Copy)]
pub(crate) struct Dur(pub(crate) Duration);

/// An error policy: `"ignore"`, `"done"`, `"abort"`, `"abort_all"`,
/// `"retry"`, or `{ retry = N, delay = DURATION, then = POLICY }`.
#[derive(Clone)]
pub(crate) struct Policy(pub(crate) OnError);

/// `"strict"`, `"accept-new"` or `"off"`.
#[derive(Clone, Copy)]
pub(crate) struct KeyCheck(pub(crate) HostKeyCheck);

/// What a table of named entries holds, for the message of a value that is
/// no table.
trait Entries {
    /// What the table should look like.
    const EXPECTING: &'static str;
}

impl Entries for RawHost {
    const EXPECTING: &'static str = "a table of hosts: LABEL = \"[user@]host[:port]\" or LABEL = { ... }";
}

impl Entries for RawQueue {
    const EXPECTING: &'static str =
        "a table of job queues: [queue.NAME] with `jobs = [...]` and/or [[queue.NAME.job]] tables";
}

impl<'de, T: Deserialize<'de> + Entries> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Entries> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Named<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = m.next_key::<Spanned<String>>()? {
                    entries.push((name, m.next_value::<Spanned<T>>()?));
                }
                Ok(Named(entries))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHost;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"[user@]host[:port]\" or a table such as { host = \"web1\", user = \"deploy\" }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawHost, E> {
                Ok(RawHost::Spec(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawHost, A::Error> {
                RawHostTable::deserialize(MapAccessDeserializer::new(m)).map(|t| RawHost::Table(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

/// One string or an array of strings, as written: what `Run` and `Strings` read.
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(w) = s.next_element::<String>()? {
                    all.push(w);
                }
                Ok(OneOrMany::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Run {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(line) => Run::Line(line),
            OneOrMany::Many(words) => Run::Argv(words),
        })
    }
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Strings(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(all) => all,
        }))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds as a number, or text such as \"90s\", \"1m30s\", \"250ms\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                u64::try_from(n)
                    .map(|s| Dur(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("duration {n} is negative")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(n)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dur, E> {
                Duration::try_from_secs_f64(n)
                    .map(Dur)
                    .map_err(|_| E::custom(format!("duration {n} is not a number of seconds from 0 up")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `"1h"`, `"1m30s"`, `"2.5s"`, `"250ms"`: numbers each followed by a unit
/// (`h`, `m`, `s`, `ms`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {text:?}: {why} (write e.g. \"90s\", \"1m30s\", \"250ms\")");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("a number needs a unit"))?;
        let (num, after) = rest.split_at(end);
        let value: f64 = num.parse().map_err(|_| bad(&format!("{num:?} is not a number")))?;
        let unit_end = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit {
            "h" => 3600.0,
            "m" | "min" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "" => return Err(bad("a number needs a unit")),
            u => return Err(bad(&format!("unknown unit {u:?}"))),
        };
        total += value * scale;
        rest = after.trim_start();
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

/// A policy named by a string.
fn named_policy(name: &str) -> Result<OnError, String> {
    Ok(match name {
        "ignore" => OnError::Ignore,
        "done" => OnError::Done,
        "abort" => OnError::Abort,
        "abort_all" | "abort-all" => OnError::AbortAll,
        "retry" => OnError::Retry,
        other => {
            return Err(format!(
                "unknown policy {other:?}: write one of \"ignore\", \"done\", \"abort\", \"abort_all\", \"retry\", \
                 or {{ retry = N, delay = \"1s\", then = \"ignore\" }}"
            ))
        }
    })
}

/// The table form of a policy: a bounded retry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryTable {
    retry: u32,
    delay: Option<Dur>,
    then: Option<Policy>,
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Policy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy: \"ignore\", \"done\", \"abort\", \"abort_all\", \"retry\" or { retry = N, ... }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Policy, E> {
                named_policy(s).map(Policy).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Policy, A::Error> {
                let t = RetryTable::deserialize(MapAccessDeserializer::new(m))?;
                let mut r = OnError::retry(t.retry);
                if let Some(Dur(d)) = t.delay {
                    r = r.delay(d);
                }
                if let Some(Policy(p)) = t.then {
                    r = r.then(p);
                }
                Ok(Policy(r.into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for KeyCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(KeyCheck(match s.as_str() {
            "strict" | "yes" => HostKeyCheck::Strict,
            "accept-new" | "accept_new" => HostKeyCheck::AcceptNew,
            "off" | "no" => HostKeyCheck::Off,
            other => {
                return Err(de::Error::custom(format!(
                    "unknown host_key_check {other:?}: write \"strict\", \"accept-new\" or \"off\""
                )))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "10", "5 parsecs", "s", "1..2s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
