//! The client fleet as the engine sees it: who registered, who is connected and alive,
//! which run may use which client (eligibility), and which clients are leased to which
//! run's tasks. Owned by the engine task alone; run actors get [`Lease`]s, never the fleet.

use super::TaskAssignment;
use super::scheduler::ClientSlot;
use crate::ids::{ClientId, RegionId, RunId, TaskId};
use crate::plan::{RegionSet, RunPlan};
use crate::store::ClientRecord;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A client leased to one run for one task: everything the run needs to hand it the task.
#[derive(Debug, Clone)]
pub struct Lease {
    pub task: TaskId,
    pub client: ClientId,
    pub region: RegionId,
    /// Samples the client registered: the most it may claim as a FedAvg weight.
    pub registered_samples: u64,
    /// Clients behind the participant: 1 for a client, a region's inventory for a regional
    /// aggregator (the most contributors its aggregate may claim).
    pub members: u32,
    tasks: Option<mpsc::Sender<Box<TaskAssignment>>>,
}

impl Lease {
    /// Puts `assignment` (whose task id must be this lease's) on the client's task stream.
    /// False when the stream is gone or full: the client counts as dropped.
    pub fn deliver(&self, assignment: TaskAssignment) -> bool {
        debug_assert_eq!(assignment.task, self.task);
        self.tasks.as_ref().is_some_and(|tx| tx.try_send(Box::new(assignment)).is_ok())
    }
}

/// A client's task stream. Its items are boxed because tokio allocates a channel's first
/// block of 32 slots when the channel is made: an idle sidecar's subscription then costs
/// 32 pointers instead of 32 assignments (about 12 KiB, at 10,000 sidecars 120 MiB).
pub type TaskReceiver = mpsc::Receiver<Box<TaskAssignment>>;

/// Which clients can serve a run: its regions, those whose raw updates the policy in force
/// lets this coordinator aggregate, and datasets that fit its model.
#[derive(Debug, Clone)]
pub struct Eligibility {
    regions: RegionSet,
    /// With a policy in force, the regions whose raw updates may be aggregated here.
    residency: Option<std::collections::BTreeSet<RegionId>>,
    input_dim: usize,
    classes: usize,
}

impl Eligibility {
    pub fn for_plan(plan: &RunPlan, policy: Option<crate::governance::Snapshot>) -> Self {
        let arch = plan.model.architecture();
        Self {
            regions: plan.regions.clone(),
            residency: policy.map(|p| p.selectable_regions()),
            input_dim: arch.input_dim(),
            classes: arch.classes(),
        }
    }

    /// Whether the client's region is allowed (by the plan and by the policy's residency
    /// rules for this location) and one of its datasets can feed the model (unknown shapes,
    /// reported as 0, are allowed).
    pub fn admits(&self, client: &ClientRecord) -> bool {
        self.regions.allows(&client.region)
            && self.residency.as_ref().is_none_or(|allowed| allowed.contains(&client.region))
            && client.samples() > 0
            && client.datasets.iter().any(|d| {
                (d.features == 0 || d.features as usize == self.input_dim)
                    && (d.classes == 0 || d.classes as usize <= self.classes)
            })
    }
}

#[derive(Debug)]
struct ConnectedClient {
    record: ClientRecord,
    tasks: Option<mpsc::Sender<Box<TaskAssignment>>>,
    last_seen: Instant,
    /// Tasks to tell the client to abandon at its next heartbeat.
    cancelled: Vec<TaskId>,
    /// The registering process's session (empty: not stated).
    session: String,
}

impl ConnectedClient {
    fn online(&self, now: Instant, timeout: Duration) -> bool {
        self.tasks.as_ref().is_some_and(|t| !t.is_closed()) && now.duration_since(self.last_seen) <= timeout
    }
}

#[derive(Debug)]
struct LeaseEntry {
    run: RunId,
    client: ClientId,
    /// The run was told the client went away.
    gone_reported: bool,
    /// The client's process restarted: it no longer holds the task, whatever its liveness.
    lost: bool,
}

