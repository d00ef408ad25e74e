//! Properties: a history recorded from a sequential execution, with intervals stretched around
//! each operation's moment of effect, is always accepted; a read corrupted to a value never
//! written is always rejected; and on small histories the checker agrees with a brute-force
//! search over every order the intervals allow.

use lincheck::{check, Limits, Op, Operation, Outcome, Verdict};
use proptest::prelude::*;

type Event = Operation<u8, u32>;

/// One generated operation before execution: a key, a kind, how far its interval reaches either
/// side of its moment of effect, and whether its answer is lost (with the effect applied or not).
#[derive(Clone, Debug)]
struct Plan {
    key: u8,
    kind: u8,
    before: u64,
    after: u64,
    lost: bool,
    applied: bool,
    say_existed: bool,
}

fn plan(keys: u8) -> impl Strategy<Value = Plan> {
    (
        0..keys,
        0u8..10,
        0u64..60,
        0u64..60,
        prop::bool::weighted(0.1),
        any::<bool>(),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(key, kind, before, after, lost, applied, say_existed)| Plan {
                key,
                kind,
                before,
                after,
                lost,
                applied,
                say_existed,
            },
        )
}

/// Runs the plans in order against one register per key, operation `i` taking effect at time
/// `10 * i + 100`, and records what a client would have seen.
fn execute(plans: &[Plan]) -> Vec<Event> {
    let mut registers: std::collections::HashMap<u8, Option<u32>> = Default::default();
    let mut history = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        let moment = 10 * index as u64 + 100;
        let register = registers.entry(plan.key).or_default();
        let effect = !plan.lost || plan.applied;
        let op = match plan.kind {
            0..=3 => {
                let value = index as u32 + 1;
                if effect {
                    *register = Some(value);
                }
                Op::Write(value)
            }
            4..=7 => Op::Read(if plan.lost { Some(u32::MAX) } else { *register }),
            _ => {
                let existed = register.is_some();
                if effect {
                    *register = None;
                }
                Op::Delete(plan.say_existed.then_some(existed))
            }
        };
        history.push(Operation {
            client: index as u64 % 5,
            key: plan.key,
            op,
            invoked: moment - plan.before,
            outcome: if plan.lost {
                Outcome::Indeterminate
            } else {
                Outcome::Completed(moment + plan.after)
            },
        });
    }
    history
}

fn verdict(history: &[Event]) -> Verdict {
    check(history, Limits::default())
        .expect("a valid history")
        .verdict()
}

/// Whether some order of `history` (one key) that respects its real-time order, with every
/// definite operation in it and any indeterminate one in it or not, is a legal register run.
fn brute_force(history: &[Event]) -> bool {
    let events: Vec<&Event> = history
        .iter()
        .filter(|event| !(matches!(event.op, Op::Read(_)) && event.is_indeterminate()))
        .collect();
    fn search(events: &[&Event], remaining: u32, state: Option<u32>) -> bool {
        if (0..events.len()).all(|i| remaining & (1 << i) == 0 || events[i].is_indeterminate()) {
            return true;
        }
        for i in (0..events.len()).filter(|i| remaining & (1 << i) != 0) {
            let forced_before = (0..events.len()).any(|j| {
                j != i
                    && remaining & (1 << j) != 0
                    && events[j]
                        .completed()
                        .is_some_and(|at| at < events[i].invoked)
            });
            if forced_before {
                continue;
            }
            let definite = !events[i].is_indeterminate();
            let next = match &events[i].op {
                Op::Write(value) => Some(Some(*value)),
                Op::Read(value) => (*value == state).then_some(state),
                Op::Delete(Some(existed)) if definite => {
                    (state.is_some() == *existed).then_some(None)
                }
                Op::Delete(_) => Some(None),
            };
            if let Some(next) = next {
                if search(events, remaining & !(1 << i), next) {
                    return true;
                }
            }
        }
        false
    }
    search(&events, (1u32 << events.len()) - 1, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn histories_of_a_sequential_execution_are_accepted(plans in prop::collection::vec(plan(3), 1..250)) {
        let history = execute(&plans);
        let report = check(&history, Limits::default()).expect("a valid history");
        prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{}", report);
    }

    #[test]
    fn a_read_corrupted_to_a_value_never_written_is_rejected(
        plans in prop::collection::vec(plan(3), 1..250),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut history = execute(&plans);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].op, Op::Read(_)) && !history[i].is_indeterminate())
            .collect();
        prop_assume!(!reads.is_empty());
        let corrupted = reads[pick.index(reads.len())];
        history[corrupted].op = Op::Read(Some(u32::MAX - 1));
        let report = check(&history, Limits::default()).expect("a valid history");
        prop_assert_eq!(report.verdict(), Verdict::NotLinearizable);
        let violation = report.violations()[0];
        prop_assert_eq!(violation.key, history[corrupted].key);
    }

    #[test]
    fn on_small_histories_a_corrupted_read_is_rejected_exactly_when_brute_force_rejects_it(
        plans in prop::collection::vec(plan(1), 1..9),
        pick in any::<prop::sample::Index>(),
        value in 0u32..10,
    ) {
        let mut history = execute(&plans);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].op, Op::Read(_)))
            .collect();
        if !reads.is_empty() {
            let corrupted = reads[pick.index(reads.len())];
            history[corrupted].op = Op::Read((value > 0).then_some(value));
        }
        prop_assert_eq!(
            verdict(&history) == Verdict::Linearizable,
            brute_force(&history),
            "{:#?}",
            history
        );
    }

    #[test]
    fn on_small_random_histories_the_checker_agrees_with_brute_force(
        events in prop::collection::vec(
            (0u8..3, 0u32..4, 0u64..40, 0u64..20, prop::bool::weighted(0.15), any::<bool>()),
            1..9,
        ),
    ) {
        let history: Vec<Event> = events
            .iter()
            .enumerate()
            .map(|(index, &(kind, value, invoked, length, lost, existed))| Operation {
                client: index as u64,
                key: 0,
                op: match kind {
                    0 => Op::Write(value + 1),
                    1 => Op::Read((value > 0).then_some(value)),
                    _ => Op::Delete(Some(existed)),
                },
                invoked,
                outcome: if lost {
                    Outcome::Indeterminate
                } else {
                    Outcome::Completed(invoked + length)
                },
            })
            .collect();
        prop_assert_eq!(
            verdict(&history) == Verdict::Linearizable,
            brute_force(&history),
            "{:#?}",
            history
        );
    }
}
