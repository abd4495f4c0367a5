//! What a task asks of a client. The coordinator's round engine assigns tasks and the
//! sidecar carries them out; both name the same kinds and the same privacy demands.

/// What a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Train locally and push the model (or, in a private run, the clipped update).
    Train,
    /// Evaluate the round's checkpoint on the local held-out split and report.
    Evaluate,
}

/// What a client of a differentially private run must do to its update before uploading
/// it: clip it to `clip_norm` and, for local DP, add noise itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyTask {
    /// C: the L2 bound of the uploaded update (local − global).
    pub clip_norm: f64,
    /// Local DP: the target std of the noise the client adds; 0 for central DP (the
    /// coordinator adds the noise to the sum).
    pub local_noise_std: f64,
    /// g·√d ≤ slack·C for the noise lattice (see the lattice Gaussian noise of the DP code).
    pub lattice_slack: f64,
}
