//! What the engine does with artifacts at start-up, before any run is active.

use crate::checkpoint::Checkpoints;
use crate::round::RoundError;
use crate::store::Store;
use tracing::warn;

/// Interrupts the round attempts a previous process left open, then reconciles the
/// checkpoint files with the records; returns how many attempts it interrupted.
pub(super) async fn recover(store: &dyn Store, checkpoints: &Checkpoints) -> Result<u64, RoundError> {
    let interrupted = store.interrupt_open_rounds().await?;
    reconcile_checkpoints(store, checkpoints).await?;
    Ok(interrupted)
}

/// Removes checkpoint objects that no record names (a crash between writing and recording
/// them): what is in a region's store is then exactly what was published.
async fn reconcile_checkpoints(store: &dyn Store, checkpoints: &Checkpoints) -> Result<(), RoundError> {
    let recorded: crate::checkpoint::Recorded = store
        .list_checkpoints(&Default::default())
        .await?
        .into_iter()
        .flat_map(|c| {
            c.locations.into_iter().map(move |(region, at)| (region, c.id.clone(), crate::checkpoint::attempt_of(&at)))
        })
        .collect();
    for location in checkpoints.remove_unrecorded(&recorded).await? {
        warn!(%location, "removed checkpoint artifacts that no record names (written before a crash)");
    }
    Ok(())
}
