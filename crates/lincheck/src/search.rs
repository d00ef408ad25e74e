//! The search over one key's operations: Wing and Gong's depth-first search for a linearization,
//! with Lowe's memoisation of (set of operations linearized, register state), as Porcupine
//! runs it.
//!
//! The operations' invocations and completions form one list sorted by time (an invocation
//! before a completion at the same instant, so operations that touch are concurrent). The search
//! walks it from the start: at an invocation it tries to linearize that operation next (the
//! register allows it, and that (set, state) pair was never explored) and, if so, removes the
//! operation's two entries from the list and starts again from the head; at a completion, the
//! operation completing could not be linearized before it completed along this path, so the
//! search undoes its last choice and tries the next candidate after it. Entries are unlinked and
//! relinked in place ("dancing links"), so each step is O(1) besides the memo.
//!
//! An indeterminate operation completes at infinity, after every definite one: reaching its
//! completion means every definite operation is linearized, which is success (the indeterminate
//! ones still pending never took effect).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::history::Time;

/// The register's state: [`ABSENT`] or the code of the value it holds.
pub(crate) type State = u32;

/// The state of a key that does not exist.
pub(crate) const ABSENT: State = 0;

/// One operation, its values encoded as states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Write(State),
    Read(State),
    Delete(Option<bool>),
}

impl Step {
    /// The state after this operation on `state`, or `None` if its result rules `state` out.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Write(value) => Some(value),
            Step::Read(value) => (state == value).then_some(state),
            Step::Delete(None) => Some(ABSENT),
            Step::Delete(Some(existed)) => ((state != ABSENT) == existed).then_some(ABSENT),
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) step: Step,
    pub(crate) invoked: Time,
    /// `None`: indeterminate.
    pub(crate) completed: Option<Time>,
}

/// Bounds on one key's search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) max_steps: u64,
    pub(crate) deadline: Instant,
}

