//! The active file, rotation on line boundaries, compression on another thread, retention.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::stats::Counters;

/// Where and how the event log is written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FileConfig {
    /// The active file (default `events.jsonl` in the working directory); rotated files go
    /// next to it as `events.<n>.jsonl.gz`, `n` increasing (1 is the oldest kept).
    pub path: PathBuf,
    /// Rotate when the active file would grow past this (default 10 MiB).
    pub max_bytes: u64,
    /// Also rotate when the active file is this old (default: never).
    pub max_age: Option<Duration>,
    /// Rotated files kept (default 10).
    pub keep_files: usize,
    /// Total bytes of rotated files kept (default 100 MiB).
    pub keep_bytes: u64,
    /// Compress rotated files (gzip; zstd with the `zstd` feature). Default true.
    pub compress: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("events.jsonl"),
            max_bytes: 10 * 1024 * 1024,
            max_age: None,
            keep_files: 10,
            keep_bytes: 100 * 1024 * 1024,
            compress: true,
        }
    }
}

impl FileConfig {
    /// The same settings with `path`: the active file.
    pub fn path(mut self, path: PathBuf) -> Self {
        self.path = path;
        self
    }

    /// The same settings with `max_bytes`: rotate when the active file would grow past this.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The same settings with `max_age`: also rotate when the active file is this old.
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// The same settings with `keep_files`: rotated files kept.
    pub fn keep_files(mut self, keep_files: usize) -> Self {
        self.keep_files = keep_files;
        self
    }

    /// The same settings with `keep_bytes`: total bytes of rotated files kept.
    pub fn keep_bytes(mut self, keep_bytes: u64) -> Self {
        self.keep_bytes = keep_bytes;
        self
    }

    /// The same settings with `compress`: compress rotated files.
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }
}

#[cfg(not(feature = "zstd"))]
const COMPRESSED: &str = "gz";
#[cfg(feature = "zstd")]
const COMPRESSED: &str = "zst";

/// The writer thread's file.
pub(crate) struct Sink {
    config: FileConfig,
    file: Option<File>,
    size: u64,
    opened: Instant,
    next_seq: u64,
    counters: Arc<Counters>,
    compressor: Option<Sender<PathBuf>>,
}

impl Sink {
    pub(crate) fn new(
        config: FileConfig,
        counters: Arc<Counters>,
        compressor: Option<Sender<PathBuf>>,
    ) -> Self {
        let next_seq = existing_rotations(&config.path)
            .last()
            .map(|(seq, _)| seq + 1)
            .unwrap_or(1);
        Self {
            config,
            file: None,
            size: 0,
            opened: Instant::now(),
            next_seq,
            counters,
            compressor,
        }
    }

    pub(crate) fn open(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(dir) = self
            .config
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            create_private_dirs(dir)?;
        }
        let file = private_options()
            .create(true)
            .append(true)
            .open(&self.config.path)?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.opened = Instant::now();
        self.file = Some(file);
        Ok(())
    }

    /// Writes whole lines, rotating between lines when the next would pass the size bound.
    /// Lines count as written only once the file took them; after an error the file is cut
    /// back to its last whole line, and the lines not written stay in `lines` for a retry.
    pub(crate) fn write_lines<L: AsRef<[u8]>>(&mut self, lines: &mut Vec<L>) -> io::Result<()> {
        self.open()?;
        let mut done = 0;
        let result = (|| {
            let mut chunk = Vec::with_capacity(64 * 1024);
            while done < lines.len() {
                let age_due = self
                    .config
                    .max_age
                    .is_some_and(|age| self.opened.elapsed() >= age);
                if self.size > 0
                    && (self.size + lines[done].as_ref().len() as u64 > self.config.max_bytes
                        || age_due)
                {
                    self.rotate()?;
                }
                // The lines that fit in the current file (at least one, even if it alone is
                // larger than the bound).
                chunk.clear();
                let mut end = done;
                while end < lines.len()
                    && (end == done
                        || self.size + (chunk.len() + lines[end].as_ref().len()) as u64
                            <= self.config.max_bytes)
                {
                    chunk.extend_from_slice(lines[end].as_ref());
                    end += 1;
                }
                let file = self
                    .file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("no open file"))?;
                if let Err(error) = file.write_all(&chunk) {
                    // Never leave half a line behind.
                    let _ = file.set_len(self.size);
                    return Err(error);
                }
                self.size += chunk.len() as u64;
                self.counters
                    .written
                    .fetch_add((end - done) as u64, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                done = end;
            }
            Ok(())
        })();
        lines.drain(..done);
        if result.is_err() {
            // Reopen next time: the handle may be broken (disk full, file removed).
            self.file = None;
        }
        result
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            drop(file);
        }
        let rotated = rotated_path(&self.config.path, self.next_seq, None);
        fs::rename(&self.config.path, &rotated)?;
        self.next_seq += 1;
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        match &self.compressor {
            Some(tx) => {
                let _ = tx.send(rotated);
            }
            None => apply_retention(&self.config),
        }
        self.open()
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// Options that create files readable by their owner only (0600): events may name tools,
/// sessions and errors, which are nobody else's business.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates `dir` and its missing parents, the ones it creates private to the user (0700).
/// Existing directories are left as they are.
pub(crate) fn create_private_dirs(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

/// `events.jsonl` → `events.<seq>.jsonl[.<ext>]`.
fn rotated_path(active: &Path, seq: u64, ext: Option<&str>) -> PathBuf {
    let stem = active
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "events".into());
    let extension = active
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "jsonl".into());
    let name = match ext {
        Some(ext) => format!("{stem}.{seq}.{extension}.{ext}"),
        None => format!("{stem}.{seq}.{extension}"),
    };
    active.with_file_name(name)
}

