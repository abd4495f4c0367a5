//! The synthetic federations of the FedProx paper: Li, Sahu, Zaheer, Sanjabi, Talwalkar,
//! Smith, "Federated Optimization in Heterogeneous Networks", MLSys 2020 (§5.1 and
//! appendix C.1), generated as the reference scripts do
//! (<https://github.com/litian96/FedProx>, `data/synthetic_{0_0,0.5_0.5,1_1}/generate_synthetic.py`
//! and `data/synthetic_iid/generate_iid.py`).
//!
//! # Generative process, synthetic(α, β)
//!
//! With `K` devices (30), `d` features (60) and `C` classes (10), for device `k`:
//!
//! 1. `n_k = floor(LogNormal(μ = 4, σ = 2)) + 50` samples;
//! 2. `u_k ~ N(0, α²)` and `B_k ~ N(0, β²)` — **α and β are standard deviations**, exactly as
//!    `np.random.normal(0, alpha)` takes them;
//! 3. `W_k ∈ R^{d×C}` with entries `~ N(u_k, 1)` and `b_k ∈ R^C` with entries `~ N(u_k, 1)`
//!    (the reference sets `mean_b = mean_W`: the same `u_k` for both);
//! 4. `v_k ∈ R^d` with entries `~ N(B_k, 1)`;
//! 5. each sample `x ~ N(v_k, Σ)` with `Σ = diag(j^-1.2)`, `j = 1..=d` (coordinate `j` has
//!    standard deviation `j^-0.6`), and label `y = argmax(x·W_k + b_k)` (the reference takes
//!    the argmax of the softmax, which is the same; ties go to the lowest class, as
//!    `np.argmax` does).
//!
//! α controls how much the devices' *models* differ, β how much their *inputs* differ;
//! synthetic(0,0) still has per-device models (`W_k ~ N(0, 1)` independently per device).
//!
//! # Synthetic-IID
//!
//! One global `W ~ N(0, 1)^{d×C}` and `b ~ N(0, 1)^C` shared by every device, and `v_k = 0`:
//! every device draws `x ~ N(0, Σ)` and labels it with the same model. Only the device
//! sizes `n_k` differ (same lognormal law).
//!
//! # Split
//!
//! Like the reference's `main()`, each device's samples are shuffled and the first
//! `int(0.9 n_k)` become its training part, the rest its test part (`n_k ≥ 50`, so at least
//! 45 train and 5 test samples). The parts keep the shuffled order.
//!
//! # Determinism and what differs from the reference
//!
//! Everything is drawn from one ChaCha8 stream seeded with [`FedProxSynthetic::seed`], in
//! the reference's order (all `n_k`, all `u_k`, all `B_k`, all `v_k`, then per device `W_k`,
//! `b_k` and its samples, then the per-device shuffles), so a seed always gives the same
//! federation. The numbers are not numpy's (its Mersenne Twister streams and SVD-based
//! `multivariate_normal` cannot be replayed); the distribution is the reference's.
//! Features are stored as `f32`; labels are computed from the `f32`-rounded features (in
//! `f64` arithmetic, see [`DeviceParams::label`]), so `y = argmax(x·W_k + b_k)` holds
//! exactly for the stored data.
//!
//! # The lognormal tail
//!
//! `LogNormal(4, 2)` has median `e^4 ≈ 55` but mean `e^6 ≈ 403` and a heavy tail: a device
//! gets more than ~3,000 samples with probability ~2.3% (`z > 2`), so across 30 devices
//! one or more such giants is common, and ~22,000 (`z > 3`) happens in a few percent of seeds.
//! This skew in device sizes is part of the benchmark (it is what makes sample-weighted
//! FedAvg differ from a plain mean), so it is kept exactly: nothing is capped. A seed's
//! total size can therefore range from under two thousand to tens of thousands of samples;
//! callers that need a bound should check [`ClientData::len`] per device.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, StandardNormal};

use super::ClientData;
use fedra_client::data::{DataError, Dataset};

