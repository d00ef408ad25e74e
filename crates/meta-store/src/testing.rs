//! Helpers for the crate's unit tests: names, digests, and commands applied to a database the
//! way the state machine applies them.

use cluster_api::BlobInfo;
use oci_model::{Digest, RepositoryName};

use crate::apply::apply_command;
use crate::command::{Command, CommandResponse};
use crate::db::Database;
use crate::kv::Txn;

pub(crate) const T0_MS: u64 = 1_700_000_000_000;

pub(crate) fn repo(name: &str) -> RepositoryName {
    name.parse().expect("repository name")
}

pub(crate) fn digest(content: &str) -> Digest {
    Digest::sha256_of(content.as_bytes())
}

/// A commit of `content` into `repo_name`, on node 1, with no upload session.
pub(crate) fn commit(repo_name: &str, content: &str) -> Command {
    Command::CommitBlob {
        repo: repo(repo_name),
        blob: BlobInfo {
            digest: digest(content),
            size: content.len() as u64,
            replicas: vec![1],
            placement: Vec::new(),
        },
        upload: None,
        now_ms: T0_MS,
    }
}

/// Applies one command as its own batch.
pub(crate) fn apply(db: &Database, command: Command) -> CommandResponse {
    let mut txn = Txn::new(db);
    let response = apply_command(&mut txn, command).expect("apply");
    db.write(txn.into_batch().expect("batch")).expect("write");
    response
}
