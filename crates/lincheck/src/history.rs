//! The history model: what each client asked of which key, when, and what it was told.

use std::fmt;

/// A point on the recording's monotonic clock, in nanoseconds from any fixed origin. Only the
/// order of times matters to the checker (and their differences to its explanations).
pub type Time = u64;

/// An operation on one key's register, with its result when the answer was definite.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op<V> {
    /// Put the value in the register.
    Write(V),
    /// Read the register: what it returned (`None`: the key did not exist, a 404). The value
    /// means nothing when the outcome is [`Outcome::Indeterminate`].
    Read(Option<V>),
    /// Empty the register. With a definite outcome, whether the key existed (`Some(true)`: it was
    /// removed; `Some(false)`: the answer was "not found"); `None` when the answer does not say.
    Delete(Option<bool>),
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A definite answer, received at this time.
    Completed(Time),
    /// No definite answer (a timeout, a lost connection, a 5xx): a write or a delete may have
    /// taken effect at any point after its invocation, or never; a read constrains nothing and
    /// is dropped.
    Indeterminate,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation<K, V> {
    /// Who issued it (only for explanations: the checker orders operations by time alone).
    pub client: u64,
    pub key: K,
    pub op: Op<V>,
    /// When the request was sent.
    pub invoked: Time,
    pub outcome: Outcome,
}

impl<K, V> Operation<K, V> {
    /// The completion time of a definite outcome.
    pub fn completed(&self) -> Option<Time> {
        match self.outcome {
            Outcome::Completed(at) => Some(at),
            Outcome::Indeterminate => None,
        }
    }

    pub fn is_indeterminate(&self) -> bool {
        self.outcome == Outcome::Indeterminate
    }
}

/// A history the checker refuses to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The operation at this index of the history completed before it was invoked.
    CompletedBeforeInvoked { index: usize },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::CompletedBeforeInvoked { index } => {
                write!(f, "operation {index} completed before it was invoked")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

/// Milliseconds with microsecond precision, for explanations.
pub(crate) struct Millis(pub(crate) Time);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.0 / 1_000_000, self.0 / 1_000 % 1_000)
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for Operation<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {:?} ", self.client, self.key)?;
        let definite = !self.is_indeterminate();
        match &self.op {
            Op::Write(value) => write!(f, "write {value:?}")?,
            Op::Read(_) if !definite => write!(f, "read -> ?")?,
            Op::Read(Some(value)) => write!(f, "read -> {value:?}")?,
            Op::Read(None) => write!(f, "read -> absent")?,
            Op::Delete(Some(true)) if definite => write!(f, "delete -> removed")?,
            Op::Delete(Some(false)) if definite => write!(f, "delete -> not found")?,
            Op::Delete(_) => write!(f, "delete")?,
        }
        match self.outcome {
            Outcome::Completed(at) => write!(f, " [{}, {}]", Millis(self.invoked), Millis(at)),
            Outcome::Indeterminate => write!(f, " [{}, indeterminate)", Millis(self.invoked)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_read_as_what_happened() {
        let write = Operation {
            client: 2,
            key: "latest",
            op: Op::Write("a"),
            invoked: 1_500_000,
            outcome: Outcome::Completed(2_250_000),
        };
        assert_eq!(
            write.to_string(),
            r#"client 2 "latest" write "a" [1.500 ms, 2.250 ms]"#
        );
        let delete = Operation {
            op: Op::Delete(None),
            outcome: Outcome::Indeterminate,
            ..write.clone()
        };
        assert_eq!(
            delete.to_string(),
            r#"client 2 "latest" delete [1.500 ms, indeterminate)"#
        );
        let read = Operation {
            op: Op::Read(None),
            ..write
        };
        assert_eq!(
            read.to_string(),
            r#"client 2 "latest" read -> absent [1.500 ms, 2.250 ms]"#
        );
    }
}
