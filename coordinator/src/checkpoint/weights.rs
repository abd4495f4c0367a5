//! The weights' file format: safetensors with one little-endian f32 tensor per layout
//! entry, named as the layout names them (what PyTorch's `safetensors` loads).

use super::CheckpointError;
use crate::model::TensorLayout;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Encodes `params` as a safetensors file with one tensor per layout entry.
///
/// # Errors
/// [`CheckpointError::Layout`] when `params` does not have the layout's length.
pub fn encode_safetensors(
    layout: &TensorLayout,
    params: &[f32],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    if layout.total() != params.len() {
        return Err(CheckpointError::Layout {
            path: "<memory>".into(),
            reason: format!("{} values for a layout of {}", params.len(), layout.total()),
        });
    }
    let mut encoded = Vec::with_capacity(layout.tensors.len());
    let mut offset = 0usize;
    for t in &layout.tensors {
        let n = t.numel();
        encoded.push((t.name.clone(), t.shape.clone(), fedra_proto::chunking::encode_le(&params[offset..offset + n])));
        offset += n;
    }
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| CheckpointError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Format(e.to_string()))
}

/// Decodes a safetensors file into a flat vector laid out by `layout`, checking that every
/// tensor is present as f32 with the expected shape.
///
/// # Errors
/// [`CheckpointError::Format`] or [`CheckpointError::Layout`].
pub fn decode_safetensors(bytes: &[u8], layout: &TensorLayout, path: &Path) -> Result<Vec<f32>, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format(e.to_string()))?;
    let layout_err = |reason: String| CheckpointError::Layout { path: path.display().to_string(), reason };
    let mut out = vec![0.0f32; layout.total()];
    let mut offset = 0usize;
    for t in &layout.tensors {
        let view = st.tensor(&t.name).map_err(|_| layout_err(format!("tensor {:?} is missing", t.name)))?;
        let shape: Vec<usize> = view.shape().to_vec();
        if view.dtype() != Dtype::F32 || shape != t.shape {
            return Err(layout_err(format!(
                "tensor {:?} is {:?}{:?}, expected F32{:?}",
                t.name,
                view.dtype(),
                shape,
                t.shape
            )));
        }
        let n = t.numel();
        fedra_proto::chunking::decode_le_into(view.data(), &mut out[offset..offset + n]);
        offset += n;
    }
    if st.len() != layout.tensors.len() {
        return Err(layout_err(format!("{} tensors, expected {}", st.len(), layout.tensors.len())));
    }
    Ok(out)
}