/// Devices in the paper's synthetic federations.
pub const FEDPROX_DEVICES: usize = 30;
/// Features per sample.
pub const FEDPROX_DIM: usize = 60;
/// Classes.
pub const FEDPROX_CLASSES: usize = 10;
/// `μ` of the lognormal law of device sizes (of the underlying normal).
pub const SAMPLES_LOG_MEAN: f64 = 4.0;
/// `σ` of the lognormal law of device sizes (of the underlying normal).
pub const SAMPLES_LOG_SIGMA: f64 = 2.0;
/// Added to every device's lognormal draw: the smallest possible device.
pub const MIN_DEVICE_SAMPLES: usize = 50;
/// Fraction of each device's (shuffled) samples that become its training part.
pub const TRAIN_FRACTION: f64 = 0.9;
/// Exponent of the feature covariance: coordinate `j` (1-based) has variance `j^-1.2`.
pub const COVARIANCE_EXPONENT: f64 = -1.2;

/// A FedProx synthetic federation: synthetic(α, β) or synthetic-IID. Build one with
/// [`FedProxSynthetic::new`] or [`FedProxSynthetic::iid`] (the paper's sizes), adjust the
/// public fields if needed, then [`generate`](Self::generate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FedProxSynthetic {
    /// Standard deviation of the per-device model means `u_k` (ignored when `iid`).
    pub alpha: f64,
    /// Standard deviation of the per-device input means `B_k` (ignored when `iid`).
    pub beta: f64,
    /// One shared model and zero-mean inputs for every device (synthetic-IID).
    pub iid: bool,
    /// Devices (30 in the paper).
    pub devices: usize,
    /// Features per sample (60 in the paper).
    pub dim: usize,
    /// Classes (10 in the paper).
    pub classes: usize,
    pub seed: u64,
}

/// The parameters one device's data was generated from, for checks and analysis (e.g. the
/// Bayes-optimal accuracy is 1: labels are a deterministic function of `x`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceParams {
    /// `u_k`, the mean of `W_k`'s and `b_k`'s entries (0 for IID).
    pub u: f64,
    /// `B_k`, the mean of `v_k`'s entries (0 for IID).
    pub b_mean: f64,
    /// `W_k`, `dim × classes` row-major: `w[j * classes + c]`.
    pub w: Vec<f64>,
    /// `b_k`, one bias per class.
    pub b: Vec<f64>,
    /// `v_k`, the mean of the device's inputs (zeros for IID).
    pub v: Vec<f64>,
    /// `n_k`, the device's samples (train + test).
    pub samples: usize,
}

impl DeviceParams {
    /// `x·W_k + b_k`, computed in `f64`.
    pub fn logits(&self, x: &[f32]) -> Vec<f64> {
        let classes = self.b.len();
        let mut z = self.b.clone();
        for (j, &xj) in x.iter().enumerate() {
            let row = &self.w[j * classes..(j + 1) * classes];
            for (zc, &wjc) in z.iter_mut().zip(row) {
                *zc += f64::from(xj) * wjc;
            }
        }
        z
    }

    /// `argmax(x·W_k + b_k)`, the lowest class on ties: the label the generator gave `x`.
    pub fn label(&self, x: &[f32]) -> u32 {
        let z = self.logits(x);
        let mut best = 0;
        for (c, &v) in z.iter().enumerate() {
            if v > z[best] {
                best = c;
            }
        }
        best as u32
    }
}

impl FedProxSynthetic {
    /// synthetic(α, β) with the paper's 30 devices, 60 features and 10 classes. The paper
    /// uses (0, 0), (0.5, 0.5) and (1, 1).
    pub fn new(alpha: f64, beta: f64, seed: u64) -> Self {
        Self { alpha, beta, iid: false, devices: FEDPROX_DEVICES, dim: FEDPROX_DIM, classes: FEDPROX_CLASSES, seed }
    }

    /// synthetic-IID with the paper's sizes (α and β are 0 and unused, as in the reference).
    pub fn iid(seed: u64) -> Self {
        Self { iid: true, ..Self::new(0.0, 0.0, seed) }
    }

    /// The federation's name, `synthetic(1,1)` or `synthetic-iid`; device `k`'s training
    /// part is named `<name>-devKK` and its test part `<name>-devKK.test`.
    pub fn name(&self) -> String {
        if self.iid { "synthetic-iid".to_string() } else { format!("synthetic({},{})", self.alpha, self.beta) }
    }

    /// Generates the federation: one [`ClientData`] per device, in device order.
    ///
    /// # Errors
    /// [`DataError::Partition`] when `alpha` or `beta` is negative or not finite, or
    /// `devices`, `dim` or `classes` is 0 (or `classes` exceeds `u32::MAX`), or a device's
    /// lognormal draw is too large to allocate (`n_k · dim` overflows `usize`).
    pub fn generate(&self) -> Result<Vec<ClientData>, DataError> {
        self.generate_with_params().map(|(clients, _)| clients)
    }

