//! The weights' file format: safetensors with one little-endian f32 tensor per layout
//! entry, named as the layout names them (what PyTorch's `safetensors` loads).

use super::CheckpointError;
use crate::model::TensorLayout;
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorInfo};
use std::collections::HashMap;
use std::path::Path;

/// The head of a safetensors file holding `layout`'s tensors as little-endian f32, stored
/// in layout order: the 8-byte header length, then the JSON header padded to 8 bytes. The
/// whole file is this head followed by the parameters' little-endian bytes as they lie in
/// the model's buffer, so a checkpoint is written straight from that buffer, without an
/// encoded copy of the model (safetensors' own `serialize` sorts tensors by name and
/// builds the whole file in memory: two copies, 2 GB for a 1 GB model).
///
/// Readers find tensors through the offsets in the header, so the order is theirs to
/// ignore; safetensors checks that the offsets tile the data exactly.
///
/// # Errors
/// [`CheckpointError::Format`] when the layout cannot be described (a shape too large).
pub fn safetensors_head(layout: &TensorLayout, metadata: HashMap<String, String>) -> Result<Vec<u8>, CheckpointError> {
    let mut tensors = Vec::with_capacity(layout.tensors.len());
    let mut offset = 0usize;
    for t in &layout.tensors {
        let bytes = t.numel() * 4;
        let info = TensorInfo { dtype: Dtype::F32, shape: t.shape.clone(), data_offsets: (offset, offset + bytes) };
        tensors.push((t.name.clone(), info));
        offset += bytes;
    }
    let format = |e: String| CheckpointError::Format(format!("safetensors header: {e}"));
    let header = Metadata::new(Some(metadata), tensors).map_err(|e| format(e.to_string()))?;
    let mut json = serde_json::to_vec(&header).map_err(|e| format(e.to_string()))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut head = Vec::with_capacity(8 + json.len());
    head.extend_from_slice(&(json.len() as u64).to_le_bytes());
    head.extend_from_slice(&json);
    Ok(head)
}

/// Refuses a parameter count that is not the layout's.
///
/// # Errors
/// [`CheckpointError::Layout`].
pub fn check_len(layout: &TensorLayout, len: usize) -> Result<(), CheckpointError> {
    if layout.total() != len {
        return Err(CheckpointError::Layout {
            path: "<memory>".into(),
            reason: format!("{len} values for a layout of {}", layout.total()),
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Architecture, ModelSpec};

    fn layout() -> TensorLayout {
        ModelSpec::new("mlp", Architecture::Mlp { input_dim: 5, hidden: vec![3], classes: 2 }).unwrap().layout()
    }

    #[test]
    fn the_layout_ordered_file_reads_back_in_safetensors_and_here() {
        let layout = layout();
        let params: Vec<f32> = (0..layout.total()).map(|i| i as f32 * 0.5 - 3.0).collect();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let mut file = safetensors_head(&layout, meta).unwrap();
        file.extend_from_slice(&fedra_proto::chunking::encode_le(&params));
        // safetensors itself accepts it, and each tensor holds its own slice of the layout.
        let st = SafeTensors::deserialize(&file).unwrap();
        let mut offset = 0;
        for t in &layout.tensors {
            let view = st.tensor(&t.name).unwrap();
            assert_eq!(view.shape(), t.shape.as_slice());
            let want = fedra_proto::chunking::encode_le(&params[offset..offset + t.numel()]);
            assert_eq!(view.data(), want.as_slice(), "{}", t.name);
            offset += t.numel();
        }
        let (_, header) = SafeTensors::read_metadata(&file).unwrap();
        assert_eq!(header.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
        assert_eq!(decode_safetensors(&file, &layout, Path::new("m")).unwrap(), params);
        // The head is 8-byte aligned, so the data (the model's own bytes) follows it as is.
        let head = safetensors_head(&layout, HashMap::new()).unwrap();
        assert_eq!(head.len() % 8, 0);
    }

    #[test]
    fn a_wrong_parameter_count_is_refused() {
        let err = check_len(&layout(), 3).unwrap_err();
        assert!(err.to_string().contains("3 values for a layout of"), "{err}");
    }
}
