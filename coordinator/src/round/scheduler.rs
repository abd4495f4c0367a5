//! Which run gets which clients: the scheduler's decision, a pure function of its input.
//!
//! Runs in `Selecting` (and `Evaluating`) post a [`Demand`]: the clients they could use,
//! how many they need before they can start, and how many they would take. The engine
//! calls [`schedule`] whenever the fleet or the demands change and turns each
//! [`Decision::Offer`] into leases; a client holds at most `max_concurrent_tasks` leases.
//!
//! The rules, each property-tested below:
//! - **No double booking.** A client is offered only while it is online and holds fewer
//!   than `max_concurrent_tasks` leases, counting the offers of this very pass.
//! - **Priorities.** Demands are served in order of priority (higher first), then of how
//!   long ago they were last served, then of submission. A demand that cannot be served yet
//!   *holds back* the free clients it could use, so a lower-priority run never takes them,
//!   unless it could not start even if every online eligible client were free: an
//!   unsatisfiable demand holds back nothing.
//! - **Fair share.** Among equal priorities the least recently served demand goes first, so
//!   runs competing for the same clients take turns instead of one starving the other.
//! - **Disjoint runs never wait for each other.** Holding back only ever concerns clients a
//!   demand is eligible for.
//! - **Giving up.** A demand whose deadline passed with fewer eligible clients *online*
//!   than it needs is answered [`Decision::GiveUp`]; an impatient one (evaluation) gives up
//!   as soon as that is the case, or at its deadline whatever the reason.

use crate::ids::{ClientId, RunId};
use std::collections::{HashMap, HashSet};

/// A client as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSlot {
    pub id: ClientId,
    pub online: bool,
    /// Leases it holds now.
    pub busy: u32,
}

/// What a run asks of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub run: RunId,
    pub priority: i32,
    /// Submission order (smaller = older).
    pub seq: u64,
    /// Logical time of the demand's last offer (0 = never served).
    pub last_served: u64,
    /// Clients whose region and datasets fit the run.
    pub eligible: Vec<ClientId>,
    /// Serve only when at least this many eligible clients are free (at least 1).
    pub need: usize,
    /// Offer at most this many.
    pub max: usize,
    /// The demand's deadline has passed.
    pub expired: bool,
    /// Waits for busy clients past the deadline (training); else gives up (evaluation).
    pub patient: bool,
}

/// The scheduler's answer to one demand; demands without a decision keep waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Lease these clients to the run (sorted by id).
    Offer { run: RunId, clients: Vec<ClientId> },
    /// Stop waiting: only `online` eligible clients are online.
    GiveUp { run: RunId, online: usize },
}

/// The order demands are served in.
fn order(demands: &[Demand]) -> Vec<&Demand> {
    let mut ordered: Vec<&Demand> = demands.iter().collect();
    ordered.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.last_served.cmp(&b.last_served)).then(a.seq.cmp(&b.seq)));
    ordered
}

