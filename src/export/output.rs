//! The export file on its way to disk: optional gzip or zip compression, a byte count for the
//! size limit, the SHA-256 of what reaches the file, write-behind hints, and the final fsync.

use super::Compression;
use sha2::{Digest, Sha256};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts (for the size limit) and hashes the bytes reaching the file.
pub(super) struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
    hash: Sha256,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The export file. Every [`WRITE_BEHIND`] bytes it asks the kernel to start writing the
/// pages out, so the closing fsync has little left to wait for and an SD card gets an even
/// stream of writes instead of one burst.
pub(super) struct WriteBehind {
    file: std::fs::File,
    written: u64,
    pending: u64,
}

const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.pending += n as u64;
        if self.pending >= WRITE_BEHIND {
            // POSIX_FADV_DONTNEED starts writeback of the dirty range (and lets the page cache
            // drop it once written). Only a hint: its failure changes nothing.
            let start = self.written - self.pending;
            let _ = rustix::fs::fadvise(
                &self.file,
                start,
                std::num::NonZeroU64::new(self.pending),
                rustix::fs::Advice::DontNeed,
            );
            self.pending = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

type FileOut = Counting<BufWriter<WriteBehind>>;

/// The file being written, optionally compressed.
pub(super) enum Output {
    Plain(FileOut),
    Gzip(Box<flate2::write::GzEncoder<FileOut>>),
    Zip(Box<zip::ZipWriter<zip::write::StreamWriter<FileOut>>>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Gzip(w) => w.write(buf),
            Output::Zip(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.write_all(buf),
            Output::Gzip(w) => w.write_all(buf),
            Output::Zip(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Gzip(w) => w.flush(),
            Output::Zip(w) => w.flush(),
        }
    }
}

const BUF: usize = 256 * 1024;

impl Output {
    pub(super) fn create(
        path: &Path,
        compression: Compression,
        inner_name: &str,
    ) -> io::Result<(Self, Arc<AtomicU64>)> {
        let count = Arc::new(AtomicU64::new(0));
        let file = Counting {
            inner: BufWriter::with_capacity(
                BUF,
                WriteBehind {
                    file: std::fs::File::create(path)?,
                    written: 0,
                    pending: 0,
                },
            ),
            count: count.clone(),
            hash: Sha256::new(),
        };
        let out = match compression {
            Compression::None => Output::Plain(file),
            Compression::Gzip => Output::Gzip(Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            ))),
            Compression::Zip => {
                let mut z = zip::ZipWriter::new_stream(file);
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated);
                z.start_file(inner_name, opts).map_err(io::Error::other)?;
                Output::Zip(Box::new(z))
            }
        };
        Ok((out, count))
    }

    /// Flushes every layer, fsyncs the file and returns its SHA-256 (hex).
    pub(super) fn close(self) -> io::Result<String> {
        let file = match self {
            Output::Plain(w) => w,
            Output::Gzip(w) => w.finish()?,
            Output::Zip(w) => w.finish().map_err(io::Error::other)?.into_inner(),
        };
        let f = file.inner.into_inner().map_err(|e| e.into_error())?;
        f.file.sync_all()?;
        Ok(file
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}

pub(super) const CHUNK: usize = 256 * 1024;

/// The formatter's output: bytes gathered into chunks for the writer thread.
pub(super) struct Chunks {
    pub(super) tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    pub(super) buf: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::other("the file writer stopped"))
    }
}

impl Write for Chunks {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}
