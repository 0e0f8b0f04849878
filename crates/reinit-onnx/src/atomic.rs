//! Atomic output: write into a temporary file in the target directory, flush it
//! to disk, then rename it into place. A failure at any point leaves either the
//! previous file or nothing, never a truncated output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::Error;

/// A file being written; becomes visible only on [`PendingFile::commit`].
pub(crate) struct PendingFile {
    target: PathBuf,
    temp: NamedTempFile,
    out: Output,
    written: u64,
}

/// Where the bytes go: held in memory up to [`HOLD`] (a small output is
/// written in one go); past that, on Linux, to the disk directly by a writer
/// thread ([`crate::direct`]) where the file system allows, else through the
/// page cache.
enum Output {
    Held(Vec<u8>),
    #[cfg(target_os = "linux")]
    Direct(crate::direct::DirectWriter),
    Buffered(BufWriter<File>),
}

#[cfg(target_os = "linux")]
const HOLD: usize = crate::direct::BLOCK;
#[cfg(not(target_os = "linux"))]
const HOLD: usize = 1 << 20;

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
            temp,
            out: Output::Held(Vec::new()),
            written: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        crate::save::fault::check(self.written, bytes.len())
            .map_err(|e| Error::io(&self.target, e))?;
        let written = loop {
            match &mut self.out {
                Output::Held(held) if held.len() + bytes.len() < HOLD => {
                    held.extend_from_slice(bytes);
                    break Ok(());
                }
                // Large now: switch, then write `bytes` (never held: an
                // unedited region of the input can be hundreds of MiB).
                Output::Held(held) => {
                    let held = std::mem::take(held);
                    self.out = self.unheld(&held)?;
                }
                #[cfg(target_os = "linux")]
                Output::Direct(direct) => break direct.write(bytes),
                Output::Buffered(buffered) => break buffered.write_all(bytes),
            }
        };
        written.map_err(|e| Error::io(&self.target, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// The output for a file larger than [`HOLD`], `held` written into it.
    /// `REINIT_NO_DIRECT_IO` (set to anything) keeps the page cache, for a
    /// file system where direct writes are slow.
    fn unheld(&self, held: &[u8]) -> Result<Output, Error> {
        let io = |e| Error::io(&self.target, e);
        #[cfg(target_os = "linux")]
        if std::env::var_os("REINIT_NO_DIRECT_IO").is_none()
            && let Some(mut direct) = crate::direct::DirectWriter::start(self.temp.as_file())
        {
            direct.write(held).map_err(io)?;
            return Ok(Output::Direct(direct));
        }
        let file = self.temp.as_file().try_clone().map_err(io)?;
        let mut buffered = BufWriter::with_capacity(1 << 20, file);
        buffered.write_all(held).map_err(io)?;
        Ok(Output::Buffered(buffered))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes what is left and syncs the temporary file; it is still invisible.
    pub fn finish(self) -> Result<ReadyFile, Error> {
        let PendingFile {
            target, temp, out, ..
        } = self;
        let io = |e| Error::io(&target, e);
        match out {
            Output::Held(held) => temp.as_file().write_all(&held).map_err(io)?,
            #[cfg(target_os = "linux")]
            Output::Direct(direct) => direct.finish(temp.as_file()).map_err(io)?,
            Output::Buffered(buffered) => {
                buffered.into_inner().map_err(|e| io(e.into_error()))?;
            }
        }
        temp.as_file().sync_all().map_err(io)?;
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