/// Decides which demands are served now and with which clients.
pub fn schedule(clients: &[ClientSlot], max_concurrent_tasks: u32, demands: &[Demand]) -> Vec<Decision> {
    let cap = max_concurrent_tasks.max(1);
    let slots: HashMap<&ClientId, &ClientSlot> = clients.iter().map(|c| (&c.id, c)).collect();
    let mut busy: HashMap<&ClientId, u32> = clients.iter().map(|c| (&c.id, c.busy)).collect();
    let mut held_back: HashSet<&ClientId> = HashSet::new();
    let mut decisions = Vec::new();
    for d in order(demands) {
        let need = d.need.max(1);
        let mut eligible: Vec<&ClientId> =
            d.eligible.iter().filter(|c| slots.get(c).is_some_and(|s| s.online)).collect();
        eligible.sort();
        eligible.dedup();
        let online = eligible.len();
        let free: Vec<&ClientId> = eligible.into_iter().filter(|c| busy[c] < cap && !held_back.contains(c)).collect();
        if free.len() >= need {
            let take: Vec<ClientId> = free.into_iter().take(d.max.max(need)).cloned().collect();
            for c in &take {
                *busy.get_mut(c).expect("offered clients are known") += 1;
            }
            decisions.push(Decision::Offer { run: d.run.clone(), clients: take });
        } else if (online < need && (d.expired || !d.patient)) || (d.expired && !d.patient) {
            decisions.push(Decision::GiveUp { run: d.run.clone(), online });
        } else if online >= need {
            // Servable once some of its busy clients free up: keep the free ones for it.
            held_back.extend(free);
        }
        // Else it could not start even with every online eligible client: it holds back
        // nothing, so one unsatisfiable plan (100,000 clients, a week's deadline) never
        // stalls the runs that can proceed.
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cid(i: usize) -> ClientId {
        ClientId::new(format!("c{i:03}")).unwrap()
    }
    fn rid(i: usize) -> RunId {
        RunId::new(format!("run-{i:03}")).unwrap()
    }

    fn demand(i: usize, priority: i32, eligible: &[usize], need: usize, max: usize) -> Demand {
        Demand {
            run: rid(i),
            priority,
            seq: i as u64,
            last_served: 0,
            eligible: eligible.iter().map(|&c| cid(c)).collect(),
            need,
            max,
            expired: false,
            patient: true,
        }
    }

    fn fleet(n: usize) -> Vec<ClientSlot> {
        (0..n).map(|i| ClientSlot { id: cid(i), online: true, busy: 0 }).collect()
    }

    fn offered(decisions: &[Decision], run: &RunId) -> Option<Vec<ClientId>> {
        decisions.iter().find_map(|d| match d {
            Decision::Offer { run: r, clients } if r == run => Some(clients.clone()),
            _ => None,
        })
    }

    #[test]
    fn an_unsatisfiable_demand_holds_back_nothing() {
        // Run 0 (first in line) wants 100 of the 3 clients; run 1 wants 1.
        let d = vec![demand(0, 10, &[0, 1, 2], 100, 100), demand(1, 0, &[0, 1, 2], 1, 1)];
        let decisions = schedule(&fleet(3), 1, &d);
        assert_eq!(offered(&decisions, &rid(1)), Some(vec![cid(0)]));
        assert_eq!(offered(&decisions, &rid(0)), None, "it keeps waiting (its deadline decides)");
    }

    #[test]
    fn disjoint_demands_are_all_served() {
        let d = vec![demand(0, 0, &[0, 1], 2, 9), demand(1, 0, &[2, 3], 2, 9), demand(2, 0, &[4, 5], 2, 9)];
        let out = schedule(&fleet(6), 1, &d);
        assert_eq!(out.len(), 3);
        assert_eq!(offered(&out, &rid(1)).unwrap(), vec![cid(2), cid(3)]);
    }

    #[test]
    fn higher_priority_holds_back_what_it_could_use() {
        // Run 0 (priority 5) needs 3 of {0,1,2}; client 2 is busy. Run 1 (priority 0)
        // could start with {0,1} but must not take them.
        let mut clients = fleet(3);
        clients[2].busy = 1;
        let d = vec![demand(0, 5, &[0, 1, 2], 3, 9), demand(1, 0, &[0, 1], 2, 9)];
        assert!(schedule(&clients, 1, &d).is_empty());
        clients[2].busy = 0;
        let out = schedule(&clients, 1, &d);
        assert_eq!(out, vec![Decision::Offer { run: rid(0), clients: vec![cid(0), cid(1), cid(2)] }]);
    }

    #[test]
    fn gives_up_at_the_deadline_only_when_too_few_are_online() {
        let mut clients = fleet(2);
        clients[1].online = false;
        let mut d = demand(0, 0, &[0, 1], 2, 9);
        assert!(schedule(&clients, 1, std::slice::from_ref(&d)).is_empty());
        d.expired = true;
        assert_eq!(schedule(&clients, 1, std::slice::from_ref(&d)), vec![Decision::GiveUp { run: rid(0), online: 1 }]);
        // Enough online but busy: a patient demand keeps waiting past its deadline.
        clients[1].online = true;
        clients[1].busy = 1;
        assert!(schedule(&clients, 1, std::slice::from_ref(&d)).is_empty());
        // An impatient one (evaluation) does not.
        d.patient = false;
        assert_eq!(schedule(&clients, 1, &[d]), vec![Decision::GiveUp { run: rid(0), online: 2 }]);
    }

    #[test]
    fn impatient_demand_gives_up_at_once_without_clients() {
        let mut d = demand(0, 0, &[7], 1, 9);
        d.patient = false;
        assert_eq!(schedule(&fleet(3), 1, &[d]), vec![Decision::GiveUp { run: rid(0), online: 0 }]);
    }

    #[test]
    fn capacity_above_one_lets_runs_share_a_client() {
        let d = vec![demand(0, 0, &[0], 1, 9), demand(1, 0, &[0], 1, 9)];
        assert_eq!(schedule(&fleet(1), 1, &d).len(), 1);
        assert_eq!(schedule(&fleet(1), 2, &d).len(), 2);
    }

    prop_compose! {
        fn arb_case()(n in 1usize..12, cap in 1u32..3, runs in 1usize..6)
            (clients in proptest::collection::vec((any::<bool>(), 0u32..3), n),
             demands in proptest::collection::vec(
                 (-2i32..3, 0u64..5, proptest::collection::vec(0usize..n, 0..n + 1), 0usize..4, 1usize..6, any::<bool>(), any::<bool>()),
                 runs),
             cap in Just(cap))
            -> (Vec<ClientSlot>, u32, Vec<Demand>)
        {
            let slots = clients.iter().enumerate()
                .map(|(i, &(online, busy))| ClientSlot { id: cid(i), online, busy: busy.min(cap) })
                .collect();
            let demands = demands.into_iter().enumerate()
                .map(|(i, (priority, last_served, eligible, need, max, expired, patient))| Demand {
                    run: rid(i), priority, seq: i as u64, last_served,
                    eligible: eligible.into_iter().map(cid).collect(), need, max, expired, patient,
                })
                .collect();
            (slots, cap, demands)
        }
    }

    proptest! {
        #[test]
        fn no_client_is_double_booked((clients, cap, demands) in arb_case()) {
            let out = schedule(&clients, cap, &demands);
            let mut load: HashMap<ClientId, u32> = clients.iter().map(|c| (c.id.clone(), c.busy)).collect();
            for d in &out {
                if let Decision::Offer { run, clients: offered } = d {
                    let demand = demands.iter().find(|x| &x.run == run).unwrap();
                    prop_assert!(offered.len() >= demand.need.max(1) && offered.len() <= demand.max.max(demand.need.max(1)));
                    for c in offered {
                        prop_assert!(demand.eligible.contains(c));
                        prop_assert!(clients.iter().any(|s| &s.id == c && s.online));
                        *load.get_mut(c).unwrap() += 1;
                    }
                }
            }
            prop_assert!(load.values().all(|&l| l <= cap), "load {load:?} over cap {cap}");
        }

        #[test]
        fn a_lower_priority_run_never_takes_what_a_waiting_higher_one_could_use((clients, cap, demands) in arb_case()) {
            let out = schedule(&clients, cap, &demands);
            let served: HashSet<&RunId> = out.iter().map(|d| match d { Decision::Offer { run, .. } | Decision::GiveUp { run, .. } => run }).collect();
            let free_at_start: HashSet<&ClientId> = clients.iter().filter(|c| c.online && c.busy < cap).map(|c| &c.id).collect();
            let satisfiable = |d: &Demand| {
                let mut online: Vec<&ClientId> = d.eligible.iter().filter(|c| clients.iter().any(|s| &s.id == *c && s.online)).collect();
                online.sort();
                online.dedup();
                online.len() >= d.need.max(1)
            };
            for waiting in demands.iter().filter(|d| !served.contains(&d.run) && satisfiable(d)) {
                for d in &out {
                    if let Decision::Offer { run, clients: offered } = d {
                        let other = demands.iter().find(|x| &x.run == run).unwrap();
                        if other.priority < waiting.priority {
                            for c in offered {
                                prop_assert!(!(waiting.eligible.contains(c) && free_at_start.contains(c)),
                                    "{run} (priority {}) took {c}, which waiting {} (priority {}) could use",
                                    other.priority, waiting.run, waiting.priority);
                            }
                        }
                    }
                }
            }
        }

        /// Demands that could not start even with every online eligible client free change
        /// nothing for the others: the offers are those of the schedule without them.
        #[test]
        fn unsatisfiable_demands_do_not_change_anyone_elses_offers((clients, cap, demands) in arb_case()) {
            let satisfiable: Vec<Demand> = demands
                .iter()
                .filter(|d| {
                    let mut online: Vec<&ClientId> = d.eligible.iter().filter(|c| clients.iter().any(|s| &s.id == *c && s.online)).collect();
                    online.sort();
                    online.dedup();
                    online.len() >= d.need.max(1)
                })
                .cloned()
                .collect();
            let offers = |out: Vec<Decision>| -> Vec<Decision> { out.into_iter().filter(|d| matches!(d, Decision::Offer { .. })).collect() };
            prop_assert_eq!(offers(schedule(&clients, cap, &demands)), offers(schedule(&clients, cap, &satisfiable)));
        }

        #[test]
        fn a_demand_alone_on_its_clients_is_served_whenever_they_suffice((clients, cap, demands) in arb_case()) {
            let out = schedule(&clients, cap, &demands);
            for d in &demands {
                let exclusive = d.eligible.iter().all(|c| demands.iter().all(|o| o.run == d.run || !o.eligible.contains(c)));
                if !exclusive { continue; }
                let mut free: Vec<&ClientId> = d.eligible.iter().filter(|c| clients.iter().any(|s| &s.id == *c && s.online && s.busy < cap)).collect();
                free.sort();
                free.dedup();
                if free.len() >= d.need.max(1) {
                    prop_assert!(offered(&out, &d.run).is_some(), "{} has {} free clients of {} needed", d.run, free.len(), d.need);
                }
            }
        }

        /// Equal-priority runs sharing one pool, each holding its clients for one step
        /// after an offer: every run is served within `runs` steps.
        #[test]
        fn equal_priority_runs_take_turns(n in 1usize..8, runs in 1usize..6, need_seed in proptest::collection::vec(1usize..8, 6)) {
            let mut demands: Vec<Demand> = (0..runs)
                .map(|i| demand(i, 0, &(0..n).collect::<Vec<_>>(), need_seed[i].min(n), 9))
                .collect();
            let mut clients = fleet(n);
            let mut waited = vec![0usize; runs];
            let mut clock = 0u64;
            for _ in 0..runs * 3 {
                clock += 1;
                for c in &mut clients { c.busy = 0; }
                let out = schedule(&clients, 1, &demands);
                for (i, d) in demands.iter_mut().enumerate() {
                    if let Some(got) = offered(&out, &d.run) {
                        d.last_served = clock;
                        waited[i] = 0;
                        for c in &mut clients { if got.contains(&c.id) { c.busy = 1; } }
                    } else {
                        waited[i] += 1;
                        prop_assert!(waited[i] < runs, "{} waited {} steps", d.run, waited[i]);
                    }
                }
            }
        }
    }
}