    /// [`generate`](Self::generate), also returning each device's generating parameters.
    ///
    /// # Errors
    /// As [`generate`](Self::generate).
    pub fn generate_with_params(&self) -> Result<(Vec<ClientData>, Vec<DeviceParams>), DataError> {
        self.validate()?;
        let (k_devices, dim, classes) = (self.devices, self.dim, self.classes);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);

        // 1. Device sizes.
        let sizes = LogNormal::new(SAMPLES_LOG_MEAN, SAMPLES_LOG_SIGMA).expect("constant, valid parameters");
        let samples: Vec<usize> = (0..k_devices)
            // `as` truncates toward zero like numpy's `astype(int)` (draws are positive) and
            // saturates instead of overflowing.
            .map(|_| (sizes.sample(&mut rng) as usize).saturating_add(MIN_DEVICE_SAMPLES))
            .collect();
        if let Some((k, &n)) = samples.iter().enumerate().find(|(_, n)| n.checked_mul(dim).is_none()) {
            return Err(self.invalid(format!("device {k} drew {n} samples, too many to hold")));
        }

        // 2-4. Priors: per device (u_k, B_k, v_k), or one shared model for IID.
        let mut params: Vec<DeviceParams> = if self.iid {
            let w = normals(&mut rng, 0.0, 1.0, dim * classes);
            let b = normals(&mut rng, 0.0, 1.0, classes);
            samples
                .iter()
                .map(|&n| DeviceParams {
                    u: 0.0,
                    b_mean: 0.0,
                    w: w.clone(),
                    b: b.clone(),
                    v: vec![0.0; dim],
                    samples: n,
                })
                .collect()
        } else {
            let u = normals(&mut rng, 0.0, self.alpha, k_devices);
            let big_b = normals(&mut rng, 0.0, self.beta, k_devices);
            let v: Vec<Vec<f64>> = big_b.iter().map(|&bk| normals(&mut rng, bk, 1.0, dim)).collect();
            (0..k_devices)
                .zip(v)
                .map(|(k, v)| DeviceParams {
                    u: u[k],
                    b_mean: big_b[k],
                    w: Vec::new(),
                    b: Vec::new(),
                    v,
                    samples: samples[k],
                })
                .collect()
        };

        // 5. Per device: its model (non-IID), then its samples and labels.
        let std_x: Vec<f64> = (1..=dim).map(|j| (j as f64).powf(COVARIANCE_EXPONENT / 2.0)).collect();
        let mut raw: Vec<(Vec<f32>, Vec<u32>)> = Vec::with_capacity(k_devices);
        for p in &mut params {
            if !self.iid {
                p.w = normals(&mut rng, p.u, 1.0, dim * classes);
                p.b = normals(&mut rng, p.u, 1.0, classes);
            }
            let mut features = Vec::with_capacity(p.samples * dim);
            let mut labels = Vec::with_capacity(p.samples);
            for _ in 0..p.samples {
                let start = features.len();
                features.extend(p.v.iter().zip(&std_x).map(|(&vj, &sj)| {
                    let z: f64 = rng.sample(StandardNormal);
                    (vj + sj * z) as f32
                }));
                labels.push(p.label(&features[start..]));
            }
            raw.push((features, labels));
        }

        // Per-device shuffle, then the first int(0.9 n) samples train, the rest test.
        let name = self.name();
        let width = (k_devices - 1).to_string().len().max(2);
        let mut clients = Vec::with_capacity(k_devices);
        for (k, (features, labels)) in raw.into_iter().enumerate() {
            let n = labels.len();
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            let train_len = (TRAIN_FRACTION * n as f64) as usize;
            let device = format!("{name}-dev{k:0width$}");
            let pick = |rows: &[usize], part: String| {
                let mut x = Vec::with_capacity(rows.len() * dim);
                rows.iter().for_each(|&i| x.extend_from_slice(&features[i * dim..(i + 1) * dim]));
                Dataset::new(part, x, rows.iter().map(|&i| labels[i]).collect(), dim, classes)
            };
            let train = pick(&order[..train_len], device.clone())?;
            let test = pick(&order[train_len..], format!("{device}.test"))?;
            clients.push(ClientData { train, test });
        }
        Ok((clients, params))
    }

    fn validate(&self) -> Result<(), DataError> {
        if !self.iid {
            for (what, v) in [("alpha", self.alpha), ("beta", self.beta)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(self.invalid(format!("{what} {v} must be a finite standard deviation >= 0")));
                }
            }
        }
        if self.devices == 0 || self.dim == 0 || self.classes == 0 {
            return Err(self.invalid(format!(
                "devices ({}), dim ({}) and classes ({}) must all be at least 1",
                self.devices, self.dim, self.classes
            )));
        }
        if u32::try_from(self.classes).is_err() {
            return Err(self.invalid(format!("{} classes do not fit u32 labels", self.classes)));
        }
        if self.dim.checked_mul(self.classes).is_none() {
            return Err(self.invalid(format!("a {}x{} model is too large", self.dim, self.classes)));
        }
        Ok(())
    }

    /// `DataError` has no variant for bad generator parameters; `Partition` (a dataset that
    /// cannot be split across clients) is the closest and carries a free-form message.
    fn invalid(&self, message: String) -> DataError {
        DataError::Partition { name: self.name(), message }
    }
}

