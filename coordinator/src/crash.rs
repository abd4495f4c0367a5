//! Crash points: named places in the round's life where the crash-injection tests kill the
//! coordinator, to prove that a restart on the same store loses, duplicates and
//! under-counts nothing (`tests/tests/integration/crash.rs`).
//!
//! A point does something only in debug builds (`cfg(debug_assertions)`, the profile tests
//! run) and only when `FEDRA_CRASH_AT` names it: then the first thread to reach it sends
//! SIGKILL to its own process, which dies at once, with no destructor, flush or graceful
//! shutdown, exactly as `kill -9` would. Release builds compile every point to nothing.
//! An unknown name in `FEDRA_CRASH_AT` is a start-up error ([`check_env`]), so a typo
//! cannot make a crash test pass by never crashing.

/// Every crash point, in the order a round reaches them.
pub const POINTS: [&str; 9] = [
    // A private round's cost is reserved in the ledger; the round is not recorded yet.
    "privacy_reserved",
    // The round's cohort is recorded (begin_round); no task is handed out yet.
    "selected",
    // A client has received part of the round's model.
    "mid_broadcast",
    // A client's update is partly received.
    "mid_upload",
    // An update is folded into the running sum and recorded.
    "folded",
    // The checkpoint is written to the first of several regions, not yet to the others.
    "mid_publication",
    // The checkpoint files are written in every region; the round is not recorded yet.
    "checkpoint_written",
    // The round is recorded; a private round's reservation is not yet marked charged.
    "round_committed",
    // An evaluation result is recorded; the evaluation is not finished.
    "evaluating",
];

/// The environment variable that arms one point.
pub const ENV: &str = "FEDRA_CRASH_AT";

/// What the armed point does: `kill` (the default, SIGKILL) or `stop` (SIGSTOP, once: the
/// process freezes there, as in a long GC pause or a suspended VM, and carries on from that
/// very point when sent SIGCONT — how the failover test makes a leader that wakes up after
/// it was deposed).
pub const MODE_ENV: &str = "FEDRA_CRASH_MODE";

/// Refuses an armed point that does not exist, or a mode that does not.
///
/// # Errors
/// The name in [`ENV`] and the known ones, or the mode in [`MODE_ENV`].
pub fn check_env() -> Result<(), String> {
    if let Ok(mode) = std::env::var(MODE_ENV)
        && !["kill", "stop"].contains(&mode.as_str())
    {
        return Err(format!("{MODE_ENV}={mode:?} is neither \"kill\" nor \"stop\""));
    }
    match std::env::var(ENV) {
        Ok(name) if !POINTS.contains(&name.as_str()) => {
            Err(format!("{ENV}={name:?} names no crash point (known: {})", POINTS.join(", ")))
        }
        _ => Ok(()),
    }
}

/// Kills this process with SIGKILL when `name` is the armed point (debug builds only).
#[inline]
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "undeclared crash point {name}");
    #[cfg(debug_assertions)]
    armed::hit(name);
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;

    fn armed() -> Option<&'static str> {
        static ARMED: OnceLock<Option<String>> = OnceLock::new();
        ARMED.get_or_init(|| std::env::var(super::ENV).ok()).as_deref()
    }

    pub fn hit(name: &'static str) {
        if armed() != Some(name) {
            return;
        }
        if std::env::var(super::MODE_ENV).as_deref() == Ok("stop") {
            static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !STOPPED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                eprintln!("fedra crash point {name} reached: stopping this process (SIGSTOP) until SIGCONT");
                // SAFETY: kill(2) on our own pid; the process (every thread) freezes until
                // SIGCONT and this call then returns.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGSTOP);
                }
                eprintln!("fedra crash point {name}: continued");
            }
            return;
        }
        eprintln!("fedra crash point {name} reached: killing this process (SIGKILL)");
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so nothing runs after
        // the call returns in this process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // Delivery to the calling process is immediate; park in case it is not.
        loop {
            std::thread::park();
        }
    }
}
