//! The client side of the Raft transport: [`GrpcNetwork`] makes [`GrpcRaftClient`]s over one
//! lazily connected tonic channel per target address ([`Peers`]), shared by every client of that
//! target and by the read-index calls a follower makes to the leader.
//! openraft asks for a new client for each leadership check (every linearizable read batch), so a
//! channel per client would cost a TCP and HTTP/2 handshake per read: about 40 ms here.
//! A follower's read-index checks go over one `ReadIndexStream` it keeps open to the leader
//! (a message each way per check), not a unary call each: on the leader a unary call is an HTTP/2
//! stream, a task and five frames, and every read batch of every follower pays one.
//!
//! Transport failures become `Unreachable` (openraft backs off and retries), deadlines become
//! `Timeout`, and errors the remote Raft returned become `RemoteError`. A target blocked in
//! [`NetworkFaults`] is `Unreachable` without a packet sent.

// openraft's `RaftNetwork` fixes the (large) `RPCError` type; the helpers here return it as is.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_api::MetaError;
use meta_store::TypeConfig;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::Code;
use wharf_proto::pb::raft_client::RaftClient;
use wharf_proto::pb::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use wharf_proto::status::status_to_meta_error;

use crate::faults::NetworkFaults;
use crate::service::{decode, encode, RAFT_MESSAGE_LIMIT};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

/// This node's links to the other meta members: one channel per address (a member that moves
/// gets a new one), and the fault injection every Raft call passes.
#[derive(Clone)]
pub(crate) struct Peers {
    node_id: u64,
    connect_timeout: Duration,
    faults: Arc<NetworkFaults>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// How this node asks the leader for read indexes; one check at a time (the follower's
    /// `ReadBarrier` runs them back to back).
    read_link: Arc<tokio::sync::Mutex<Option<ReadLink>>>,
}

/// A follower's way to the leader's read index at `addr`.
enum ReadLink {
    /// An open `ReadIndexStream`: a request into `requests`, its answer next on `replies`.
    Stream {
        addr: String,
        requests: tokio::sync::mpsc::Sender<ReadIndexRequest>,
        replies: Box<tonic::Streaming<ReadIndexResponse>>,
    },
    /// The leader predates `ReadIndexStream`: a unary `ReadIndex` per check.
    Unary { addr: String },
}

impl ReadLink {
    fn addr(&self) -> &str {
        match self {
            ReadLink::Stream { addr, .. } | ReadLink::Unary { addr } => addr,
        }
    }
}

impl Peers {
    pub(crate) fn new(
        node_id: u64,
        connect_timeout: Duration,
        faults: Arc<NetworkFaults>,
    ) -> Peers {
        Peers {
            node_id,
            connect_timeout,
            faults,
            channels: Arc::new(Mutex::new(HashMap::new())),
            read_link: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The shared channel to `addr`, created (unconnected) on first use; over mTLS when the
    /// process installed cluster TLS (`cluster_client::set_cluster_tls`).
    fn channel(&self, addr: &str) -> Result<Channel, cluster_client::ChannelError> {
        let mut channels = self.channels.lock().expect("raft channel cache lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = cluster_client::cluster_endpoint(addr)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, cluster_client::ChannelError> {
        self.channel(addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(RAFT_MESSAGE_LIMIT)
                .max_encoding_message_size(RAFT_MESSAGE_LIMIT)
        })
    }

    /// Asks `leader` at `addr` for the index this node must apply before it answers a read
    /// (the leader confirms its leadership first). Every failure is `Unavailable`, with the
    /// leader the asked node names when it names one, so the reader's client goes elsewhere.
    pub(crate) async fn read_index(
        &self,
        leader: u64,
        addr: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, MetaError> {
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::debug!(%error, leader, "read index refused");
            MetaError::Unavailable { leader: None }
        };
        if let Err(blocked) = self.faults.check(leader) {
            return Err(unavailable(&blocked));
        }
        let mut link = self.read_link.lock().await;
        if link.as_ref().is_some_and(|link| link.addr() != addr) {
            *link = None;
        }
        match tokio::time::timeout(timeout, self.ask_read_index(&mut link, addr, timeout)).await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(status)) => {
                *link = None;
                match status_to_meta_error(&status) {
                    MetaError::Unavailable { leader } => Err(MetaError::Unavailable { leader }),
                    error => Err(unavailable(&error)),
                }
            }
            Err(_) => {
                // The answer may still come on the stream: it is not used again.
                *link = None;
                Err(unavailable(&"no answer in time"))
            }
        }
    }