/// Registered clients and their leases.
#[derive(Debug)]
pub struct Fleet {
    clients: HashMap<ClientId, ConnectedClient>,
    leases: HashMap<TaskId, LeaseEntry>,
    timeout: Duration,
    /// Participants are regional aggregators (global tier): a leased one is gone only when
    /// silent for `timeout`, not as soon as its task stream closes, so that a restarted
    /// aggregator that subscribes again in time still delivers its region's aggregate.
    patient: bool,
}

impl Fleet {
    /// A fleet that remembers `known` clients as offline until they subscribe again.
    pub fn new(known: Vec<ClientRecord>, timeout: Duration, patient: bool) -> Self {
        let now = Instant::now();
        let clients = known
            .into_iter()
            .map(|record| {
                (
                    record.id.clone(),
                    ConnectedClient {
                        record,
                        tasks: None,
                        last_seen: now,
                        cancelled: Vec::new(),
                        session: String::new(),
                    },
                )
            })
            .collect();
        Self { clients, leases: HashMap::new(), timeout, patient }
    }

    /// Clients subscribed to their task stream now, and tasks leased out now (gauges).
    pub fn counts(&self) -> (usize, usize) {
        (self.clients.values().filter(|c| c.tasks.is_some()).count(), self.leases.len())
    }

    ///
    /// A registration under a new `session` (a restarted process) loses the tasks leased to
    /// its predecessor: [`Fleet::newly_gone`] reports them at once instead of after the
    /// round's deadline. A reconnection (the same session) keeps them.
    pub fn register(&mut self, record: ClientRecord, session: &str) {
        let now = Instant::now();
        let id = record.id.clone();
        let mut restarted = false;
        self.clients
            .entry(id.clone())
            .and_modify(|c| {
                restarted = !session.is_empty() && !c.session.is_empty() && c.session != session;
                c.record = record.clone();
                c.last_seen = now;
                c.session = session.to_string();
            })
            .or_insert(ConnectedClient {
                record,
                tasks: None,
                last_seen: now,
                cancelled: Vec::new(),
                session: session.to_string(),
            });
        if restarted {
            for l in self.leases.values_mut().filter(|l| l.client == id) {
                l.lost = true;
            }
        }
    }

    /// Opens the client's task stream (replacing an older one).
    ///
    /// # Errors
    /// The client id when it never registered.
    pub fn subscribe(&mut self, client: &ClientId) -> Result<TaskReceiver, ClientId> {
        let c = self.clients.get_mut(client).ok_or_else(|| client.clone())?;
        let (tx, rx) = mpsc::channel(8);
        c.tasks = Some(tx);
        c.last_seen = Instant::now();
        Ok(rx)
    }

    /// Records a heartbeat; returns the tasks the client should abandon.
    ///
    /// # Errors
    /// The client id when it never registered.
    pub fn heartbeat(&mut self, client: &ClientId) -> Result<Vec<TaskId>, ClientId> {
        let c = self.clients.get_mut(client).ok_or_else(|| client.clone())?;
        c.last_seen = Instant::now();
        Ok(std::mem::take(&mut c.cancelled))
    }

    /// Regions of every registered client.
    pub fn regions(&self) -> Vec<RegionId> {
        let mut r: Vec<RegionId> = self.clients.values().map(|c| c.record.region.clone()).collect();
        r.sort();
        r.dedup();
        r
    }

    /// Participants online now and the clients and samples behind them.
    pub fn inventory(&self) -> crate::hierarchy::Inventory {
        let now = Instant::now();
        let online = self.clients.values().filter(|c| c.online(now, self.timeout));
        online.fold(crate::hierarchy::Inventory::default(), |acc, c| crate::hierarchy::Inventory {
            clients: acc.clients + c.record.members.max(1),
            samples: acc.samples + c.record.samples(),
        })
    }

