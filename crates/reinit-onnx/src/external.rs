//! External data: tensors whose bytes live in a side file next to the model.
//!
//! ONNX files come from strangers, and the onnx library's history of external-data
//! CVEs (path traversal, symlink and hardlink escapes, unbounded lengths) shows what
//! a `location` can be abused for. Every open here goes through [`open_beneath`]:
//! the location must be relative and stay under the model's directory, no
//! component may be a symlink, the target must be a regular file with one link,
//! and the file is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! where the kernel has it, `O_NOFOLLOW` plus an inode comparison otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::proto::StringStringEntryProto;

/// A tensor's `external_data` entries, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    /// Relative path from the model's directory, as written in the file.
    pub location: String,
    pub offset: u64,
    /// `None` means "to the end of the file".
    pub length: Option<u64>,
    pub checksum: Option<String>,
}

/// Why an external reference was refused; the caller adds file and tensor names.
pub(crate) type Refusal = String;

impl ExternalRef {
    pub(crate) fn parse(entries: &[StringStringEntryProto]) -> Result<ExternalRef, Refusal> {
        let (mut location, mut offset, mut length, mut checksum) = (None, 0, None, None);
        for entry in entries {
            let key = entry.key.as_deref().unwrap_or("");
            let value = entry.value.as_deref().unwrap_or("");
            match key {
                "location" => location = Some(value.to_string()),
                "offset" => offset = parse_size(key, value)?,
                "length" => length = Some(parse_size(key, value)?),
                "checksum" => checksum = Some(value.to_string()),
                other => return Err(format!("unknown external_data key '{other}'")),
            }
        }
        let location = location.ok_or("external_data has no 'location'")?;
        check_location(&location)?;
        Ok(ExternalRef {
            location,
            offset,
            length,
            checksum,
        })
    }
}

fn parse_size(key: &str, value: &str) -> Result<u64, Refusal> {
    // Plain decimal digits only: no sign, no whitespace, no hex.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{key}' must be a non-negative integer, got '{value}'"
        ));
    }
    value
        .parse()
        .map_err(|_| format!("'{key}' is out of range: '{value}'"))
}

/// Lexical checks: relative, non-empty, no parent or root components.
pub(crate) fn check_location(location: &str) -> Result<(), Refusal> {
    if location.is_empty() {
        return Err("location is empty".into());
    }
    if location.contains('\0') {
        return Err("location contains a NUL byte".into());
    }
    let path = Path::new(location);
    if path.is_absolute() || location.starts_with('\\') || location.contains(":\\") {
        return Err("location must be relative to the model's directory".into());
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("location must not contain '..'".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("location must be relative to the model's directory".into());
            }
        }
    }
    if path.components().all(|c| c == Component::CurDir) {
        return Err("location names no file".into());
    }
    Ok(())
}

/// Opens `location` under `base` with every check described in the module doc.
pub(crate) fn open_beneath(base: &Path, location: &str) -> Result<File, Refusal> {
    check_location(location)?;
    let base = base
        .canonicalize()
        .map_err(|e| format!("cannot resolve the model directory {}: {e}", base.display()))?;
    // No symlink in any component below the base (the base itself may be one:
    // it was chosen by the user, not by the file).
    let mut current = base.clone();
    for component in Path::new(location).components() {
        if let Component::Normal(part) = component {
            current.push(part);
            let meta = std::fs::symlink_metadata(&current)
                .map_err(|e| format!("{}: {e}", current.display()))?;
            if meta.file_type().is_symlink() {
                return Err(format!("{} is a symbolic link", current.display()));
            }
        }
    }
    let file = secure_open(&base, location, &current)?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", current.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", current.display()));
    }
    if link_count(&meta) > 1 {
        return Err(format!(
            "{} has {} hard links; refusing a file that may alias another",
            current.display(),
            link_count(&meta)
        ));
    }
    Ok(file)
}

#[cfg(unix)]
fn link_count(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.nlink()
}

#[cfg(not(unix))]
fn link_count(_meta: &std::fs::Metadata) -> u64 {
    1
}

