//! What a check found, per key, and the explanation of a violation.

use std::fmt;
use std::time::Duration;

use crate::history::Operation;

/// The verdict on a whole history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// No violation found, but some key's search ran out of its budget.
    Unknown,
}

/// A check's result: one entry per key, in key order.
#[derive(Clone, Debug)]
pub struct Report<K, V> {
    pub keys: Vec<KeyReport<K, V>>,
    /// The whole check, keys and all.
    pub elapsed: Duration,
}

/// One key's result and what its search cost.
#[derive(Clone, Debug)]
pub struct KeyReport<K, V> {
    pub key: K,
    /// The key's operations in the history.
    pub operations: usize,
    /// Those the search took (the rest: `dropped_reads` and `pruned_writes`).
    pub checked: usize,
    /// Indeterminate writes and deletes among those checked.
    pub indeterminate: usize,
    /// Indeterminate reads (they constrain nothing).
    pub dropped_reads: usize,
    /// Indeterminate writes that can be assumed not to have happened (see [`crate::check`]).
    pub pruned_writes: usize,
    pub steps: u64,
    pub elapsed: Duration,
    pub verdict: KeyVerdict<K, V>,
}

#[derive(Clone, Debug)]
pub enum KeyVerdict<K, V> {
    Linearizable,
    NotLinearizable(Box<Violation<K, V>>),
    /// The search stopped after `steps` steps, at the step bound or (`out_of_time`) the deadline.
    Unknown {
        out_of_time: bool,
        steps: u64,
    },
}

/// Why one key's history is not linearizable: the longest prefix of a linearization the search
/// found, and the operation it could not fit after it.
#[derive(Clone, Debug)]
pub struct Violation<K, V> {
    pub key: K,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<Operation<K, V>>,
    /// The register after that prefix (`None`: absent).
    pub state: Option<V>,
    /// The first operation to complete among the rest: along that prefix, no order of the
    /// pending operations lets it take effect before it completed.
    pub blocking: Operation<K, V>,
    /// The operations pending when `blocking` completed (invoked before then, not in the
    /// prefix), `blocking` among them.
    pub candidates: Vec<Operation<K, V>>,
    /// Every operation of the key the search took, in history order (for
    /// [`crate::minimise`]).
    pub operations: Vec<Operation<K, V>>,
}

impl<K, V> Report<K, V> {
    pub fn verdict(&self) -> Verdict {
        let verdicts = self.keys.iter().map(|key| &key.verdict);
        if verdicts
            .clone()
            .any(|v| matches!(v, KeyVerdict::NotLinearizable(_)))
        {
            Verdict::NotLinearizable
        } else if verdicts
            .clone()
            .any(|v| matches!(v, KeyVerdict::Unknown { .. }))
        {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    pub fn violations(&self) -> Vec<&Violation<K, V>> {
        self.keys
            .iter()
            .filter_map(|key| match &key.verdict {
                KeyVerdict::NotLinearizable(violation) => Some(&**violation),
                _ => None,
            })
            .collect()
    }

    /// Operations in the history, over every key.
    pub fn operations(&self) -> usize {
        self.keys.iter().map(|key| key.operations).sum()
    }

    /// Indeterminate writes and deletes the search took, over every key.
    pub fn indeterminate(&self) -> usize {
        self.keys.iter().map(|key| key.indeterminate).sum()
    }

    /// Search steps, over every key.
    pub fn steps(&self) -> u64 {
        self.keys.iter().map(|key| key.steps).sum()
    }
}

/// At most this many operations of a prefix are printed (its end, where the trouble is).
const PREFIX_SHOWN: usize = 12;

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Violation<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable ({} operations checked)",
            self.key,
            self.operations.len()
        )?;
        writeln!(
            f,
            "  the longest linearizable prefix found has {} operations{}:",
            self.prefix.len(),
            if self.prefix.len() > PREFIX_SHOWN {
                format!(", the last {PREFIX_SHOWN} in order")
            } else {
                String::new()
            }
        )?;
        let skip = self.prefix.len().saturating_sub(PREFIX_SHOWN);
        for operation in &self.prefix[skip..] {
            writeln!(f, "    {operation}")?;
        }
        match &self.state {
            Some(value) => writeln!(f, "  after it the register holds {value:?}; then")?,
            None => writeln!(f, "  after it the key is absent; then")?,
        }
        writeln!(f, "    {}", self.blocking)?;
        writeln!(
            f,
            "  cannot take effect before it completes, in any order of the operations pending then:"
        )?;
        for operation in &self.candidates {
            writeln!(f, "    {operation}")?;
        }
        Ok(())
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Report<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?}: {} operations on {} keys, {} indeterminate, {} search steps, checked in {:.1} ms",
            self.verdict(),
            self.operations(),
            self.keys.len(),
            self.indeterminate(),
            self.steps(),
            self.elapsed.as_secs_f64() * 1e3
        )?;
        for key in &self.keys {
            match &key.verdict {
                KeyVerdict::Linearizable => {}
                KeyVerdict::NotLinearizable(violation) => write!(f, "{violation}")?,
                KeyVerdict::Unknown { out_of_time, steps } => writeln!(
                    f,
                    "key {:?}: unknown, the search stopped at {} after {steps} steps \
                     ({} operations, {} indeterminate)",
                    key.key,
                    if *out_of_time {
                        "the deadline"
                    } else {
                        "the step bound"
                    },
                    key.checked,
                    key.indeterminate
                )?,
            }
        }
        Ok(())
    }
}