/// Rotated files next to `active`, `(seq, path)` sorted oldest first.
pub(crate) fn existing_rotations(active: &Path) -> Vec<(u64, PathBuf)> {
    let dir = active
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let seq = rotation_seq(active, &name)?;
            Some((seq, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// The sequence number of `name` when it is exactly a rotation this sink made of `active`:
/// `stem.N.ext`, `stem.N.ext.gz` or `stem.N.ext.zst` with `N` all digits. Anything else next
/// to it — a user's `events.2024.csv`, a `.partial` file — is not ours to delete.
fn rotation_seq(active: &Path, name: &str) -> Option<u64> {
    let stem = active.file_stem()?.to_string_lossy().into_owned();
    let extension = active
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "jsonl".into());
    let rest = name.strip_prefix(&stem)?.strip_prefix('.')?;
    let (digits, rest) = rest.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest.strip_prefix(extension.as_str())?;
    if !(rest.is_empty() || rest == ".gz" || rest == ".zst") {
        return None;
    }
    digits.parse().ok()
}

/// Deletes the oldest rotated files beyond the count and byte limits.
fn apply_retention(config: &FileConfig) {
    let mut rotations = existing_rotations(&config.path);
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut total: u64 = rotations.iter().map(|(_, p)| size(p)).sum();
    while !rotations.is_empty()
        && (rotations.len() > config.keep_files || total > config.keep_bytes)
    {
        let (_, oldest) = rotations.remove(0);
        total = total.saturating_sub(size(&oldest));
        if let Err(error) = fs::remove_file(&oldest) {
            tracing::warn!(path = %oldest.display(), %error, "telemetry: could not remove an old file");
        }
    }
}

/// The compression thread: compresses each rotated file, then applies retention. Writing
/// never waits for it.
pub(crate) fn compressor(config: FileConfig, counters: Arc<Counters>, rx: Receiver<PathBuf>) {
    for path in rx {
        if let Err(error) = compress(&path) {
            counters.compression_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), %error, "telemetry: compressing a rotated file failed; kept uncompressed");
        }
        apply_retention(&config);
    }
}

fn compress(path: &Path) -> io::Result<()> {
    let target = PathBuf::from(format!("{}.{COMPRESSED}", path.display()));
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    let mut input = File::open(path)?;
    let output = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)?;
    #[cfg(not(feature = "zstd"))]
    {
        let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
        io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.sync_all()?;
    }
    #[cfg(feature = "zstd")]
    {
        let mut encoder = zstd::Encoder::new(output, 3)?;
        io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.sync_all()?;
    }
    fs::rename(&partial, &target)?;
    fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_rotations_count() {
        let active = Path::new("/logs/events.jsonl");
        assert_eq!(rotation_seq(active, "events.3.jsonl"), Some(3));
        assert_eq!(rotation_seq(active, "events.12.jsonl.gz"), Some(12));
        assert_eq!(rotation_seq(active, "events.7.jsonl.zst"), Some(7));
        for other in [
            "events.2024.csv",
            "events.3.jsonl.gz.partial",
            "events.jsonl",
            "events.x1.jsonl",
            "events..jsonl",
            "events.3.jsonl.bak",
            "events-old.3.jsonl",
            "events.3.json",
        ] {
            assert_eq!(rotation_seq(active, other), None, "{other}");
        }
    }

    #[test]
    fn rotated_names() {
        let active = Path::new("/var/log/fb/events.jsonl");
        assert_eq!(
            rotated_path(active, 3, None),
            Path::new("/var/log/fb/events.3.jsonl")
        );
        assert_eq!(
            rotated_path(active, 3, Some("gz")),
            Path::new("/var/log/fb/events.3.jsonl.gz")
        );
    }
}