#[cfg(target_os = "linux")]
fn secure_open(base: &Path, location: &str, full: &Path) -> Result<File, Refusal> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    let c_base = CString::new(base.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let c_loc = CString::new(location).map_err(|e| e.to_string())?;
    // SAFETY: plain syscalls on NUL-terminated strings we own; every returned
    // descriptor is either closed here or handed to a `File` that owns it.
    unsafe {
        let dir = libc::open(
            c_base.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return Err(format!(
                "cannot open {}: {}",
                base.display(),
                std::io::Error::last_os_error()
            ));
        }
        let mut how: libc::open_how = std::mem::zeroed();
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
        let fd = libc::syscall(
            libc::SYS_openat2,
            dir,
            c_loc.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        );
        let errno = std::io::Error::last_os_error();
        libc::close(dir);
        if fd >= 0 {
            return Ok(File::from_raw_fd(fd as i32));
        }
        match errno.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => fallback_open(full),
            Some(libc::EXDEV) | Some(libc::ELOOP) => Err(format!(
                "{} escapes the model directory or goes through a symbolic link",
                full.display()
            )),
            _ => Err(format!("cannot open {}: {errno}", full.display())),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn secure_open(_base: &Path, _location: &str, full: &Path) -> Result<File, Refusal> {
    fallback_open(full)
}

/// `O_NOFOLLOW` open, then confirm the opened inode is the one we inspected.
fn fallback_open(full: &Path) -> Result<File, Refusal> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        let before = std::fs::symlink_metadata(full).map_err(|e| e.to_string())?;
        let file = options
            .open(full)
            .map_err(|e| format!("cannot open {}: {e}", full.display()))?;
        let after = file.metadata().map_err(|e| e.to_string())?;
        if (before.dev(), before.ino()) != (after.dev(), after.ino()) {
            return Err(format!("{} changed while being opened", full.display()));
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    options
        .open(full)
        .map_err(|e| format!("cannot open {}: {e}", full.display()))
}

/// Memory maps of the external files a model refers to, opened once each.
#[derive(Debug, Default)]
pub(crate) struct ExternalFiles {
    maps: HashMap<String, Arc<Mmap>>,
}

impl ExternalFiles {
    /// The mapping of `location`, opening it securely the first time.
    pub fn map(&mut self, base: &Path, location: &str) -> Result<Arc<Mmap>, Refusal> {
        if let Some(map) = self.maps.get(location) {
            return Ok(map.clone());
        }
        let file = open_beneath(base, location)?;
        // SAFETY: the mapping is read-only. Another process truncating the file
        // while we hold it could fault; reinit never writes into a file it maps
        // (outputs go to a new temporary file that is renamed into place).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("cannot map {location}: {e}"))?;
        let map = Arc::new(map);
        self.maps.insert(location.to_string(), map.clone());
        Ok(map)
    }

    pub fn get(&self, location: &str) -> Option<&Arc<Mmap>> {
        self.maps.get(location)
    }

    /// Canonical paths of every mapped file, to refuse writing over one.
    pub fn locations(&self) -> impl Iterator<Item = &String> {
        self.maps.keys()
    }
}

/// The byte range of `reference` inside a file of `file_len` bytes.
pub(crate) fn byte_range(
    reference: &ExternalRef,
    file_len: u64,
) -> Result<std::ops::Range<usize>, Refusal> {
    let end = match reference.length {
        Some(length) => reference
            .offset
            .checked_add(length)
            .ok_or("offset + length overflows")?,
        None => file_len,
    };
    if reference.offset > file_len || end > file_len || end < reference.offset {
        return Err(format!(
            "offset {} + length {} lies outside the {file_len}-byte data file",
            reference.offset,
            end.saturating_sub(reference.offset)
        ));
    }
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| "offset too large".to_string());
    Ok(to_usize(reference.offset)?..to_usize(end)?)
}

/// The path a location resolves to (for messages and write-over checks).
pub(crate) fn resolved(base: &Path, location: &str) -> PathBuf {
    base.join(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(k: &str, v: &str) -> StringStringEntryProto {
        StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[test]
    fn lexical_refusals() {
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a/./../../b",
            ".",
            "\\\\server\\x",
        ] {
            assert!(check_location(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["w.bin", "./w.bin", "sub/w.bin"] {
            assert!(check_location(good).is_ok(), "{good:?} should pass");
        }
    }

    #[test]
    fn keys_and_numbers_are_strict() {
        assert!(ExternalRef::parse(&[entry("location", "a"), entry("__class__", "x")]).is_err());
        assert!(ExternalRef::parse(&[entry("location", "a"), entry("length", "-1")]).is_err());
        assert!(ExternalRef::parse(&[entry("location", "a"), entry("offset", "1e3")]).is_err());
        assert!(
            ExternalRef::parse(&[
                entry("location", "a"),
                entry("length", "99999999999999999999999")
            ])
            .is_err()
        );
        let ok = ExternalRef::parse(&[
            entry("location", "a"),
            entry("offset", "8"),
            entry("length", "4"),
        ])
        .unwrap();
        assert_eq!((ok.offset, ok.length), (8, Some(4)));
    }

    #[test]
    fn ranges_stay_inside_the_file() {
        let r = |offset, length| ExternalRef {
            location: "a".into(),
            offset,
            length,
            checksum: None,
        };
        assert_eq!(byte_range(&r(4, Some(4)), 8).unwrap(), 4..8);
        assert!(byte_range(&r(4, Some(5)), 8).is_err());
        assert!(byte_range(&r(9, None), 8).is_err());
        assert!(byte_range(&r(u64::MAX, Some(2)), 8).is_err());
    }
}
