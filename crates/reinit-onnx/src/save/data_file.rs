//! The new external-data file: its name (alternating `<file>.data` /
//! `<file>.1.data`, so a crash between the two renames leaves the old model
//! with its own data), its layout (each source file copied whole at a
//! 4096-aligned base), and the writer that streams it with edited tensors'
//! ranges replaced, releasing the input's pages as it goes.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::edits::{DeferredValues, Edits, ValueSink};
use super::{SaveOptions, release, same_file};
use crate::atomic::{PendingFile, ReadyFile};
use crate::codec::{self, Storage};
use crate::error::Error;
use crate::external;
use crate::model::{Model, TensorId};

/// How external tensors are laid out in the new data file: each source file is
/// copied whole, at a 4096-aligned base, so tensors keep their alignment.
pub(crate) struct DataLayout {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    /// The data file of the model being replaced, removed once the new model
    /// is in place (the new one is written under another name; see
    /// `default_data_name`).
    pub(crate) stale: Option<PathBuf>,
    /// Source location → base offset in the new file, in first-use order.
    pub(crate) bases: Vec<(String, u64)>,
}

const DATA_ALIGNMENT: u64 = 4096;

impl Model {
    pub(crate) fn data_layout(
        &self,
        path: &Path,
        options: &SaveOptions,
    ) -> Result<Option<DataLayout>, Error> {
        if !self.has_external_data() {
            return Ok(None);
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Refused {
                path: path.to_path_buf(),
                reason: "the output has no file name".into(),
            })?
            .to_string_lossy();
        let (name, mut stale) = match &options.data_file {
            Some(name) => (name.clone(), None),
            None => default_data_name(path, &file_name),
        };
        // Never remove the input's own data, unless the input is the model
        // being replaced (in place).
        if let (Some(old), Some(base)) = (&stale, self.base_dir())
            && !same_file(path, self.path())
            && self
                .external
                .locations()
                .any(|l| same_file(old, &external::resolved(base, l)))
        {
            stale = None;
        }
        external::check_location(&name).map_err(|reason| Error::Refused {
            path: path.to_path_buf(),
            reason: format!("data file name '{name}': {reason}"),
        })?;
        let data_path = path.with_file_name(&name);
        if same_file(&data_path, path) {
            return Err(Error::Refused {
                path: data_path,
                reason: "the data file would overwrite the model".into(),
            });
        }
        let mut bases: Vec<(String, u64)> = Vec::new();
        let mut next = 0u64;
        for entry in self.tensors() {
            if let Storage::External(reference) = &entry.storage
                && !bases.iter().any(|(l, _)| *l == reference.location)
            {
                let len = self
                    .external
                    .get(&reference.location)
                    .map_or(0, |m| m.len() as u64);
                bases.push((reference.location.clone(), next));
                next = (next + len).div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT;
            }
        }
        Ok(Some(DataLayout {
            name,
            path: data_path,
            stale,
            bases,
        }))
    }

    /// Streams the new data file: each source file copied in turn, edited
    /// tensors' ranges replaced. Memory use is bounded by one tensor.
    pub(crate) fn write_data(
        &self,
        layout: &DataLayout,
        edits: &Edits,
        source: &dyn DeferredValues,
    ) -> Result<(ReadyFile, u64), Error> {
        let mut out = PendingFile::create(&layout.path)?;
        for (location, base) in &layout.bases {
            let padding = base - out.written();
            out.write(&vec![0u8; padding as usize])?;
            let Some(map) = self.external.get(location) else {
                continue;
            };
            let mut replaced: Vec<(Range<usize>, TensorId)> = self
                .ids()
                .filter(|&id| edits.contains(id))
                .filter_map(|id| match &self.tensor(id).storage {
                    Storage::External(r) if r.location == *location => {
                        external::byte_range(r, map.len() as u64)
                            .ok()
                            .map(|range| (range, id))
                    }
                    _ => None,
                })
                .collect();
            replaced.sort_by_key(|(range, _)| range.start);
            let mut pos = 0;
            for (range, id) in replaced {
                if range.start < pos {
                    return Err(self.tensor_error(
                        self.tensor(id),
                        "overlaps another tensor's external data".into(),
                    ));
                }
                copy_and_release(&mut out, map, pos..range.start)?;
                if let Some(payload) = edits.payload(id) {
                    out.write(payload)?;
                    pos = range.end;
                    continue;
                }
                match edits.get(id) {
                    Some(values) => self.write_encoded(&mut out, id, values)?,
                    None => {
                        if !self.tensor(id).dtype.is_float() {
                            return Err(self.tensor_error(
                                self.tensor(id),
                                format!("cannot rewrite a {} tensor", self.tensor(id).dtype),
                            ));
                        }
                        let mut sink = ValueSink {
                            model: self,
                            id,
                            out: &mut out,
                            values: 0,
                            scratch: Vec::new(),
                        };
                        source.write_values(id, &mut sink)?;
                        sink.finish()?;
                    }
                }
                pos = range.end;
            }
            copy_and_release(&mut out, map, pos..map.len())?;
        }
        let written = out.written();
        Ok((out.finish()?, written))
    }

