//! Byzantine-robust aggregation in bounded memory (the rules are described in
//! [`fedra_types::aggregator`]).
//!
//! Median, trimmed mean and Multi-Krum need every update of the round at once, which the
//! streaming mean never holds. The coordinator keeps its memory bound anyway:
//!
//! - each verified update is appended to the round's **scratch file** (an unlinked
//!   temporary file: the operating system reclaims it when the round ends, also after a
//!   crash), at its index's offset, so a failed or partial write is overwritten by the next
//!   upload and never counted; the staging buffer goes back to the pool at once;
//! - the aggregate is computed in **coordinate blocks**: for block `[a, b)` every update's
//!   slice is read into one buffer of `n × (b − a)` values, the rule runs per coordinate and
//!   the block of the new model is written over the old model's block (which is read first,
//!   so no second model-sized buffer exists).
//!
//! Memory: the model (`f32`) plus one block buffer of at most `budget_bytes` (the block is
//! `budget / (4·n)` coordinates, at least [`MIN_BLOCK`]), plus Multi-Krum's `n × n` distance
//! matrix (`f64`). The running `f64` sum of the mean is not allocated at all, so a robust
//! round needs less memory than a FedAvg round. Disk: `n × model × 4` bytes per round in
//! flight, in the coordinator's scratch directory.
//!
//! Cost: median and trimmed mean are O(n) per coordinate (two selections, no sort);
//! Multi-Krum's distances are O(n² × model); norm bounding reads the file twice.

use super::AggregationError;
use fedra_types::aggregator::Aggregator;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Default byte budget of the block buffer (what the staging pool would hold).
pub const DEFAULT_BLOCK_BUDGET_BYTES: usize = 32 << 20;

/// Smallest block, in coordinates, whatever the budget and the number of updates: below
/// this the per-read overhead dominates.
pub const MIN_BLOCK: usize = 1024;

/// The round's verified updates, spilled to disk in arrival order.
#[derive(Debug)]
pub struct SpillStage {
    file: File,
    len: usize,
    weights: Vec<f64>,
}

/// What the rule did with individual updates, by arrival index (for the log and audit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RobustOutcome {
    /// Updates left out of the aggregate (Multi-Krum's unselected).
    pub excluded: Vec<usize>,
    /// Updates whose delta was scaled down, with the factor (norm bounding).
    pub scaled: Vec<(usize, f64)>,
}

