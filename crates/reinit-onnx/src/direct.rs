//! Writing a large output past the page cache: aligned blocks written with
//! `O_DIRECT` by a background thread. The disk works while the caller keeps
//! computing, the caller's CPU does not copy the output into the page cache,
//! and the final fsync has no dirty pages left to flush (on BERT-base, `he`:
//! the kernel's copy was ~27 % of the CPU and the fsync ~0.15 s of 0.58 s;
//! see README "Performance").
//!
//! Where the file system refuses `O_DIRECT` (tmpfs, some network file
//! systems) [`DirectWriter::start`] returns `None` and the caller writes
//! through the page cache; where it takes the flag but refuses a write's
//! alignment, the writer thread turns the flag off and goes on buffered.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes per block. Direct writes need their memory, file offset and length
/// aligned to the device's logical block (512 B or 4 KiB); blocks start at
/// multiples of this size, and only the last one is short (it is padded).
pub(crate) const BLOCK: usize = 4 << 20;
const ALIGN: usize = 4096;
/// Full blocks queued for the writer thread; the caller fills one more.
const IN_FLIGHT: usize = 2;

/// A [`BLOCK`]-byte buffer starting at an [`ALIGN`] boundary.
struct Block {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        let storage = vec![0u8; BLOCK + ALIGN];
        let start = (ALIGN - storage.as_ptr() as usize % ALIGN) % ALIGN;
        Block {
            storage,
            start,
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(BLOCK - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Zero-pads to the alignment (a direct write's length must be a
    /// multiple of it); returns the unpadded length.
    fn pad(&mut self) -> usize {
        let len = self.len;
        let padded = len.next_multiple_of(ALIGN);
        self.storage[self.start + len..self.start + padded].fill(0);
        self.len = padded;
        len
    }
}

/// Hands full blocks of the output to a thread that writes them with
/// `O_DIRECT`, and recycles their buffers (at most `IN_FLIGHT + 1` exist).
pub(crate) struct DirectWriter {
    to_disk: SyncSender<(Block, u64)>,
    recycled: Receiver<Block>,
    /// `None` once joined.
    io: Option<JoinHandle<io::Result<()>>>,
    current: Block,
    /// File offset of `current`.
    offset: u64,
    blocks: usize,
}

impl DirectWriter {
    /// Turns `O_DIRECT` on for `file` (empty, opened for writing) and starts
    /// the writer thread; `None` where the file system does not allow it
    /// (nothing changed then).
    pub(crate) fn start(file: &File) -> Option<DirectWriter> {
        let io_file = file.try_clone().ok()?;
        set_direct(&io_file, true).ok()?;
        let (to_disk, queued) = sync_channel::<(Block, u64)>(IN_FLIGHT);
        let (recycle, recycled) = sync_channel::<Block>(IN_FLIGHT + 1);
        let spawned = std::thread::Builder::new()
            .name("reinit-write".into())
            .spawn(move || {
                let mut direct = true;
                for (block, offset) in queued {
                    write_block(&io_file, &block, offset, &mut direct)?;
                    // The caller may be finishing and no longer take buffers back.
                    let _ = recycle.try_send(block);
                }
                Ok(())
            });
        let Ok(io) = spawned else {
            let _ = set_direct(file, false);
            return None;
        };
        Some(DirectWriter {
            to_disk,
            recycled,
            io: Some(io),
            current: Block::new(),
            offset: 0,
            blocks: 1,
        })
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.current.fill(bytes);
            bytes = &bytes[n..];
            if self.current.len == BLOCK {
                let next = self.next_block();
                self.submit(next)?;
            }
        }
        Ok(())
    }

    /// A recycled buffer, a new one while fewer than `IN_FLIGHT + 1` exist,
    /// or the next one the writer thread returns.
    fn next_block(&mut self) -> Option<Block> {
        if let Ok(mut block) = self.recycled.try_recv() {
            block.len = 0;
            return Some(block);
        }
        if self.blocks <= IN_FLIGHT {
            self.blocks += 1;
            return Some(Block::new());
        }
        let mut block = self.recycled.recv().ok()?;
        block.len = 0;
        Some(block)
    }

    /// Queues `current` for the disk and continues in `next` (`None`: the
    /// writer thread has stopped, on an error).
    fn submit(&mut self, next: Option<Block>) -> io::Result<()> {
        let Some(next) = next else {
            return Err(self.join());
        };
        let full = std::mem::replace(&mut self.current, next);
        let offset = self.offset;
        self.offset += full.len as u64;
        if self.to_disk.send((full, offset)).is_err() {
            return Err(self.join());
        }
        Ok(())
    }

    /// The error that stopped the writer thread.
    fn join(&mut self) -> io::Error {
        match self.io.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the output's writer thread panicked"),
            _ => io::Error::other("the output's writer thread stopped"),
        }
    }

    /// Writes what is left (padded, then the file truncated back to its
    /// length), waits for the writer thread and turns `O_DIRECT` off again.
    pub(crate) fn finish(mut self, file: &File) -> io::Result<()> {
        let mut length = self.offset;
        if self.current.len > 0 {
            length += self.current.pad() as u64;
            let next = Block {
                storage: Vec::new(),
                start: 0,
                len: 0,
            };
            self.submit(Some(next))?;
        }
        let Self { to_disk, io, .. } = self;
        drop(to_disk);
        match io.map(JoinHandle::join) {
            Some(Ok(written)) => written?,
            Some(Err(_)) => return Err(io::Error::other("the output's writer thread panicked")),
            None => return Err(io::Error::other("the output's writer thread stopped")),
        }
        set_direct(file, false)?;
        if file.metadata()?.len() != length {
            file.set_len(length)?;
        }
        Ok(())
    }
}

/// Writes one block at its offset; turns `O_DIRECT` off and writes through
/// the page cache if the file system refuses the block's alignment.
fn write_block(file: &File, block: &Block, offset: u64, direct: &mut bool) -> io::Result<()> {
    match file.write_all_at(block.bytes(), offset) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false)?;
            *direct = false;
            file.write_all_at(block.bytes(), offset)
        }
        result => result,
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 % 251) as u8).collect()
    }

    /// Writes `data` in pieces of `piece` bytes through a direct writer in
    /// `dir` and returns what the file holds afterwards (`None` where the
    /// file system refuses O_DIRECT).
    fn round_trip(dir: &std::path::Path, data: &[u8], piece: usize) -> Option<Vec<u8>> {
        let path = dir.join("out.bin");
        let file = File::create(&path).unwrap();
        let mut writer = DirectWriter::start(&file)?;
        for p in data.chunks(piece) {
            writer.write(p).unwrap();
        }
        writer.finish(&file).unwrap();
        Some(std::fs::read(&path).unwrap())
    }

    #[test]
    fn any_length_in_any_pieces_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut checked = 0;
        for (len, piece) in [
            (0, 1),
            (1, 1),
            (ALIGN - 1, 100),
            (ALIGN, ALIGN),
            (BLOCK, BLOCK),
            (BLOCK + 1, 7919),
            (3 * BLOCK + ALIGN + 17, 1 << 20),
            (5 * BLOCK - 3, 3 * BLOCK),
        ] {
            let data = pattern(len);
            if let Some(back) = round_trip(dir.path(), &data, piece) {
                assert!(back == data, "{len} bytes in pieces of {piece}");
                checked += 1;
            }
        }
        // The temporary directory is on a file system with O_DIRECT here;
        // elsewhere the test can only check the fallback (below).
        if checked == 0 {
            eprintln!(
                "O_DIRECT refused in {}: direct path unchecked",
                dir.path().display()
            );
        }
    }

    #[test]
    fn a_failing_disk_write_is_reported_not_lost() {
        // A descriptor opened read-only: every write fails in the writer
        // thread, and the error reaches the caller (at a later write, or at
        // `finish` at the latest).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.bin");
        std::fs::write(&path, b"").unwrap();
        let file = File::open(&path).unwrap();
        let Some(mut writer) = DirectWriter::start(&file) else {
            return;
        };
        let data = pattern(3 * BLOCK + 5);
        let failed = data
            .chunks(BLOCK / 2)
            .map(|piece| writer.write(piece))
            .find_map(Result::err)
            .or_else(|| writer.finish(&file).err())
            .expect("the failed writes are reported");
        assert_eq!(failed.raw_os_error(), Some(libc::EBADF), "{failed}");
    }

    #[test]
    fn a_refused_alignment_falls_back_to_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.bin");
        let file = File::create(&path).unwrap();
        if set_direct(&file, true).is_err() {
            return;
        }
        // misaligned on purpose: memory and length off by one
        let data = pattern(ALIGN + 2);
        let mut block = Block::new();
        block.start += 1;
        block.fill(&data[..ALIGN + 1]);
        let mut direct = true;
        write_block(&file, &block, 0, &mut direct).unwrap();
        assert!(!direct, "the file system took a misaligned direct write");
        assert_eq!(std::fs::read(&path).unwrap(), data[..ALIGN + 1]);
    }
}