    /// Streams the little-endian encoding of `values` in chunks, so no second
    /// copy of a large tensor is built.
    fn write_encoded(
        &self,
        out: &mut PendingFile,
        id: TensorId,
        values: &[f64],
    ) -> Result<(), Error> {
        self.check_values(id, values)?;
        let entry = self.tensor(id);
        for chunk in values.chunks(1 << 16) {
            let bytes = codec::encode(chunk, entry.dtype, &Storage::Raw)
                .map_err(|reason| self.tensor_error(entry, reason))?;
            out.write(&bytes)?;
        }
        Ok(())
    }
}

/// The data file name for output `path`: `<file>.data`, unless the model
/// being replaced at `path` refers to that name, then `<file>.1.data` (and
/// back again the next time). Renaming the data file and then the model is
/// two steps; writing the new data under a name the old model does not use
/// means a crash between them leaves the old model with its own data intact.
/// Returns the name and the old data file to remove after the new model is
/// in place.
fn default_data_name(path: &Path, file_name: &str) -> (String, Option<PathBuf>) {
    let primary = format!("{file_name}.data");
    let alternate = format!("{file_name}.1.data");
    let [uses_primary, uses_alternate] = refers_to(path, [&primary, &alternate]);
    match (uses_primary, uses_alternate) {
        (false, uses_alternate) => {
            let stale = uses_alternate.then(|| path.with_file_name(&alternate));
            (primary, stale)
        }
        (true, false) => (alternate, Some(path.with_file_name(&primary))),
        (true, true) => (primary, None),
    }
}

/// For each name, whether the file at `path` (a model about to be replaced)
/// contains it as an external-data location and the file exists beside it.
/// A byte search over one read-only map: a false positive only picks the
/// other name.
fn refers_to<const N: usize>(path: &Path, names: [&str; N]) -> [bool; N] {
    let exists = names.map(|name| path.with_file_name(name).exists());
    let Ok(file) = std::fs::File::open(path) else {
        return [false; N];
    };
    if !exists.contains(&true) || !file.metadata().is_ok_and(|m| m.is_file()) {
        return [false; N];
    }
    // SAFETY: read-only map of a file we only search; a concurrent writer
    // can at worst change the answer, which only picks the other name.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return [false; N];
    };
    let mut found = [false; N];
    for (k, name) in names.iter().enumerate() {
        found[k] = exists[k] && memchr::memmem::find(&map, name.as_bytes()).is_some();
    }
    found
}

/// Copies `range` of a mapped data file in 64 MiB pieces, telling the kernel
/// after each that we are done with those pages, so resident memory stays
/// bounded while gigabytes stream through.
fn copy_and_release(
    out: &mut PendingFile,
    map: &memmap2::Mmap,
    range: Range<usize>,
) -> Result<(), Error> {
    const PIECE: usize = 64 << 20;
    let mut start = range.start;
    while start < range.end {
        let end = (start + PIECE).min(range.end);
        out.write(&map[start..end])?;
        release(map, start..end);
        start = end;
    }
    Ok(())
}