impl SpillStage {
    /// An empty stage for updates of `len` values, in a fresh unlinked file in `dir`.
    ///
    /// # Errors
    /// The scratch file cannot be created.
    pub fn new(dir: &Path, len: usize) -> Result<Self, AggregationError> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            AggregationError::Scratch(format!("cannot create a scratch file in {}: {e}", dir.display()))
        })?;
        Ok(Self { file, len, weights: Vec::new() })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Updates appended so far.
    pub fn count(&self) -> usize {
        self.weights.len()
    }

    /// Appends a verified update with its FedAvg weight (its sample count).
    ///
    /// # Errors
    /// Wrong length, a non-positive weight, or a write failure; the stage is unchanged
    /// then (the next update overwrites whatever was partially written).
    pub fn append(&mut self, update: &[f32], weight: f64) -> Result<(), AggregationError> {
        if update.len() != self.len {
            return Err(AggregationError::Length { expected: self.len, got: update.len() });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(AggregationError::Weight(weight));
        }
        let offset = (self.weights.len() * self.len * 4) as u64;
        self.file
            .write_all_at(as_bytes(update), offset)
            .map_err(|e| AggregationError::Scratch(format!("cannot spill update {}: {e}", self.weights.len())))?;
        self.weights.push(weight);
        Ok(())
    }

    /// Reads coordinates `[start, start + width)` of every update into `buf`
    /// (update-major: update `i`'s slice at `buf[i·width..]`).
    fn read_block(&self, start: usize, width: usize, buf: &mut [f32]) -> Result<(), AggregationError> {
        for i in 0..self.weights.len() {
            let offset = ((i * self.len + start) * 4) as u64;
            self.file
                .read_exact_at(as_bytes_mut(&mut buf[i * width..(i + 1) * width]), offset)
                .map_err(|e| AggregationError::Scratch(format!("cannot read back update {i}: {e}")))?;
        }
        Ok(())
    }

    /// Applies `rule` to the spilled updates. `model` holds the round's global model on
    /// entry and the aggregate on return (its allocation is reused).
    ///
    /// # Errors
    /// Nothing was appended, `model` has the wrong length, the rule's parameters do not fit
    /// this round's count, or the scratch file fails.
    pub fn aggregate(
        &self,
        rule: &Aggregator,
        mut model: Vec<f32>,
        budget_bytes: usize,
    ) -> Result<(Vec<f32>, RobustOutcome), AggregationError> {
        let n = self.weights.len();
        if n == 0 {
            return Err(AggregationError::Empty);
        }
        if model.len() != self.len {
            return Err(AggregationError::Length { expected: self.len, got: model.len() });
        }
        let block = (budget_bytes / (4 * n)).max(MIN_BLOCK).min(self.len.max(1));
        let mut buf = vec![0f32; n * block];
        let mut outcome = RobustOutcome::default();
        match *rule {
            Aggregator::Mean => {
                let total: f64 = self.weights.iter().sum();
                let w: Vec<f64> = self.weights.iter().map(|w| w / total).collect();
                self.blocks(&mut model, &mut buf, block, |col, _| weighted_mean(col, &w))?;
            }
            Aggregator::Median => {
                let mut col = vec![0f32; n];
                self.blocks(&mut model, &mut buf, block, |c, _| {
                    col.copy_from_slice(c);
                    median(&mut col)
                })?;
            }
            Aggregator::TrimmedMean { trim } => {
                let cut = trim_count(trim, n)?;
                let mut col = vec![0f32; n];
                self.blocks(&mut model, &mut buf, block, |c, _| {
                    col.copy_from_slice(c);
                    trimmed_mean(&mut col, cut)
                })?;
            }
            Aggregator::MultiKrum { byzantine, select } => {
                let f = byzantine as usize;
                if n < 2 * f + 3 {
                    return Err(AggregationError::Rule(format!(
                        "multi_krum with byzantine = {f} needs at least {} updates, the round has {n}",
                        2 * f + 3
                    )));
                }
                let m = if select == 0 { n - f } else { (select as usize).min(n - f) };
                let distances = self.pairwise_distances(&mut buf, block)?;
                let chosen = krum_select(&distances, n, f, m);
                outcome.excluded = (0..n).filter(|i| !chosen.contains(i)).collect();
                let w: Vec<f64> = (0..n).map(|i| if chosen.contains(&i) { 1.0 / m as f64 } else { 0.0 }).collect();
                self.blocks(&mut model, &mut buf, block, |col, _| weighted_mean(col, &w))?;
            }
            Aggregator::NormBound { factor } => {
                let norms = self.delta_norms(&model, &mut buf, block)?;
                let mut sorted = norms.clone();
                let bound = factor * median_f64(&mut sorted);
                let scale: Vec<f64> = norms.iter().map(|&d| if d > bound { bound / d } else { 1.0 }).collect();
                outcome.scaled = scale.iter().enumerate().filter(|(_, s)| **s < 1.0).map(|(i, s)| (i, *s)).collect();
                let total: f64 = self.weights.iter().sum();
                let w: Vec<f64> = self.weights.iter().zip(&scale).map(|(w, s)| w * s / total).collect();
                // g + Σ wᵢ·sᵢ·(xᵢ − g) / Σ wᵢ
                self.blocks(&mut model, &mut buf, block, |col, g| {
                    let g = f64::from(g);
                    let step: f64 = col.iter().zip(&w).map(|(x, w)| w * (f64::from(*x) - g)).sum();
                    (g + step) as f32
                })?;
            }
        }
        Ok((model, outcome))
    }

    /// Calls `f(start, width, slices)` for every block `[start, start + width)` of
    /// coordinates, with the n updates' slices read into `buf` (update-major).
    fn each_block(
        &self,
        buf: &mut [f32],
        block: usize,
        mut f: impl FnMut(usize, usize, &[f32]),
    ) -> Result<(), AggregationError> {
        let n = self.weights.len();
        let mut start = 0;
        while start < self.len {
            let width = block.min(self.len - start);
            self.read_block(start, width, &mut buf[..n * width])?;
            f(start, width, &buf[..n * width]);
            start += width;
        }
        Ok(())
    }

    /// Runs `per_coordinate(column, global value)` over every coordinate, block by block,
    /// writing its result over the model's coordinate. The column is the n updates' values.
    fn blocks(
        &self,
        model: &mut [f32],
        buf: &mut [f32],
        block: usize,
        mut per_coordinate: impl FnMut(&[f32], f32) -> f32,
    ) -> Result<(), AggregationError> {
        let mut col = vec![0f32; self.weights.len()];
        self.each_block(buf, block, |start, width, slices| {
            for j in 0..width {
                for (i, c) in col.iter_mut().enumerate() {
                    *c = slices[i * width + j];
                }
                model[start + j] = per_coordinate(&col, model[start + j]);
            }
        })
    }

    /// ‖xᵢ − g‖₂ of every update.
    fn delta_norms(&self, global: &[f32], buf: &mut [f32], block: usize) -> Result<Vec<f64>, AggregationError> {
        let mut sq = vec![0f64; self.weights.len()];
        self.each_block(buf, block, |start, width, slices| {
            let g = &global[start..start + width];
            for (s, x) in sq.iter_mut().zip(slices.chunks_exact(width)) {
                *s += x.iter().zip(g).map(|(x, g)| (f64::from(*x) - f64::from(*g)).powi(2)).sum::<f64>();
            }
        })?;
        Ok(sq.into_iter().map(f64::sqrt).collect())
    }

    /// Squared Euclidean distances between every pair of updates, row-major `n × n`.
    fn pairwise_distances(&self, buf: &mut [f32], block: usize) -> Result<Vec<f64>, AggregationError> {
        let n = self.weights.len();
        let mut d = vec![0f64; n * n];
        self.each_block(buf, block, |_, width, slices| {
            let rows: Vec<&[f32]> = slices.chunks_exact(width).collect();
            for i in 0..n {
                for j in i + 1..n {
                    let s: f64 = rows[i].iter().zip(rows[j]).map(|(x, y)| f64::from(x - y).powi(2)).sum();
                    d[i * n + j] += s;
                    d[j * n + i] += s;
                }
            }
        })?;
        Ok(d)
    }
}