    /// One read index from the leader at `addr` over `link`: on the open stream (a new one when
    /// there is none, or when the leader ended the last at the end of its lifetime), or unary to
    /// a leader without streams.
    async fn ask_read_index(
        &self,
        link: &mut Option<ReadLink>,
        addr: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, tonic::Status> {
        let request = ReadIndexRequest { from: self.node_id };
        let unknown = |error: &dyn std::fmt::Display| tonic::Status::unavailable(error.to_string());
        // A stream found ended is replaced once: the leader ends each after its lifetime.
        for _ in 0..2 {
            let current = match link {
                Some(current) => current,
                None => link.insert(self.open_read_link(addr).await?),
            };
            match current {
                ReadLink::Stream {
                    requests, replies, ..
                } => {
                    if requests.send(request).await.is_ok() {
                        if let Some(reply) = replies.message().await? {
                            return Ok(reply.index);
                        }
                    }
                    *link = None;
                }
                ReadLink::Unary { .. } => {
                    let mut client = self.client(addr).map_err(|error| unknown(&error))?;
                    let mut request = tonic::Request::new(request);
                    request.set_timeout(timeout);
                    return Ok(client.read_index(request).await?.into_inner().index);
                }
            }
        }
        Err(unknown(&"the leader ended two read-index streams in a row"))
    }

    /// Opens a `ReadIndexStream` to `addr`; a leader that does not know the call gets unary
    /// calls instead.
    async fn open_read_link(&self, addr: &str) -> Result<ReadLink, tonic::Status> {
        let mut client = self
            .client(addr)
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let (requests, pending) = tokio::sync::mpsc::channel(1);
        match client
            .read_index_stream(tokio_stream::wrappers::ReceiverStream::new(pending))
            .await
        {
            Ok(replies) => Ok(ReadLink::Stream {
                addr: addr.to_owned(),
                requests,
                replies: Box::new(replies.into_inner()),
            }),
            Err(status) if status.code() == Code::Unimplemented => Ok(ReadLink::Unary {
                addr: addr.to_owned(),
            }),
            Err(status) => Err(status),
        }
    }
}

/// Builds Raft clients for the members of the cluster.
pub struct GrpcNetwork {
    peers: Peers,
}

impl GrpcNetwork {
    pub(crate) fn new(peers: Peers) -> GrpcNetwork {
        GrpcNetwork { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcRaftClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GrpcRaftClient {
        GrpcRaftClient {
            node_id: self.peers.node_id,
            target,
            node: node.clone(),
            client: self
                .peers
                .client(&node.addr)
                .map_err(|error| error.to_string()),
            faults: self.peers.faults.clone(),
        }
    }
}

/// Sends Raft RPCs to one voter.
pub struct GrpcRaftClient {
    node_id: u64,
    target: u64,
    node: BasicNode,
    /// The client, or why the target's address is unusable.
    client: Result<RaftClient<Channel>, String>,
    faults: Arc<NetworkFaults>,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    InstallSnapshot,
    Vote,
}

impl Rpc {
    fn kind(self) -> RPCTypes {
        match self {
            Rpc::AppendEntries => RPCTypes::AppendEntries,
            Rpc::InstallSnapshot => RPCTypes::InstallSnapshot,
            Rpc::Vote => RPCTypes::Vote,
        }
    }
}

fn network_error<T, E: Error>(error: &(impl Error + 'static)) -> RpcResult<T, E> {
    Err(RPCError::Network(NetworkError::new(error)))
}

impl GrpcRaftClient {
    /// The channel connects on first use and reconnects by itself afterwards.
    fn client<E: Error>(&mut self) -> RpcResult<RaftClient<Channel>, E> {
        self.client.clone().map_err(|reason| {
            let error = std::io::Error::new(std::io::ErrorKind::InvalidInput, reason);
            RPCError::Unreachable(Unreachable::new(&error))
        })
    }

    fn status_error<T, E: Error>(
        &self,
        rpc: Rpc,
        status: tonic::Status,
        option: &RPCOption,
    ) -> RpcResult<T, E> {
        match status.code() {
            Code::DeadlineExceeded => Err(RPCError::Timeout(Timeout {
                action: rpc.kind(),
                id: self.node_id,
                target: self.target,
                timeout: option.hard_ttl(),
            })),
            Code::Unavailable | Code::Unknown | Code::Cancelled => {
                Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            _ => network_error(&status),
        }
    }

    async fn send<Resp, E>(
        &mut self,
        rpc: Rpc,
        payload: RaftPayload,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        if let Err(blocked) = self.faults.check(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&blocked)));
        }
        let mut client = self.client()?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(option.hard_ttl());
        let sent = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
            Rpc::Vote => client.vote(request).await,
        };
        let response = match sent {
            Ok(response) => response,
            Err(status) => return self.status_error(rpc, status, option),
        };
        let result: Result<Resp, RaftError<u64, E>> = match decode(response.get_ref()) {
            Ok(result) => result,
            Err(error) => return network_error(&error),
        };
        result.map_err(|error| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                error,
            ))
        })
    }

    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        match encode(request) {
            Ok(payload) => self.send(rpc, payload, option).await,
            Err(error) => network_error(&error),
        }
    }
}

impl RaftNetwork<TypeConfig> for GrpcRaftClient {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let payload = match encode(&request) {
            Ok(payload) => payload,
            Err(error) => return network_error(&error),
        };
        let entries = request.entries.len() as u64;
        if payload.data.len() > RAFT_MESSAGE_LIMIT && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        self.send(Rpc::AppendEntries, payload, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.call(Rpc::Vote, &request, &option).await
    }
}
