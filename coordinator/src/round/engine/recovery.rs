//! What the engine does with files at start-up, before any run is active.

use crate::checkpoint::CheckpointDir;
use crate::round::RoundError;
use crate::store::Store;
use tracing::warn;

/// Interrupts the round attempts a previous process left open, then reconciles the
/// checkpoint files with the records; returns how many attempts it interrupted.
pub(super) async fn recover(store: &dyn Store, checkpoints: &CheckpointDir) -> Result<u64, RoundError> {
    let interrupted = store.interrupt_open_rounds().await?;
    reconcile_checkpoints(store, checkpoints).await?;
    Ok(interrupted)
}

/// Removes checkpoint files that no record names (a crash between writing and recording
/// them): what is on disk in a region's tree is then exactly what was published.
async fn reconcile_checkpoints(store: &dyn Store, checkpoints: &CheckpointDir) -> Result<(), RoundError> {
    let recorded: std::collections::HashSet<_> = store
        .list_checkpoints(&Default::default())
        .await?
        .into_iter()
        .flat_map(|c| c.locations.into_iter().map(move |(region, _)| (region, c.id.clone())))
        .collect();
    let dir = checkpoints.clone();
    let removed = tokio::task::spawn_blocking(move || dir.remove_unrecorded(&recorded))
        .await
        .map_err(|e| RoundError::Internal(format!("reconciling checkpoint files failed: {e}")))??;
    for path in removed {
        warn!(path = %path.display(), "removed checkpoint files that no record names (written before a crash)");
    }
    Ok(())
}
