//! [`Amount`]: a number of labels given as a count or
//! as a percentage of the labels a run has work for, as
//! [`ParallelBuilder::waves`](crate::ParallelBuilder::waves) and
//! [`ParallelBuilder::max_failures`](crate::ParallelBuilder::max_failures)
//! take it (Ansible's `serial` and `max_fail_percentage`).
//!
//! Invariant: an `Amount` is plain data; what it may be is checked once, by
//! `check` at `ParallelBuilder::build`, and resolving it against a label
//! count (`wave_size`, `threshold`) is a pure function that never fails.
//!
//! May use: `error` only (a leaf).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// A number of labels: a count, or a percentage of the labels the run has
/// work for. `3.into()` is three labels, `Amount::percent(25)` a quarter of
/// them; `"3"` and `"25%"` parse to the same.
///
/// ```
/// use ssh_parallel::Amount;
/// assert_eq!(Amount::from(3), "3".parse::<Amount>()?);
/// assert_eq!(Amount::percent(25), "25%".parse::<Amount>()?);
/// assert_eq!(Amount::percent(25).to_string(), "25%");
/// # Ok::<(), ssh_parallel::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// This many labels.
    Count(usize),
    /// This percentage of the labels (checked at build: at most 100).
    Percent(u32),
}

impl Amount {
    /// `p` percent of the labels the run has work for.
    pub fn percent(p: u32) -> Amount {
        Amount::Percent(p)
    }

    /// The labels in a wave of a run over `labels` labels: a count as given,
    /// a percentage rounded down but at least 1 (as Ansible's `serial`).
    pub(crate) fn wave_size(self, labels: usize) -> usize {
        match self {
            Amount::Count(n) => n.max(1),
            Amount::Percent(p) => (labels * p as usize / 100).max(1),
        }
    }

    /// The most failed labels a run over `labels` labels tolerates: more
    /// than this stops it. A percentage is exact: "more than 25% of 10" is
    /// more than 2.5, that is 3 or more, so the threshold rounds down.
    pub(crate) fn threshold(self, labels: usize) -> usize {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => labels * p as usize / 100,
        }
    }

    /// Checks the amount for `option`: a percentage above 100 is an
    /// [`ErrorKind::InvalidConfig`] error, and so is 0 (as a count or a
    /// percentage) unless `zero_ok`.
    pub(crate) fn check(self, option: &str, zero_ok: bool) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("option {option} {why} (got {self})"),
            ))
        };
        match self {
            Amount::Percent(p) if p > 100 => bad("must be a percentage of at most 100%"),
            Amount::Percent(0) | Amount::Count(0) if !zero_ok => bad("must be at least 1 label or 1%"),
            _ => Ok(()),
        }
    }
}

impl From<usize> for Amount {
    fn from(n: usize) -> Amount {
        Amount::Count(n)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `N` (a count) or `P%` (a percentage), surrounding whitespace ignored;
/// anything else is an [`ErrorKind::InvalidConfig`] error quoting the text.
/// The range is checked at build, as for amounts made in code.
impl FromStr for Amount {
    type Err = Error;

    fn from_str(text: &str) -> Result<Amount> {
        let t = text.trim();
        let bad = || {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("invalid amount {text:?}: expected a count (3) or a percentage (25%)"),
            )
        };
        match t.strip_suffix('%') {
            Some(p) => p.trim().parse().map(Amount::Percent).map_err(|_| bad()),
            None => t.parse().map(Amount::Count).map_err(|_| bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_size_rounds_down_to_at_least_one() {
        assert_eq!(Amount::percent(25).wave_size(10), 2);
        assert_eq!(Amount::percent(30).wave_size(10), 3);
        assert_eq!(Amount::percent(5).wave_size(10), 1);
        assert_eq!(Amount::percent(100).wave_size(7), 7);
        assert_eq!(Amount::from(4).wave_size(2), 4);
    }

    #[test]
    fn threshold_is_exact_for_percentages() {
        // More than 25% of 10 failed means 3 or more.
        assert_eq!(Amount::percent(25).threshold(10), 2);
        assert_eq!(Amount::percent(20).threshold(10), 2);
        assert_eq!(Amount::percent(0).threshold(10), 0);
        assert_eq!(Amount::from(0).threshold(10), 0);
    }

    #[test]
    fn parse_and_check() {
        assert_eq!(" 7 ".parse::<Amount>().unwrap(), Amount::Count(7));
        assert_eq!("50 %".parse::<Amount>().unwrap(), Amount::Percent(50));
        for bad in ["", "%", "x", "-1", "1.5%", "3x"] {
            let e = bad.parse::<Amount>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert!(Amount::percent(101).check("waves", false).is_err());
        assert!(Amount::percent(0).check("waves", false).is_err());
        assert!(Amount::from(0).check("waves", false).is_err());
        assert!(Amount::from(0).check("max_failures", true).is_ok());
        let e = Amount::percent(150).check("max_failures", true).unwrap_err();
        assert!(
            e.to_string().contains("max_failures") && e.to_string().contains("150%"),
            "{e}"
        );
    }
}
