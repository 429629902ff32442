//! A parametrised job line: a TOML inline table read into the command
//! template and its parameter lists; and the TOML basic string the
//! canonical form writes a command in.
//!
//! Invariant: a table accepted here has a non-blank `command` string and
//! parameters named `[A-Za-z0-9_]+`, none a host variable, each with at
//! least one value, whose lists' product is at most `MAX_JOBS_PER_LINE`.
//!
//! May use: `jobfile` (its `Problem` and limits), `toml`.

use toml::Value;

use super::{Params, Problem, HOST_VARIABLES, MAX_JOBS_PER_LINE};

/// The command template and the parameters of `line`, which starts with `{`.
pub(super) fn parse(line: &str) -> Result<(String, Params), Problem> {
    let value: Value = line.parse().map_err(|e: toml::de::Error| Problem::Table {
        column: e.span().map_or(1, |s| column(line, s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let Value::Table(table) = value else {
        // A line starting with `{` that parses is an inline table, but the
        // parser is not ours to trust with that.
        return Err(Problem::Table {
            column: 1,
            message: format!("a {} where a table was expected", value.type_str()),
        });
    };
    let mut command = None;
    let mut params = Vec::new();
    let mut count: u128 = 1;
    for (key, value) in table {
        if key == "command" {
            match value {
                Value::String(s) if !s.trim().is_empty() => command = Some(s),
                Value::String(_) => return Err(Problem::EmptyCommand),
                other => return Err(Problem::CommandType(other.type_str())),
            }
            continue;
        }
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Problem::ParamName(key));
        }
        if HOST_VARIABLES.contains(&key.as_str()) {
            return Err(Problem::ReservedParam(key));
        }
        let values = match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(scalar(&key, item)?);
                }
                out
            }
            other => vec![scalar(&key, other)?],
        };
        if values.is_empty() {
            return Err(Problem::EmptyList(key));
        }
        count = count.saturating_mul(values.len() as u128);
        if count > MAX_JOBS_PER_LINE as u128 {
            return Err(Problem::TooMany(count));
        }
        params.push((key, values));
    }
    let command = command.ok_or(Problem::MissingCommand)?;
    Ok((command, params))
}

/// A parameter value as the text substituted for it: strings as written,
/// numbers and booleans as TOML prints them.
fn scalar(name: &str, value: Value) -> Result<String, Problem> {
    match value {
        Value::String(s) => Ok(s),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Datetime(d) => Ok(d.to_string()),
        other @ (Value::Array(_) | Value::Table(_)) => Err(Problem::ParamType {
            name: name.to_owned(),
            found: other.type_str(),
        }),
    }
}

/// 1-based column (in characters) of byte offset `at` of `line`.
fn column(line: &str, at: usize) -> usize {
    line.char_indices().take_while(|(i, _)| *i < at).count() + 1
}

/// `s` as a TOML basic string on one line: `"`, `\` and control characters
/// escaped.
pub(super) fn basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
