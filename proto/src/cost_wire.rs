//! Round costs (`fedra_types::cost`) on the wire, both ways: the coordinator writes them into
//! `RoundSummary.cost`, the CLI reads them.

use crate::pb;
use fedra_types::cost::RegionCost;
use fedra_types::ids::{IdError, RegionId};

pub fn region_cost_to_pb(c: &RegionCost) -> pb::RegionCost {
    pb::RegionCost {
        region: c.region.to_string(),
        updates: c.updates,
        update_bytes: c.update_bytes,
        broadcast_bytes: c.broadcast_bytes,
        coordinator_cpu_seconds: c.coordinator_cpu_seconds,
        client_train_seconds: c.client_train_seconds,
        cost: c.cost,
        currency: c.currency.clone().unwrap_or_default(),
    }
}

/// # Errors
/// The region is not a valid region id.
pub fn region_cost_from_pb(c: pb::RegionCost) -> Result<RegionCost, IdError> {
    Ok(RegionCost {
        region: RegionId::new(c.region)?,
        updates: c.updates,
        update_bytes: c.update_bytes,
        broadcast_bytes: c.broadcast_bytes,
        coordinator_cpu_seconds: c.coordinator_cpu_seconds,
        client_train_seconds: c.client_train_seconds,
        cost: c.cost,
        currency: (!c.currency.is_empty()).then_some(c.currency),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_cost_round_trips_and_a_bad_region_is_refused() {
        let c = RegionCost {
            region: RegionId::new("eu").unwrap(),
            updates: 2,
            update_bytes: 80,
            broadcast_bytes: 160,
            coordinator_cpu_seconds: 0.5,
            client_train_seconds: 3.0,
            cost: Some(0.01),
            currency: Some("EUR".into()),
        };
        assert_eq!(region_cost_from_pb(region_cost_to_pb(&c)).unwrap(), c);
        let unpriced = RegionCost { cost: None, currency: None, ..c };
        assert_eq!(region_cost_from_pb(region_cost_to_pb(&unpriced)).unwrap(), unpriced);
        let bad = pb::RegionCost { region: "eu west".into(), ..pb::RegionCost::default() };
        assert!(region_cost_from_pb(bad).unwrap_err().to_string().contains("eu west"));
    }
}
