//! A linearizability checker for histories of registers, one per key: each operation writes a
//! value, reads the value (or its absence) or deletes it, and each has an invocation time and
//! either a definite answer with its completion time or an indeterminate outcome. Wharf's tags
//! are such registers (`PUT`, `GET` and `DELETE` of a manifest by tag); `tests/linearizability.rs`
//! records histories against a cluster under faults and checks them here.
//!
//! [`check`] splits the history by key (linearizability is compositional, so each key is checked
//! alone) and searches each key's operations depth-first for a linearization, Wing and Gong's
//! algorithm with Lowe's memo of (operations linearized, register state), as Porcupine does it
//! (`search`). An indeterminate write or delete may take effect at any point after its
//! invocation, or never; an indeterminate read is dropped. The search is bounded ([`Limits`]):
//! past the bound a key's verdict is [`KeyVerdict::Unknown`], never a hang. A violation comes
//! with an explanation ([`Violation`]: the longest linearizable prefix found, the register after
//! it, the operation that cannot follow it), and [`minimise`] shrinks a failing key's history.
//!
//! Pure: no I/O, no clock besides the search's deadline, and no dependency on any other crate.

mod check;
mod history;
mod report;
mod search;

pub use check::{check, minimise, Limits};
pub use history::{HistoryError, Op, Operation, Outcome, Time};
pub use report::{KeyReport, KeyVerdict, Report, Verdict, Violation};
