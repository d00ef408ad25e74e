//! The checker: splits a history by key, encodes each key's operations for the search, and
//! turns what the search found into a report.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::history::{HistoryError, Op, Operation, Outcome};
use crate::report::{KeyReport, KeyVerdict, Report, Violation};
use crate::search::{search, Budget, Call, Found, State, Step, ABSENT};

/// Bounds on a check: a history that needs more yields [`KeyVerdict::Unknown`], never a hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Search steps per key (one step: one entry of the key's timeline visited).
    pub max_steps: u64,
    /// Wall-clock time for the whole history.
    pub max_time: Duration,
}

impl Default for Limits {
    /// 20 million steps per key (a few seconds) and 60 s in all.
    fn default() -> Limits {
        Limits {
            max_steps: 20_000_000,
            max_time: Duration::from_secs(60),
        }
    }
}

/// Checks that `history` is linearizable for a register per key (every key starts absent).
///
/// Keys are independent (a history is linearizable if and only if each key's sub-history is:
/// linearizability is compositional), so each key is searched on its own. Before the search,
/// indeterminate reads are dropped, and so are indeterminate writes whose value no read returned
/// when no delete that reported a removal could follow them (such a write can be assumed never
/// to have happened: any linearization placing it has none of the key's reads between it and the
/// next write or delete, and that next operation does not depend on the register's state).
pub fn check<K, V>(
    history: &[Operation<K, V>],
    limits: Limits,
) -> Result<Report<K, V>, HistoryError>
where
    K: Ord + Clone,
    V: Eq + Hash + Clone,
{
    let started = Instant::now();
    let deadline = started + limits.max_time;
    let mut by_key: BTreeMap<&K, Vec<&Operation<K, V>>> = BTreeMap::new();
    for (index, operation) in history.iter().enumerate() {
        if operation
            .completed()
            .is_some_and(|at| at < operation.invoked)
        {
            return Err(HistoryError::CompletedBeforeInvoked { index });
        }
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, operations)| check_key(key, &operations, limits.max_steps, deadline))
        .collect();
    Ok(Report {
        keys,
        elapsed: started.elapsed(),
    })
}

fn check_key<K, V>(
    key: &K,
    operations: &[&Operation<K, V>],
    max_steps: u64,
    deadline: Instant,
) -> KeyReport<K, V>
where
    K: Clone,
    V: Eq + Hash + Clone,
{
    let started = Instant::now();
    let kept = relevant(operations);
    let mut codes: HashMap<V, State> = HashMap::new();
    let mut values: Vec<Option<V>> = vec![None];
    let mut code_of = |value: Option<&V>| -> State {
        let Some(value) = value else { return ABSENT };
        if let Some(code) = codes.get(value) {
            return *code;
        }
        let code = values.len() as State;
        values.push(Some(value.clone()));
        codes.insert(value.clone(), code);
        code
    };
    let calls: Vec<Call> = kept
        .iter()
        .map(|operation| Call {
            step: match &operation.op {
                Op::Write(value) => Step::Write(code_of(Some(value))),
                Op::Read(value) => Step::Read(code_of(value.as_ref())),
                Op::Delete(_) if operation.is_indeterminate() => Step::Delete(None),
                Op::Delete(existed) => Step::Delete(*existed),
            },
            invoked: operation.invoked,
            completed: operation.completed(),
        })
        .collect();
    let budget = Budget {
        max_steps,
        deadline,
    };
    let searched = search(&calls, ABSENT, budget);
    let owned = |index: &usize| (*kept[*index]).clone();
    let verdict = match searched.found {
        Found::Linearizable(_) => KeyVerdict::Linearizable,
        Found::Unknown { out_of_time } => KeyVerdict::Unknown {
            out_of_time,
            steps: searched.steps,
        },
        Found::NotLinearizable(stuck) => KeyVerdict::NotLinearizable(Box::new(Violation {
            key: key.clone(),
            prefix: stuck.prefix.iter().map(owned).collect(),
            state: values[stuck.state as usize].clone(),
            blocking: owned(&stuck.blocking),
            candidates: stuck.candidates.iter().map(owned).collect(),
            operations: kept.iter().map(|operation| (*operation).clone()).collect(),
        })),
    };
    let dropped_reads = operations
        .iter()
        .filter(|op| matches!(op.op, Op::Read(_)) && op.is_indeterminate())
        .count();
    KeyReport {
        key: key.clone(),
        operations: operations.len(),
        checked: kept.len(),
        indeterminate: kept.iter().filter(|op| op.is_indeterminate()).count(),
        dropped_reads,
        pruned_writes: operations.len() - kept.len() - dropped_reads,
        steps: searched.steps,
        elapsed: started.elapsed(),
        verdict,
    }
}

