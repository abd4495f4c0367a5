//! Start-up reconciliation: the artifact stores are made to agree with the records after a
//! crash between writing a checkpoint and recording it. A directory is walked (a crash can
//! leave `LocalFileSystem` staging files, `name#N`, and older versions' `name.*.tmp`, which
//! listings do not show); a bucket is listed under its prefix.

use super::artifacts::Opened;
use super::{CheckpointError, Checkpoints, io};
use crate::ids::{CheckpointId, RegionId, RoundNumber, RunId};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// The (region, checkpoint, attempt) copies the store records: one attempt per checkpoint
/// and region, the one that committed.
pub type Recorded = HashSet<(RegionId, CheckpointId, u32)>;

impl Checkpoints {
    /// Removes every round (`<region>/<model>/<run>/round-NNNN`) whose checkpoint `recorded`
    /// does not list for that region (it was written, or partly written, and never recorded:
    /// it was not published, and its re-run writes it again), in every configured store, and
    /// every staging file a crash left mid-write. Keys that do not follow the layout are left
    /// alone, and so are names starting with `.` (server-optimizer state). Call at start-up,
    /// before any run is active. Returns the rounds (and files) it removed.
    ///
    /// # Errors
    /// A store cannot be listed, or a leftover cannot be removed.
    pub async fn remove_unrecorded(&self, recorded: &Recorded) -> Result<Vec<String>, CheckpointError> {
        let mut removed = Vec::new();
        for store in self.artifacts().distinct() {
            match store.dir() {
                Some(root) => {
                    let (root, recorded) = (root.to_path_buf(), recorded.clone());
                    let gone = tokio::task::spawn_blocking(move || remove_in_dir(&root, &recorded))
                        .await
                        .map_err(|e| CheckpointError::Format(format!("reconciling a directory failed: {e}")))??;
                    removed.extend(gone.into_iter().map(|p| p.display().to_string()));
                }
                None => removed.extend(remove_in_bucket(store, recorded).await?),
            }
        }
        Ok(removed)
    }
}

/// The checkpoint copy a round's parts (`region`, `model`, `run`, `round-NNNN[-aK]`) name.
fn round_of(region: &str, run: &str, round: &str) -> Option<(RegionId, CheckpointId, u32)> {
    let region = RegionId::new(region).ok()?;
    let run = RunId::new(run).ok()?;
    let (round, attempt) = super::parse_round_dir(round)?;
    Some((region, CheckpointId::for_round(&run, RoundNumber(round)), attempt))
}

async fn remove_in_bucket(store: &Opened, recorded: &Recorded) -> Result<Vec<String>, CheckpointError> {
    let mut rounds = BTreeSet::new();
    for parts in store.list().await? {
        let [region, model, run, round, file] = parts.as_slice() else { continue };
        if parts.iter().any(|p| p.starts_with('.')) {
            continue;
        }
        let Some(key) = round_of(region, run, round) else { continue };
        if !recorded.contains(&key) {
            store.object(&[region, model, run, round, file]).delete().await?;
            rounds.insert(store.object(&[region, model, run, round]).location().to_string());
        }
    }
    Ok(rounds.into_iter().collect())
}

/// Whether a file name is a write a crash interrupted: `LocalFileSystem`'s staging name
/// (`model.safetensors#1`) or an older version's (`model.0123456789abcdef.tmp`).
fn is_staging(name: &str) -> bool {
    let staged = name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    staged || name.ends_with(".tmp")
}

/// The subdirectories of `dir` whose names do not start with `.` (none if `dir` is absent).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() && !name_of(&path).is_some_and(|n| n.starts_with('.')) {
            out.push(path);
        }
    }
    Ok(out)
}

