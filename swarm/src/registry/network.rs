//! The registry's messages on the swarm's QUIC connections: openraft's three RPCs and the
//! proposals followers forward to the leader, each one request and one answer, postcard on
//! both legs.

use std::sync::{Arc, Weak};

use openraft::AnyError;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{RaftId, Seat, TypeConfig};
use crate::error::SwarmError;
use crate::member::Member;
use crate::runtime::Inner;
use crate::wire::{RegistryRpc, Request, Response};

/// Sends one registry message to the member with raft id `target` (found by id in the
/// membership view, so a restarted node's new address is used; else the address it had when
/// it joined the group) and returns the answer's bytes.
pub(crate) async fn exchange(
    inner: &Arc<Inner>,
    target: RaftId,
    seat: &Seat,
    rpc: RegistryRpc,
    body: Vec<u8>,
) -> Result<Vec<u8>, SwarmError> {
    let member = inner.member_by_raft_id(target).or_else(|| {
        seat.addr.parse().ok().map(|addr| Member {
            id: store::NodeId([0; 16]),
            addr,
            http: None,
            storage: true,
            incarnation: 0,
        })
    });
    let Some(member) = member else {
        return Err(SwarmError::Unreachable(format!(
            "registry member {target:016x} has no known address"
        )));
    };
    match inner
        .call(&member, &Request::Registry { rpc, body })
        .await?
        .0
    {
        Response::Registry(b) => Ok(b),
        Response::Error(e) => Err(SwarmError::Protocol(e)),
        other => Err(SwarmError::Protocol(format!("unexpected answer {other:?}"))),
    }
}

pub(crate) struct Network {
    pub inner: Weak<Inner>,
}

pub(crate) struct Connection {
    inner: Weak<Inner>,
    target: RaftId,
    seat: Seat,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, node: &Seat) -> Connection {
        Connection {
            inner: self.inner.clone(),
            target,
            seat: node.clone(),
        }
    }
}

impl Connection {
    async fn call<Q: Serialize, P: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        rpc: RegistryRpc,
        req: &Q,
    ) -> Result<P, RPCError<RaftId, Seat, E>> {
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| Unreachable::from(AnyError::error("this node is stopping")))?;
        let body = postcard::to_allocvec(req).map_err(|e| NetworkError::new(&e))?;
        let answer = exchange(&inner, self.target, &self.seat, rpc, body)
            .await
            .map_err(|e| Unreachable::new(&e))?;
        let r: Result<P, E> = postcard::from_bytes(&answer).map_err(|e| NetworkError::new(&e))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Seat, RaftError<RaftId>>> {
        self.call(RegistryRpc::AppendEntries, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Seat, RaftError<RaftId, InstallSnapshotError>>,
    > {
        self.call(RegistryRpc::InstallSnapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Seat, RaftError<RaftId>>> {
        self.call(RegistryRpc::Vote, &rpc).await
    }
}