    /// Every online client `eligibility` admits, sorted by id. (The scheduler serves and
    /// counts only online clients; leaving the offline ones out here keeps a scheduler pass
    /// proportional to the clients online, not to every client ever registered.)
    pub fn eligible(&self, eligibility: &Eligibility) -> Vec<ClientId> {
        let now = Instant::now();
        let mut ids: Vec<ClientId> = self
            .clients
            .values()
            .filter(|c| c.online(now, self.timeout) && eligibility.admits(&c.record))
            .map(|c| c.record.id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The scheduler's view of the fleet now: the online clients and their leases.
    pub fn slots(&self) -> Vec<ClientSlot> {
        let now = Instant::now();
        let mut busy: HashMap<&ClientId, u32> = HashMap::new();
        for l in self.leases.values() {
            *busy.entry(&l.client).or_default() += 1;
        }
        self.clients
            .values()
            .filter(|c| c.online(now, self.timeout))
            .map(|c| ClientSlot {
                id: c.record.id.clone(),
                online: true,
                busy: busy.get(&c.record.id).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Leases `client` to `run` under a fresh task id.
    pub fn lease(&mut self, run: &RunId, client: &ClientId) -> Option<Lease> {
        let c = self.clients.get(client)?;
        let task = TaskId::generate();
        self.leases.insert(
            task.clone(),
            LeaseEntry { run: run.clone(), client: client.clone(), gone_reported: false, lost: false },
        );
        Some(Lease {
            task,
            client: client.clone(),
            region: c.record.region.clone(),
            registered_samples: c.record.samples(),
            members: c.record.members,
            tasks: c.tasks.clone(),
        })
    }

    /// Ends leases; with `abandon`, the clients are also told to drop the tasks.
    pub fn release(&mut self, tasks: &[TaskId], abandon: bool) {
        for task in tasks {
            if let Some(l) = self.leases.remove(task)
                && abandon
                && let Some(c) = self.clients.get_mut(&l.client)
            {
                c.cancelled.push(task.clone());
            }
        }
    }

    /// Ends every lease of `run` (it ended), telling the clients to drop the tasks.
    pub fn release_run(&mut self, run: &RunId) {
        let tasks: Vec<TaskId> = self.leases.iter().filter(|(_, l)| &l.run == run).map(|(t, _)| t.clone()).collect();
        self.release(&tasks, true);
    }

    /// Leased tasks whose client went away since the last call, by run.
    pub fn newly_gone(&mut self) -> HashMap<RunId, Vec<TaskId>> {
        let now = Instant::now();
        let mut gone: HashMap<RunId, Vec<TaskId>> = HashMap::new();
        let alive = |c: &ConnectedClient| {
            if self.patient { now.duration_since(c.last_seen) <= self.timeout } else { c.online(now, self.timeout) }
        };
        for (task, l) in &mut self.leases {
            if !l.gone_reported && (l.lost || !self.clients.get(&l.client).is_some_and(alive)) {
                l.gone_reported = true;
                gone.entry(l.run.clone()).or_default().push(task.clone());
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ClientRecord, DatasetDescriptor};

    fn record(id: &str) -> ClientRecord {
        ClientRecord {
            id: ClientId::new(id).unwrap(),
            region: RegionId::new("eu").unwrap(),
            datasets: vec![DatasetDescriptor { name: "d".into(), samples: 10, features: 0, classes: 0 }],
            devices: vec![],
            registered_at: chrono::Utc::now(),
            members: 1,
        }
    }

    #[test]
    fn a_restarted_process_loses_its_leases_at_once_and_a_reconnection_keeps_them() {
        let mut fleet = Fleet::new(Vec::new(), Duration::from_secs(60), false);
        let (run, client) = (RunId::new("run-1").unwrap(), ClientId::new("c1").unwrap());
        fleet.register(record("c1"), "session-a");
        let _tasks = fleet.subscribe(&client).unwrap();
        let lease = fleet.lease(&run, &client).unwrap();
        // A reconnection of the same process: the task is still in hand.
        fleet.register(record("c1"), "session-a");
        assert!(fleet.newly_gone().is_empty());
        // The process restarted (a new session), still online: its task is lost now.
        fleet.register(record("c1"), "session-b");
        let _tasks = fleet.subscribe(&client).unwrap();
        assert_eq!(fleet.newly_gone().get(&run), Some(&vec![lease.task.clone()]));
        assert!(fleet.newly_gone().is_empty(), "reported once");
        // A sender that states no session is never taken for a restart.
        let other = fleet.lease(&run, &client).unwrap();
        fleet.register(record("c1"), "");
        assert!(fleet.newly_gone().is_empty(), "{other:?}");
    }
}
