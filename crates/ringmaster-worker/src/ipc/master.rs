//! The master's own services, asked over IPC: [`Ipc::status`],
//! [`Ipc::logs`], [`Ipc::workers`], and metric registrations.

use ringmaster_proto::{Answer, ClusterStatus, LogLines, Service, WorkerInfo, WorkerMsg};

use super::{Ipc, IpcError, MASTER_GRACE, Response};

impl Ipc {
    /// The cluster's status, from the master.
    pub async fn status(&self) -> Result<ClusterStatus, IpcError> {
        match self.call(Service::Status).await? {
            Answer::Status(status) => Ok(*status),
            _ => Err(IpcError::Confused),
        }
    }

    /// How many times the master said the cluster's status changed in a
    /// way probes must see at once ([`MasterMsg::StatusChanged`]): a
    /// status kept under an older value is stale.
    ///
    /// [`MasterMsg::StatusChanged`]: ringmaster_proto::MasterMsg::StatusChanged
    pub fn status_epoch(&self) -> u64 {
        self.inner
            .status_epoch
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lines of the master's log after sequence number `after` (0: from
    /// the oldest it keeps), at most `max` (and at most 1000), from the
    /// master's ring of recent lines (`server.log_ring`).
    pub async fn logs(&self, after: u64, max: u32) -> Result<LogLines, IpcError> {
        match self.call(Service::Logs { after, max }).await? {
            Answer::Logs(lines) => Ok(lines),
            _ => Err(IpcError::Confused),
        }
    }

    /// Every worker process of the cluster, from the master.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, IpcError> {
        match self.call(Service::Workers).await? {
            Answer::Workers(list) => Ok(list),
            _ => Err(IpcError::Confused),
        }
    }

    async fn call(&self, service: Service) -> Result<Answer, IpcError> {
        if self.inner.outbox.is_none() {
            return Err(IpcError::Detached("ask"));
        }
        let (id, rx) = self.wait_slot();
        let limit = MASTER_GRACE * 5;
        match self
            .exchange(id, WorkerMsg::Call { id, service }, rx, limit)
            .await?
        {
            Some(Response::Answer(answer)) => Ok(answer),
            Some(_) => Err(IpcError::Confused),
            None => Err(IpcError::MasterTimeout { waited: limit }),
        }
    }

    /// Registers a series with the master; its index in the segment.
    pub(crate) async fn register(
        &self,
        name: &str,
        help: &str,
        kind: ringmaster_proto::MetricKind,
        labels: Vec<(String, String)>,
        buckets: Vec<f64>,
    ) -> Result<u32, String> {
        if self.inner.outbox.is_none() {
            return Err(IpcError::Detached("register metrics with").to_string());
        }
        let (id, rx) = self.wait_slot();
        let msg = WorkerMsg::Register {
            id,
            name: name.to_string(),
            help: help.to_string(),
            kind,
            labels,
            buckets,
        };
        let limit = MASTER_GRACE * 5;
        match self.exchange(id, msg, rx, limit).await {
            Ok(Some(Response::Registered(result))) => result,
            Ok(Some(_)) => Err(IpcError::Confused.to_string()),
            Ok(None) => Err(IpcError::MasterTimeout { waited: limit }.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}