/// The operations the search needs: see [`check`] for what is left out and why.
fn relevant<'a, K, V: Eq + Hash>(operations: &[&'a Operation<K, V>]) -> Vec<&'a Operation<K, V>> {
    let read: std::collections::HashSet<&V> = operations
        .iter()
        .filter(|op| !op.is_indeterminate())
        .filter_map(|op| match &op.op {
            Op::Read(Some(value)) => Some(value),
            _ => None,
        })
        .collect();
    // Completion times of the deletes that reported a removal: a pruned write must not be
    // able to precede any of them.
    let removals: Vec<u64> = operations
        .iter()
        .filter_map(|op| match (&op.op, op.outcome) {
            (Op::Delete(Some(true)), Outcome::Completed(at)) => Some(at),
            _ => None,
        })
        .collect();
    operations
        .iter()
        .copied()
        .filter(|op| match &op.op {
            Op::Read(_) => !op.is_indeterminate(),
            Op::Write(value) => {
                !op.is_indeterminate()
                    || read.contains(value)
                    || removals.iter().any(|&at| at >= op.invoked)
            }
            Op::Delete(_) => true,
        })
        .collect()
}

/// A smaller history of one key that is still not linearizable, for a report. Operations are
/// taken out one at a time, each kept out if the rest still fails, in passes until none can go:
/// only those whose removal can never make a linearizable history fail, so what remains fails
/// for a reason the original history has too. They are reads; deletes that answered "not
/// found" (reads of absence); and writes whose value no remaining read returned and that no
/// remaining delete which reported a removal could follow (see [`check`]). Returns `operations`
/// unchanged when they are linearizable or the check is unknown.
pub fn minimise<K, V>(operations: &[Operation<K, V>], limits: Limits) -> Vec<Operation<K, V>>
where
    K: Ord + Clone,
    V: Eq + Hash + Clone,
{
    let fails = |candidate: &[Operation<K, V>]| {
        check(candidate, limits).is_ok_and(|report| !report.violations().is_empty())
    };
    let mut kept = operations.to_vec();
    if !fails(&kept) {
        return kept;
    }
    loop {
        let before = kept.len();
        let mut index = kept.len();
        while index > 0 {
            index -= 1;
            if removable(&kept, index) {
                let removed = kept.remove(index);
                if !fails(&kept) {
                    kept.insert(index, removed);
                }
            }
        }
        if kept.len() == before {
            return kept;
        }
    }
}

/// Whether taking `operations[index]` out can only admit more linearizations.
fn removable<K, V: Eq>(operations: &[Operation<K, V>], index: usize) -> bool {
    let operation = &operations[index];
    let definite = !operation.is_indeterminate();
    match &operation.op {
        Op::Read(_) => true,
        Op::Delete(Some(false)) => definite,
        Op::Delete(_) => false,
        Op::Write(value) => !operations.iter().any(|other| {
            let read = matches!(&other.op, Op::Read(Some(seen)) if seen == value);
            let removal = matches!(other.op, Op::Delete(Some(true)))
                && other.completed().is_some_and(|at| at >= operation.invoked);
            !other.is_indeterminate() && (read || removal)
        }),
    }
}
