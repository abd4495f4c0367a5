//! A verified checkpoint loaded for inference: the burn network of its manifest's model,
//! its drift reference, and batched prediction.

use crate::models::{Network, read_f32};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use fedra_pki::checkpoint::ManifestView;
use fedra_types::drift::DataReference;
use std::sync::Mutex;

/// One loaded checkpoint. Immutable once built: a swap replaces the whole value, and a
/// request in flight keeps the one it started with.
pub struct LoadedModel {
    pub checkpoint: String,
    pub input_dim: usize,
    pub classes: usize,
    /// The training data's statistics, when the run released them (not for a private run).
    pub reference: Option<DataReference>,
    /// burn modules are not `Sync`; predictions on one model take turns.
    network: Mutex<Network>,
    device: Device,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel").field("checkpoint", &self.checkpoint).finish_non_exhaustive()
    }
}

/// The flat parameter vector of a verified safetensors file, in layout order.
fn flat_params(view: &ManifestView, weights: &[u8]) -> Result<Vec<f32>, String> {
    let st = safetensors::SafeTensors::deserialize(weights).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(view.layout.total());
    for t in &view.layout.tensors {
        let tensor = st.tensor(&t.name).map_err(|_| format!("tensor {:?} is missing", t.name))?;
        out.extend(tensor.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
    Ok(out)
}

impl LoadedModel {
    /// Builds the network of a verified checkpoint on `device`. `reference_json` is the
    /// region copy's `reference.json` (already checked against the signed manifest), or
    /// empty.
    ///
    /// # Errors
    /// A file that does not fit its manifest's model, or an unreadable reference.
    pub fn load(view: &ManifestView, weights: &[u8], reference_json: &str, device: &Device) -> Result<Self, String> {
        let params = flat_params(view, weights)?;
        let architecture = view.model.architecture();
        let network = Network::load(architecture, &params, device).map_err(|e| e.to_string())?;
        let reference = if reference_json.is_empty() {
            None
        } else {
            let r: DataReference = serde_json::from_str(reference_json).map_err(|e| format!("drift reference: {e}"))?;
            r.validate(architecture.input_dim(), architecture.classes())
                .map_err(|e| format!("drift reference: {e}"))?;
            Some(r)
        };
        Ok(Self {
            checkpoint: view.checkpoint_id.clone(),
            input_dim: architecture.input_dim(),
            classes: architecture.classes(),
            reference,
            network: Mutex::new(network),
            device: device.clone(),
        })
    }

    /// The most probable class and the softmax probabilities of each of `rows` input rows
    /// (`inputs` holds rows × input_dim values, row-major). Blocking: call from a blocking
    /// thread.
    pub fn predict(&self, inputs: &[f32], rows: usize) -> (Vec<u32>, Vec<f32>) {
        let x = Tensor::<2>::from_data(TensorData::new(inputs.to_vec(), [rows, self.input_dim]), &self.device);
        let network = self.network.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let probabilities = read_f32(softmax(network.forward(x), 1).into_data());
        drop(network);
        let predictions = probabilities
            .chunks_exact(self.classes)
            .map(|row| {
                let mut best = 0;
                for (k, &p) in row.iter().enumerate() {
                    if p > row[best] {
                        best = k;
                    }
                }
                best as u32
            })
            .collect();
        (predictions, probabilities)
    }
}