/// `count` draws of `N(mean, std²)`, as `mean + std · z` (numpy's `normal(loc, scale)`).
fn normals(rng: &mut ChaCha8Rng, mean: f64, std: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|_| {
            let z: f64 = rng.sample(StandardNormal);
            mean + std * z
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{histogram, mean_tv_from_pooled};
    use super::*;

    fn pooled_labels(c: &ClientData) -> Vec<usize> {
        let (a, b) = (histogram(&c.train), histogram(&c.test));
        a.iter().zip(&b).map(|(x, y)| x + y).collect()
    }

    #[test]
    fn shapes_sizes_names_and_split() {
        let (clients, params) = FedProxSynthetic::new(1.0, 1.0, 0).generate_with_params().unwrap();
        assert_eq!(clients.len(), 30);
        assert_eq!(params.len(), 30);
        for (k, (c, p)) in clients.iter().zip(&params).enumerate() {
            let n = c.len();
            assert_eq!(n, p.samples);
            assert!(n >= MIN_DEVICE_SAMPLES, "device {k} has {n} samples");
            assert_eq!(c.train.len(), (0.9 * n as f64) as usize, "device {k}: int(0.9 n) train");
            assert_eq!(c.test.len(), n - c.train.len());
            assert!(c.test.len() >= 5);
            for d in [&c.train, &c.test] {
                assert_eq!((d.dim, d.classes), (60, 10));
                assert_eq!(d.features.len(), d.len() * 60);
            }
            assert_eq!(p.w.len(), 600);
            assert_eq!((p.b.len(), p.v.len()), (10, 60));
        }
        assert_eq!(clients[7].train.name, "synthetic(1,1)-dev07");
        assert_eq!(clients[7].test.name, "synthetic(1,1)-dev07.test");
        assert_eq!(FedProxSynthetic::new(0.5, 0.5, 0).name(), "synthetic(0.5,0.5)");
        assert_eq!(FedProxSynthetic::iid(0).name(), "synthetic-iid");
    }

    #[test]
    fn same_seed_same_federation_other_seed_other() {
        let a = FedProxSynthetic::new(0.5, 0.5, 42).generate().unwrap();
        let b = FedProxSynthetic::new(0.5, 0.5, 42).generate().unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in [(&x.train, &y.train), (&x.test, &y.test)] {
                assert_eq!(p.name, q.name);
                assert_eq!(p.labels, q.labels);
                let (pb, qb): (Vec<u32>, Vec<u32>) = (
                    p.features.iter().map(|v| v.to_bits()).collect(),
                    q.features.iter().map(|v| v.to_bits()).collect(),
                );
                assert_eq!(pb, qb);
            }
        }
        let c = FedProxSynthetic::new(0.5, 0.5, 43).generate().unwrap();
        let sizes = |v: &[ClientData]| v.iter().map(ClientData::len).collect::<Vec<_>>();
        assert_ne!(sizes(&a), sizes(&c), "another seed draws other device sizes");
    }

    #[test]
    fn labels_are_the_argmax_of_the_device_model() {
        for spec in [FedProxSynthetic::new(1.0, 1.0, 3), FedProxSynthetic::iid(3)] {
            let (clients, params) = spec.generate_with_params().unwrap();
            for (c, p) in clients.iter().zip(&params) {
                for d in [&c.train, &c.test] {
                    for i in 0..d.len() {
                        // Recomputed independently of DeviceParams::label.
                        let x = d.row(i);
                        let logits: Vec<f64> = (0..10)
                            .map(|cl| p.b[cl] + (0..60).map(|j| f64::from(x[j]) * p.w[j * 10 + cl]).sum::<f64>())
                            .collect();
                        let best = logits.iter().enumerate().fold(0, |b, (cl, &v)| if v > logits[b] { cl } else { b });
                        assert_eq!(d.labels[i] as usize, best, "{} sample {i}", d.name);
                    }
                }
            }
        }
    }

    #[test]
    fn iid_devices_share_the_model_and_zero_mean_inputs() {
        let (clients, params) = FedProxSynthetic::iid(5).generate_with_params().unwrap();
        assert!(params.iter().all(|p| p.w == params[0].w && p.b == params[0].b));
        assert!(params.iter().all(|p| p.v.iter().all(|&v| v == 0.0) && p.u == 0.0 && p.b_mean == 0.0));
        // Pooled per-coordinate means: each is N(0, j^-1.2 / N); allow 5 standard errors.
        let total: usize = clients.iter().map(ClientData::len).sum();
        let mut sums = [0.0f64; 60];
        for d in clients.iter().flat_map(|c| [&c.train, &c.test]) {
            for i in 0..d.len() {
                d.row(i).iter().zip(&mut sums).for_each(|(&x, s)| *s += f64::from(x));
            }
        }
        for (j, s) in sums.iter().enumerate() {
            let se = ((j + 1) as f64).powf(-0.6) / (total as f64).sqrt();
            assert!((s / total as f64).abs() < 5.0 * se, "coordinate {j}: mean {} vs se {se}", s / total as f64);
        }
    }

    #[test]
    fn non_iid_inputs_center_on_the_device_mean() {
        let (clients, params) = FedProxSynthetic::new(1.0, 1.0, 9).generate_with_params().unwrap();
        // Devices differ: their models and input means are not shared.
        assert!(params.iter().any(|p| p.w != params[0].w));
        assert!(params.iter().any(|p| p.v != params[0].v));
        for (c, p) in clients.iter().zip(&params) {
            let n = c.len() as f64;
            let mut sums = [0.0f64; 60];
            for d in [&c.train, &c.test] {
                for i in 0..d.len() {
                    d.row(i).iter().zip(&mut sums).for_each(|(&x, s)| *s += f64::from(x));
                }
            }
            for (j, s) in sums.iter().enumerate() {
                let se = ((j + 1) as f64).powf(-0.6) / n.sqrt();
                // 6 standard errors: 1800 coordinate checks must all pass.
                assert!((s / n - p.v[j]).abs() < 6.0 * se, "{} coordinate {j}", c.train.name);
            }
        }
    }

    #[test]
    fn heterogeneous_label_mixes_differ_far_more_than_iid() {
        for seed in [0, 1] {
            let tv = |spec: FedProxSynthetic| {
                let clients = spec.generate().unwrap();
                mean_tv_from_pooled(&clients.iter().map(pooled_labels).collect::<Vec<_>>())
            };
            let (non_iid, iid) = (tv(FedProxSynthetic::new(1.0, 1.0, seed)), tv(FedProxSynthetic::iid(seed)));
            assert!(non_iid > 0.4, "seed {seed}: synthetic(1,1) mean TV {non_iid}");
            assert!(iid < 0.2, "seed {seed}: synthetic-iid mean TV {iid}");
            assert!(non_iid > 2.0 * iid, "seed {seed}: {non_iid} vs {iid}");
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for spec in [
            FedProxSynthetic::new(-1.0, 1.0, 0),
            FedProxSynthetic::new(1.0, f64::NAN, 0),
            FedProxSynthetic { devices: 0, ..FedProxSynthetic::new(1.0, 1.0, 0) },
            FedProxSynthetic { dim: 0, ..FedProxSynthetic::iid(0) },
            FedProxSynthetic { classes: 0, ..FedProxSynthetic::iid(0) },
        ] {
            let e = spec.generate().unwrap_err();
            assert!(matches!(e, DataError::Partition { .. }), "{e}");
        }
        // Smaller or larger federations than the paper's are fine.
        let small = FedProxSynthetic { devices: 3, dim: 5, classes: 2, ..FedProxSynthetic::new(0.0, 0.0, 1) };
        let clients = small.generate().unwrap();
        assert_eq!(clients.len(), 3);
        assert!(clients.iter().all(|c| c.train.dim == 5 && c.train.classes == 2));
        assert_eq!(clients[2].train.name, "synthetic(0,0)-dev02");
    }
}