/// The values' in-memory bytes (little-endian on every target fedra builds for), written
/// and read back by the same process.
fn as_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn as_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(v)
}

/// ⌊trim·n⌋, refused when nothing would remain.
fn trim_count(trim: f64, n: usize) -> Result<usize, AggregationError> {
    let cut = (trim * n as f64).floor() as usize;
    if !(0.0..0.5).contains(&trim) || 2 * cut >= n {
        return Err(AggregationError::Rule(format!("trimmed_mean with trim = {trim} leaves nothing of {n} updates")));
    }
    Ok(cut)
}

fn weighted_mean(col: &[f32], w: &[f64]) -> f32 {
    col.iter().zip(w).map(|(x, w)| w * f64::from(*x)).sum::<f64>() as f32
}

/// The median of `col` (the mean of the two middle values for an even count); reorders
/// `col`. O(n).
pub fn median(col: &mut [f32]) -> f32 {
    let n = col.len();
    let mid = n / 2;
    let (lower, m, _) = col.select_nth_unstable_by(mid, f32::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        return m;
    }
    let below = lower.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    ((f64::from(below) + f64::from(m)) / 2.0) as f32
}

fn median_f64(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if n % 2 == 1 { m } else { (lower.iter().copied().fold(f64::NEG_INFINITY, f64::max) + m) / 2.0 }
}

/// The mean of `col` without its `cut` smallest and `cut` largest values; reorders `col`.
/// O(n): two selections instead of a sort.
pub fn trimmed_mean(col: &mut [f32], cut: usize) -> f32 {
    let n = col.len();
    debug_assert!(2 * cut < n);
    if cut > 0 {
        // Afterwards [0, cut) holds the cut smallest...
        col.select_nth_unstable_by(cut - 1, f32::total_cmp);
        // ...and within the rest, [n − cut, n) the cut largest.
        col[cut..].select_nth_unstable_by(n - 2 * cut, f32::total_cmp);
    }
    let kept = &col[cut..n - cut];
    (kept.iter().map(|x| f64::from(*x)).sum::<f64>() / kept.len() as f64) as f32
}

/// Multi-Krum's choice: the `m` updates with the lowest scores, where an update's score is
/// the sum of its squared distances to its `n − f − 2` nearest others. Ties go to the lower
/// index, so the choice does not depend on anything but the distances.
pub fn krum_select(distances: &[f64], n: usize, f: usize, m: usize) -> Vec<usize> {
    let nearest = n - f - 2;
    let mut scores: Vec<(f64, usize)> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| distances[i * n + j]).collect();
            row.sort_by(f64::total_cmp);
            (row[..nearest].iter().sum(), i)
        })
        .collect();
    scores.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scores[..m].iter().map(|s| s.1).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests;