/// Where the search got furthest before failing: the longest linearizable prefix found, the
/// register's state after it, and the operation that could not be linearized before it completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub(crate) prefix: Vec<usize>,
    pub(crate) state: State,
    pub(crate) blocking: usize,
    /// The operations still pending that were invoked before `blocking` completed.
    pub(crate) candidates: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// One linearization, as indices in order (indeterminate operations that never took effect
    /// are left out).
    Linearizable(Vec<usize>),
    NotLinearizable(Stuck),
    /// The budget ran out first: this many steps, or the deadline.
    Unknown {
        out_of_time: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Searched {
    pub(crate) found: Found,
    pub(crate) steps: u64,
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    call: usize,
    is_invocation: bool,
    prev: usize,
    next: usize,
}

/// The time-ordered list of invocations and completions, entry 0 being the head.
struct Timeline {
    entries: Vec<Entry>,
    /// Per operation, the index of its completion entry (its invocation's is `2 * call + 1`).
    completion: Vec<usize>,
}

impl Timeline {
    fn new(calls: &[Call]) -> Timeline {
        // (time, invocation first, operation), so the sort is total and stable across runs.
        let mut order: Vec<(Time, bool, usize)> = Vec::with_capacity(calls.len() * 2);
        for (index, call) in calls.iter().enumerate() {
            order.push((call.invoked, false, index));
            order.push((call.completed.unwrap_or(Time::MAX), true, index));
        }
        order.sort_unstable();
        let head = Entry {
            call: NIL,
            is_invocation: false,
            prev: NIL,
            next: NIL,
        };
        let mut entries = vec![head; calls.len() * 2 + 1];
        let mut completion = vec![NIL; calls.len()];
        let mut prev = HEAD;
        for (position, (_, is_completion, call)) in order.into_iter().enumerate() {
            let index = position + 1;
            entries[index] = Entry {
                call,
                is_invocation: !is_completion,
                prev,
                next: NIL,
            };
            entries[prev].next = index;
            if is_completion {
                completion[call] = index;
            }
            prev = index;
        }
        Timeline {
            entries,
            completion,
        }
    }

    fn unlink(&mut self, index: usize) {
        let Entry { prev, next, .. } = self.entries[index];
        self.entries[prev].next = next;
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    /// Undoes [`Timeline::unlink`]; relinks must come in the reverse order of the unlinks.
    fn relink(&mut self, index: usize) {
        let Entry { prev, next, .. } = self.entries[index];
        self.entries[prev].next = index;
        if next != NIL {
            self.entries[next].prev = index;
        }
    }

    /// Takes an operation out: its invocation entry and its completion.
    fn lift(&mut self, invocation: usize) {
        let completion = self.completion[self.entries[invocation].call];
        self.unlink(invocation);
        self.unlink(completion);
    }

    fn unlift(&mut self, invocation: usize) {
        let completion = self.completion[self.entries[invocation].call];
        self.relink(completion);
        self.relink(invocation);
    }

    /// The pending operations whose invocations come before entry `until`.
    fn invoked_before(&self, until: usize) -> Vec<usize> {
        let mut calls = Vec::new();
        let mut index = self.entries[HEAD].next;
        while index != until && index != NIL {
            let entry = self.entries[index];
            if entry.is_invocation {
                calls.push(entry.call);
            }
            index = entry.next;
        }
        calls
    }
}

/// The set of operations linearized so far.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Linearized(Box<[u64]>);

impl Linearized {
    fn new(len: usize) -> Linearized {
        Linearized(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn flip(&mut self, call: usize) {
        self.0[call / 64] ^= 1 << (call % 64);
    }
}

/// FxHash's multiply-rotate (the memo hashes whole bitsets, so SipHash would dominate a step).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

type Memo = HashSet<(Linearized, State), BuildHasherDefault<FxHasher>>;

/// How often the deadline is looked at, in steps (a power of two).
const CLOCK_EVERY: u64 = 4096;

/// Searches for a linearization of `calls` from `initial`, within `budget`.
pub(crate) fn search(calls: &[Call], initial: State, budget: Budget) -> Searched {
    let mut search = Search::new(calls, initial);
    let mut steps = 0u64;
    let mut entry = search.first();
    loop {
        if search.complete(entry) {
            let found = Found::Linearizable(search.order());
            return Searched { found, steps };
        }
        steps += 1;
        if steps > budget.max_steps {
            let found = Found::Unknown { out_of_time: false };
            return Searched { found, steps };
        }
        if steps & (CLOCK_EVERY - 1) == 0 && Instant::now() >= budget.deadline {
            let found = Found::Unknown { out_of_time: true };
            return Searched { found, steps };
        }
        let Entry {
            is_invocation,
            next,
            ..
        } = search.timeline.entries[entry];
        entry = if !is_invocation {
            // Its operation completes here without having been linearized along this path.
            search.note_stuck(entry);
            match search.backtrack() {
                Some(next) => next,
                None => {
                    let stuck = search.stuck.expect("noted just above");
                    let found = Found::NotLinearizable(stuck);
                    return Searched { found, steps };
                }
            }
        } else if search.linearize(entry) {
            search.first()
        } else {
            next
        };
    }
}

/// The search's state along the current path.
struct Search<'a> {
    calls: &'a [Call],
    timeline: Timeline,
    linearized: Linearized,
    memo: Memo,
    /// The invocation entries of the operations linearized, in order, and the state before each.
    stack: Vec<(usize, State)>,
    state: State,
    stuck: Option<Stuck>,
}

impl<'a> Search<'a> {
    fn new(calls: &'a [Call], initial: State) -> Search<'a> {
        Search {
            calls,
            timeline: Timeline::new(calls),
            linearized: Linearized::new(calls.len()),
            memo: Memo::default(),
            stack: Vec::new(),
            state: initial,
            stuck: None,
        }
    }

    fn first(&self) -> usize {
        self.timeline.entries[HEAD].next
    }

    /// Whether every definite operation is linearized: the walk from the head met the end, or
    /// the completion of an indeterminate operation (at infinity, after every definite one).
    fn complete(&self, entry: usize) -> bool {
        entry == NIL || {
            let entry = self.timeline.entries[entry];
            !entry.is_invocation && self.calls[entry.call].completed.is_none()
        }
    }

    fn order(&self) -> Vec<usize> {
        let entries = &self.timeline.entries;
        self.stack.iter().map(|(at, _)| entries[*at].call).collect()
    }

    /// Linearizes the operation invoked at `entry` next, if the register allows it and that
    /// (set, state) pair is new.
    fn linearize(&mut self, entry: usize) -> bool {
        let call = self.timeline.entries[entry].call;
        let Some(after) = self.calls[call].step.apply(self.state) else {
            return false;
        };
        self.linearized.flip(call);
        if !self.memo.insert((self.linearized.clone(), after)) {
            self.linearized.flip(call);
            return false;
        }
        self.stack.push((entry, self.state));
        self.state = after;
        self.timeline.lift(entry);
        true
    }

    /// Undoes the last linearization; returns the entry to go on from (after its invocation),
    /// or `None` when there is none to undo.
    fn backtrack(&mut self) -> Option<usize> {
        let (invocation, before) = self.stack.pop()?;
        self.timeline.unlift(invocation);
        self.linearized.flip(self.timeline.entries[invocation].call);
        self.state = before;
        Some(self.timeline.entries[invocation].next)
    }

    /// Keeps the deepest point the search got stuck at, for the explanation.
    fn note_stuck(&mut self, completion: usize) {
        if self
            .stuck
            .as_ref()
            .is_some_and(|stuck| stuck.prefix.len() >= self.stack.len())
        {
            return;
        }
        self.stuck = Some(Stuck {
            prefix: self.order(),
            state: self.state,
            blocking: self.timeline.entries[completion].call,
            candidates: self.timeline.invoked_before(completion),
        });
    }
}
