//! The client side of `wharf dev kill|restart`: ask the supervisor over its control socket, or
//! act on the recorded pid when no supervisor is running.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::process::{signal_pid, start_member};
use super::{io_error, ClusterFile, DevError, MemberArgs, MemberRecord, MemberState};

/// Longer than any restart takes (a member gets 60 s to become ready).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ControlRequest {
    pub op: String,
    pub member: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ControlAnswer {
    pub member: Option<MemberRecord>,
    pub error: Option<String>,
}

/// `wharf dev kill|restart`: through the supervisor when one is running, else by pid.
pub(super) async fn member_command(op: &str, args: MemberArgs) -> Result<(), DevError> {
    let mut file = ClusterFile::read(&args.dir)?;
    file.member_mut(&args.member)?;
    let record = match UnixStream::connect(&file.control).await {
        Ok(stream) => ask_supervisor(stream, op, &args.member).await?,
        Err(_) => act_without_supervisor(op, &args, file).await?,
    };
    let pid = record
        .pid
        .map(|pid| format!(", pid {pid}"))
        .unwrap_or_default();
    println!("{}: {:?}{pid}", record.name, record.state);
    Ok(())
}

async fn ask_supervisor(
    mut stream: UnixStream,
    op: &str,
    member: &str,
) -> Result<MemberRecord, DevError> {
    let request = ControlRequest {
        op: op.to_owned(),
        member: member.to_owned(),
    };
    let mut line =
        serde_json::to_string(&request).map_err(|error| DevError::Invalid(error.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(io_error("cannot talk to the supervisor"))?;
    let mut answer = String::new();
    tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| DevError::Timeout("the supervisor's answer".into()))?
        .map_err(io_error("cannot read the supervisor's answer"))?;
    let answer: ControlAnswer = serde_json::from_str(&answer)
        .map_err(|error| DevError::Supervisor(format!("unreadable answer: {error}")))?;
    match (answer.member, answer.error) {
        (Some(member), None) => Ok(member),
        (_, error) => Err(DevError::Supervisor(error.unwrap_or_default())),
    }
}

/// The supervisor is gone: SIGKILL by the recorded pid, and a restarted member is left running
/// on its own (nobody waits for it; stop it with `wharf dev kill`).
async fn act_without_supervisor(
    op: &str,
    args: &MemberArgs,
    mut file: ClusterFile,
) -> Result<MemberRecord, DevError> {
    let binary = file.binary.clone();
    let record = file.member_mut(&args.member)?;
    if let Some(pid) = record.pid.take() {
        // Best effort: the process may already be gone.
        let _ = signal_pid(pid, "KILL").await;
    }
    record.state = MemberState::Killed;
    if op == "restart" {
        let timeout = Duration::from_secs(60);
        start_member(&binary, record, &args.dir, timeout).await?;
    }
    let record = record.clone();
    file.write(&args.dir)?;
    Ok(record)
}
