//! Saving: splice new payloads into the original bytes.
//!
//! The rule (ARCHITECTURE.md, "Fidelity"): the output is the input's bytes with
//! only (a) the payload fields of edited tensors, (b) the external-data entries
//! that must point at the new data file, (c) the `metadata_props` we add, and
//! (d) the length prefixes of the messages enclosing (a)–(c) replaced. Nothing
//! is re-encoded, so unknown fields, field order and non-canonical encodings
//! survive, and a model saved without edits is byte-identical.
//!
//! This module orchestrates a save (target checks, data file then model,
//! commits in that order); [`edits`] is the protocol with the caller,
//! [`splice`] computes and writes the model's bytes, [`data_file`] the
//! external data. How a tensor's values are encoded in its storage is asked
//! of `codec`.

mod data_file;
mod edits;
mod splice;

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::atomic::PendingFile;
use crate::codec::Storage;
use crate::error::Error;
use crate::external;
use crate::model::Model;
use edits::NoDeferred;
pub use edits::{DeferredValues, Edits, Payload, ValueSink};

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Replace an existing output file (other than the input).
    pub overwrite: bool,
    /// Allow the output to be the input file itself.
    pub in_place: bool,
    /// File name of the external data written beside the output; default
    /// `<output file name>.data`. Only used when the model has external data.
    pub data_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SaveReport {
    pub model_path: PathBuf,
    pub data_path: Option<PathBuf>,
    pub bytes_written: u64,
    pub tensors_changed: usize,
}

impl Model {
    /// Writes the model with `edits` applied to `path`, atomically.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        edits: &Edits,
        options: &SaveOptions,
    ) -> Result<SaveReport, Error> {
        self.save_deferred(path, edits, &NoDeferred, options)
    }

    /// As [`Model::save`], asking `source` for the values of deferred tensors
    /// as the data file is written (one tensor in memory at a time).
    pub fn save_deferred(
        &self,
        path: impl AsRef<Path>,
        edits: &Edits,
        source: &dyn DeferredValues,
        options: &SaveOptions,
    ) -> Result<SaveReport, Error> {
        let path = path.as_ref();
        self.check_target(path, options)?;
        let layout = self.data_layout(path, options)?;

        let data = match &layout {
            Some(layout) => Some(self.write_data(layout, edits, source)?),
            None => None,
        };
        let mut model = PendingFile::create(path)?;
        self.spliced(edits, layout.as_ref(), source, &mut model)?;
        let model_bytes = model.written();
        let model = model.finish()?;
        let data_bytes = data.as_ref().map_or(0, |(_, n)| *n);
        let data_path = match data {
            Some((ready, _)) => Some(ready.commit()?),
            None => None,
        };
        fault::before_model_commit();
        let model_path = model.commit()?;
        if let Some(stale) = layout.and_then(|l| l.stale) {
            // Best effort: the new model no longer refers to it.
            let _ = std::fs::remove_file(stale);
        }
        Ok(SaveReport {
            model_path,
            data_path,
            bytes_written: model_bytes + data_bytes,
            tensors_changed: edits.len(),
        })
    }

    /// The edited model as bytes, for models without external data.
    pub fn to_bytes(&self, edits: &Edits) -> Result<Vec<u8>, Error> {
        self.to_bytes_deferred(edits, &NoDeferred)
    }

    /// As [`Model::to_bytes`], asking `source` for the values of deferred tensors.
    pub fn to_bytes_deferred(
        &self,
        edits: &Edits,
        source: &dyn DeferredValues,
    ) -> Result<Vec<u8>, Error> {
        if self.has_external_data() {
            return Err(Error::Refused {
                path: self.path().to_path_buf(),
                reason: "a model with external data must be saved to a file".into(),
            });
        }
        let mut out = Vec::with_capacity(self.bytes().len());
        self.spliced(edits, None, source, &mut out)?;
        Ok(out)
    }

    pub fn has_external_data(&self) -> bool {
        self.tensors()
            .iter()
            .any(|t| matches!(t.storage, Storage::External(_)))
    }

    fn check_target(&self, path: &Path, options: &SaveOptions) -> Result<(), Error> {
        let refuse = |reason: &str| Error::Refused {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if meta.is_dir() {
            return Err(refuse("the output is a directory"));
        }
        if same_file(path, self.path()) {
            if !options.in_place {
                return Err(refuse(
                    "the output is the input file; pass the in-place option to overwrite it",
                ));
            }
        } else if !options.overwrite {
            return Err(refuse(
                "the output file exists; pass the force option to replace it",
            ));
        }
        if let Some(base) = self.base_dir() {
            for location in self.external.locations() {
                if same_file(path, &external::resolved(base, location)) {
                    return Err(refuse("the output is an external data file of the input"));
                }
            }
        }
        Ok(())
    }
}

/// Drops the pages of `range` from this process's resident set.
pub(crate) fn release(map: &memmap2::Mmap, range: Range<usize>) {
    #[cfg(unix)]
    // SAFETY: the mapping is a read-only, file-backed, shared mapping we never
    // write through; MADV_DONTNEED only drops its pages, which the kernel reads
    // back from the file if they are touched again. Failure is harmless.
    unsafe {
        let _ = map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            range.start,
            range.len(),
        );
    }
}

/// Where spliced bytes go: memory ([`Model::to_bytes`]) or the pending output
/// file ([`Model::save`]), which then never holds a second copy of the model.
pub(crate) trait Sink: Send {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl Sink for PendingFile {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.write(bytes)
    }
}

/// True when both paths name the same existing file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Test hook: `REINIT_FAIL_AFTER_BYTES=N` makes every write fail once N bytes
/// of an output have been written, to prove that failures leave no partial file.
/// Only with the `fault-injection` feature (test builds).
#[cfg(feature = "fault-injection")]
pub(crate) mod fault {
    /// Test hook: `REINIT_ABORT_BEFORE_MODEL_COMMIT=1` kills the process
    /// between the data file's rename and the model's (the crash window of a
    /// save with external data).
    pub fn before_model_commit() {
        if std::env::var_os("REINIT_ABORT_BEFORE_MODEL_COMMIT").is_some() {
            std::process::abort();
        }
    }

    pub fn check(written: u64, len: usize) -> std::io::Result<()> {
        static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        let limit = LIMIT.get_or_init(|| {
            std::env::var("REINIT_FAIL_AFTER_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        match limit {
            Some(limit) if written + len as u64 > *limit => Err(std::io::Error::other(
                "injected write failure (REINIT_FAIL_AFTER_BYTES)",
            )),
            _ => Ok(()),
        }
    }
}

/// Without `fault-injection` the hooks do nothing (and read no environment).
#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault {
    #[inline(always)]
    pub fn before_model_commit() {}

    #[inline(always)]
    pub fn check(_written: u64, _len: usize) -> std::io::Result<()> {
        Ok(())
    }
}
