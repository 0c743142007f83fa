//! Helpers for the unit tests.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::source::MessageSource;

/// A message held in memory that counts what is read from it.
pub struct Raw {
    bytes: Vec<u8>,
    read: Cell<usize>,
    largest: Cell<usize>,
}

impl Raw {
    pub fn new(bytes: &[u8]) -> Self {
        Raw {
            bytes: bytes.to_vec(),
            read: Cell::new(0),
            largest: Cell::new(0),
        }
    }

    /// Octets handed out by `read` so far.
    pub fn octets_read(&self) -> usize {
        self.read.get()
    }

    /// The longest range one `read` call returned.
    pub fn largest_read(&self) -> usize {
        self.largest.get()
    }
}

impl MessageSource for Raw {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Parsed as the host does: unfolded, up to the first empty line.
    fn headers(&self) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for raw in self.bytes.split(|&b| b == b'\n') {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(line);
            if line[0] == b' ' || line[0] == b'\t' {
                if let Some((_, value)) = fields.last_mut() {
                    value.push_str(&text);
                }
            } else if let Some((name, value)) = text.split_once(':') {
                fields.push((name.trim_end().into(), value.trim_start().into()));
            }
        }
        fields
    }

    fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        let start = (offset as usize).min(self.bytes.len());
        let end = (start + len as usize).min(self.bytes.len());
        self.read.set(self.read.get() + end - start);
        self.largest.set(self.largest.get().max(end - start));
        self.bytes[start..end].to_vec()
    }
}

/// A scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "filter-bayes-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
