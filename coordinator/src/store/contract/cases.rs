//! The list of contract cases, kept apart from the cases themselves so that a new case is
//! one line here and its function in a file of its area, and `contract.rs` stays the
//! fixtures and the run and round cases.

/// Expands to `store_contract_tests!(@cases <args>, <every contract case>)`: the one list of
/// cases, each of which [`store_contract_tests!`](super::store_contract_tests) turns into a test.
macro_rules! with_contract_cases {
    ($($args:tt)*) => {
        $crate::store::contract::store_contract_tests!(@cases $($args)*, [
            runs_round_trip_oldest_first,
            runs_are_listed_page_by_page_per_owner,
            creating_a_run_twice_is_already_exists,
            run_state_writes_keep_the_last_failure_reason,
            a_terminal_run_is_final,
            writes_naming_an_unknown_run_are_not_found,
            clients_are_upserted_by_id,
            attempts_are_numbered_per_round,
            beginning_an_attempt_twice_is_already_exists,
            a_completed_round_commits_participations_checkpoint_and_run_progress,
            updates_and_round_means_keep_their_training_time,
            a_failed_attempt_drops_its_pending_clients,
            open_attempts_are_interrupted_once,
            the_final_round_succeeds_the_run_and_publishes_its_checkpoint,
            completing_an_attempt_twice_is_a_conflict,
            an_ended_attempt_can_neither_fail_nor_complete,
            round_writes_naming_an_unknown_attempt_are_not_found,
            rounds_complete_once_each_in_order,
            a_terminal_run_completes_no_round,
            a_refused_completion_writes_nothing,
            record_updates_moves_selected_clients_to_reported,
            a_rejected_update_stays_rejected,
            an_update_is_recorded_once,
            updates_of_unselected_clients_or_ended_attempts_are_refused,
            only_a_pending_update_can_be_rejected,
            checkpoints_are_listed_by_filter,
            evaluations_round_trip_and_a_run_finishes_after_its_last,
            an_evaluation_is_recorded_once,
            ledger_reservations_are_charged_once,
            a_ledger_entry_is_written_once,
            the_ledger_lists_oldest_first_by_scope_or_run,
            audit_entries_are_numbered_and_chained_across_appends,
            audit_entries_are_listed_by_filter_oldest_first,
            approvals_queue_a_pending_run_once_enough_approvers_agree,
            a_round_completion_appends_its_audit_entries_atomically,
            a_cohort_run_is_stored_with_its_initial_checkpoint_once,
            an_upstream_task_ends_once,
            registry_changes_are_atomic_and_keep_one_serving,
            model_approvals_are_recorded_once_per_approver_with_the_change,
            a_reservation_that_understates_its_scope_is_refused,
        ], [
            the_lease_is_held_by_one_coordinator_until_it_expires,
            a_taken_over_lease_refuses_the_old_leaders_writes,
            a_released_lease_is_taken_over_at_once,
        ]);
    };
}
pub(crate) use with_contract_cases;
