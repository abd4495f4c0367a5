//! Contract cases for a regional aggregator's upstream tasks.

use super::*;
use crate::store::{UpstreamState, UpstreamTask};

fn task_for(run: &RunRecord, task: &str) -> UpstreamTask {
    UpstreamTask {
        task: id(task),
        run: run.id.clone(),
        upstream_run: id("run-global"),
        upstream_round: 3,
        state: UpstreamState::Training,
        detail: None,
        created_at: now(),
    }
}

pub(crate) async fn a_cohort_run_is_stored_with_its_initial_checkpoint_once(store: &dyn Store) {
    let run = run_record(RunState::Queued);
    let initial = checkpoint(&run.id, 0, &["eu"]);
    let task = task_for(&run, "task-up-1");
    store.create_cohort_run(&run, &initial, &task).await.unwrap();
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap().state, RunState::Queued);
    assert_eq!(store.get_checkpoint(&initial.id).await.unwrap().unwrap().locations, initial.locations);
    assert_eq!(store.list_upstream_tasks().await.unwrap(), vec![task.clone()]);

    // The same upstream task again (a redelivery after a restart) writes nothing.
    let again = run_record(RunState::Queued);
    let err = store
        .create_cohort_run(&again, &checkpoint(&again.id, 0, &["eu"]), &task_for(&again, "task-up-1"))
        .await
        .unwrap_err();
    assert_eq!(refused(Err::<(), _>(err)), ("already exists", "upstream task", "task-up-1".to_string()));
    assert!(store.get_run(&again.id).await.unwrap().is_none(), "nothing of the refused call is stored");
    // A clashing checkpoint id leaves neither the run nor the task behind.
    let third = run_record(RunState::Queued);
    let err = store
        .create_cohort_run(
            &third,
            &CheckpointRecord { run: third.id.clone(), ..initial.clone() },
            &task_for(&third, "task-up-2"),
        )
        .await
        .unwrap_err();
    assert_eq!(refused(Err::<(), _>(err)).1, "checkpoint");
    assert!(store.get_run(&third.id).await.unwrap().is_none());
    assert_eq!(store.list_upstream_tasks().await.unwrap().len(), 1);
}

pub(crate) async fn an_upstream_task_ends_once(store: &dyn Store) {
    let run = run_record(RunState::Queued);
    let task = task_for(&run, "task-up-9");
    store.create_cohort_run(&run, &checkpoint(&run.id, 0, &["eu"]), &task).await.unwrap();
    store.end_upstream_task(&task.task, UpstreamState::Pushed, Some("accepted, 3 reported")).await.unwrap();
    let err = store.end_upstream_task(&task.task, UpstreamState::Abandoned, None).await.unwrap_err();
    assert_eq!(refused(Err::<(), _>(err)), ("conflict", "upstream task", "task-up-9".to_string()));
    let stored = store.list_upstream_tasks().await.unwrap();
    assert_eq!((stored[0].state, stored[0].detail.as_deref()), (UpstreamState::Pushed, Some("accepted, 3 reported")));
    let err = store.end_upstream_task(&id("task-ghost"), UpstreamState::Pushed, None).await.unwrap_err();
    assert_eq!(refused(Err::<(), _>(err)), ("not found", "upstream task", "task-ghost".to_string()));
}