fn name_of(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// [`Checkpoints::remove_unrecorded`] in one directory store. Blocking I/O.
fn remove_in_dir(root: &Path, recorded: &Recorded) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut removed = Vec::new();
    for region_dir in subdirs(root)? {
        for model_dir in subdirs(&region_dir)? {
            for run_dir in subdirs(&model_dir)? {
                for round_dir in subdirs(&run_dir)? {
                    let names = (name_of(&region_dir), name_of(&run_dir), name_of(&round_dir));
                    let (Some(region), Some(run), Some(round)) = names else { continue };
                    let Some(key) = round_of(region, run, round) else { continue };
                    if recorded.contains(&key) {
                        for entry in std::fs::read_dir(&round_dir).map_err(io(&round_dir))? {
                            let path = entry.map_err(io(&round_dir))?.path();
                            if name_of(&path).is_some_and(is_staging) {
                                std::fs::remove_file(&path).map_err(io(&path))?;
                                removed.push(path);
                            }
                        }
                    } else {
                        std::fs::remove_dir_all(&round_dir).map_err(io(&round_dir))?;
                        removed.push(round_dir);
                    }
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::{ArtifactStore, StoreOptions, StoreSpec};
    use super::*;
    use bytes::Bytes;
    use object_store::memory::InMemory;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn staging_names_are_recognised() {
        assert!(is_staging("model.safetensors#1") && is_staging("manifest.json#12"));
        assert!(is_staging("model.0123456789abcdef.tmp"));
        assert!(!is_staging("model.safetensors") && !is_staging("a#b") && !is_staging("a#"));
    }

    /// Two recorded rounds and one unrecorded, in a bucket and in a directory: the
    /// unrecorded one goes, with staging leftovers; the rest, and foreign keys, stay.
    #[tokio::test]
    async fn unrecorded_rounds_are_removed_from_buckets_and_directories() {
        let bucket = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let eu = RegionId::new("eu").unwrap();
        let regions = BTreeMap::from([(eu.clone(), StoreSpec::bucket(bucket.clone(), "memory://fedra-eu", "cp"))]);
        let store = ArtifactStore::open(&StoreSpec::dir(dir.path()), &regions, StoreOptions::default()).unwrap();
        let cps = Checkpoints::ephemeral(store);
        let run = RunId::generate();
        let us = RegionId::new("us").unwrap();
        let mut recorded = Recorded::new();
        for region in [&eu, &us] {
            for round in 1..=3 {
                let weights = cps.weights_object(region, "lr", &run, round, 1);
                weights.put(Bytes::from_static(b"w")).await.unwrap();
                weights.sibling("manifest.json").put(Bytes::from_static(b"{}")).await.unwrap();
                if round < 3 {
                    recorded.insert((region.clone(), CheckpointId::for_round(&run, RoundNumber(round)), 1));
                }
            }
        }
        // A foreign object in the bucket, a staging leftover and server state in the directory.
        let foreign = cps.artifacts().for_region(&eu).object(&["notes.txt"]);
        foreign.put(Bytes::from_static(b"keep")).await.unwrap();
        let round1 = cps.weights_object(&us, "lr", &run, 1, 1).location().file_path().unwrap();
        std::fs::write(round1.with_file_name("model.safetensors#1"), b"half").unwrap();
        let state = dir.path().join(".server-state").join(run.as_str()).join("round-0003.safetensors");
        std::fs::create_dir_all(state.parent().unwrap()).unwrap();
        std::fs::write(&state, b"state").unwrap();

        let removed = cps.remove_unrecorded(&recorded).await.unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        for region in [&eu, &us] {
            for round in 1..=3 {
                let weights = cps.weights_object(region, "lr", &run, round, 1);
                let kept = weights.get_if_exists().await.unwrap().is_some();
                assert_eq!(kept, round < 3, "{region} round {round}");
                assert_eq!(weights.sibling("manifest.json").get_if_exists().await.unwrap().is_some(), round < 3);
            }
        }
        assert!(foreign.get_if_exists().await.unwrap().is_some(), "keys outside the layout stay");
        assert!(!round1.with_file_name("model.safetensors#1").exists(), "staging leftovers go");
        assert!(state.exists(), "server state stays");
        assert!(!round1.parent().unwrap().with_file_name("round-0003").exists(), "the round directory goes");
        // A second pass finds nothing.
        assert!(cps.remove_unrecorded(&recorded).await.unwrap().is_empty());
    }

    /// A round re-run by another coordinator (attempt 2, recorded) beside the first
    /// attempt's copy (unrecorded: its coordinator was deposed before recording it): the
    /// first attempt's directory goes, the recorded one stays, in a bucket and a directory.
    #[tokio::test]
    async fn only_the_recorded_attempt_of_a_round_stays() {
        let bucket = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let eu = RegionId::new("eu").unwrap();
        let us = RegionId::new("us").unwrap();
        let regions = BTreeMap::from([(eu.clone(), StoreSpec::bucket(bucket, "memory://fedra-eu", "cp"))]);
        let store = ArtifactStore::open(&StoreSpec::dir(dir.path()), &regions, StoreOptions::default()).unwrap();
        let cps = Checkpoints::ephemeral(store);
        let run = RunId::generate();
        let id = CheckpointId::for_round(&run, RoundNumber(1));
        let mut recorded = Recorded::new();
        for region in [&eu, &us] {
            for attempt in [1, 2] {
                cps.weights_object(region, "lr", &run, 1, attempt).put(Bytes::from_static(b"w")).await.unwrap();
            }
            recorded.insert((region.clone(), id.clone(), 2));
        }
        let removed = cps.remove_unrecorded(&recorded).await.unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        for region in [&eu, &us] {
            assert!(cps.weights_object(region, "lr", &run, 1, 1).get_if_exists().await.unwrap().is_none());
            assert!(cps.weights_object(region, "lr", &run, 1, 2).get_if_exists().await.unwrap().is_some());
        }
    }
}
