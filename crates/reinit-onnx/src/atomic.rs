//! Atomic output: write into a temporary file in the target directory, flush it
//! to disk, then rename it into place. A failure at any point leaves either the
//! previous file or nothing, never a truncated output.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::Error;

/// A file being written; becomes visible only on [`PendingFile::commit`].
pub(crate) struct PendingFile {
    target: PathBuf,
    writer: BufWriter<NamedTempFile>,
    written: u64,
}

impl PendingFile {
    pub fn create(target: &Path) -> Result<PendingFile, Error> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".reinit-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        Ok(PendingFile {
            target: target.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 20, temp),
            written: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        crate::save::fault::check(self.written, bytes.len())
            .map_err(|e| Error::io(&self.target, e))?;
        self.writer
            .write_all(bytes)
            .map_err(|e| Error::io(&self.target, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and syncs the temporary file; it is still invisible.
    pub fn finish(self) -> Result<ReadyFile, Error> {
        let target = self.target;
        let temp = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&target, e.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| Error::io(&target, e))?;
        Ok(ReadyFile { target, temp })
    }
}

/// A complete, synced temporary file waiting to be renamed into place.
pub(crate) struct ReadyFile {
    target: PathBuf,
    temp: NamedTempFile,
}

impl ReadyFile {
    pub fn commit(self) -> Result<PathBuf, Error> {
        let target = self.target;
        self.temp
            .persist(&target)
            .map_err(|e| Error::io(&target, e.error))?;
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            // Make the rename itself durable; not fatal where directories cannot be synced.
            let _ = dir.sync_all();
        }
        Ok(target)
    }
}
