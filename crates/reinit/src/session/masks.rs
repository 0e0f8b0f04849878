//! EOI masks (which weights stay trainable), kept in each weight's stored
//! layout and written as safetensors for `--mask-out`.

use std::path::Path;

use crate::error::Error;

/// An EOI mask in the weight's stored layout.
#[derive(Debug, Clone)]
pub struct Mask {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<bool>,
}

/// Writes EOI masks as safetensors (u8, 1 = trainable), keyed by initializer
/// name, atomically (a temporary file renamed over `path`).
pub fn write_masks(masks: &[Mask], path: &Path) -> Result<(), Error> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = masks
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.shape.clone(),
                m.values.iter().map(|&v| v as u8).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::U8, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Internal(format!("mask '{name}': {e}")))
        })
        .collect::<Result<_, _>>()?;
    let serialized =
        safetensors::serialize(views, None).map_err(|e| Error::Internal(format!("masks: {e}")))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut temp, &serialized).map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
