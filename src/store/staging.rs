//! The staging log: what the writer hands the database is first appended here, and the log
//! is synced every `commit_interval`, while the database commits non-durably (readers see
//! the data at once) and durably only at a checkpoint (`checkpoint_interval`) or shutdown.
//! One 4 KiB block written per interval replaces rewriting B-tree pages every 30 s, which is
//! what wears an SD card.
//!
//! The file is zero-filled ahead and written in place, block by block, with direct,
//! synchronous writes (`O_DIRECT | O_DSYNC`; plain writes and `fdatasync` where the file
//! system has no direct I/O): no size or block-allocation changes per sync, so a sync costs
//! the block and nothing else. Records: `0xA5`, the epoch (u32 LE), payload length (u32 LE),
//! the first 4 bytes of the payload's SHA-256, the payload (device records as JSON, readings
//! in a fixed binary layout). A checkpoint starts a new epoch with a marker record at the
//! start of the file, so records left from older epochs are never read again. On open, the
//! records of the first record's epoch are returned for replay, up to the first torn or
//! damaged one; replaying is idempotent, since the store refuses readings not newer than a
//! device's newest.

use super::write::Batch;
use crate::domain::{DeviceId, DeviceInfo, Reading};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: u8 = 0xA5;
const HEAD: usize = 13;
const BLOCK: usize = 4096;
/// The file grows by this much, zero-filled, when it is full.
const GROW: u64 = 2 << 20;

/// One aligned block (direct I/O needs aligned buffers).
#[repr(C, align(4096))]
#[derive(Clone)]
struct Block([u8; BLOCK]);

/// The open log.
pub struct Staging {
    path: PathBuf,
    file: File,
    direct: bool,
    /// File size (zero-filled beyond the records).
    size: u64,
    /// End of the records.
    len: u64,
    /// Start of the first block not yet synced.
    synced: u64,
    /// The records from `synced` on (the last, partial block is written again with what
    /// follows it).
    pending: Vec<u8>,
    /// Appended since the last sync.
    dirty: bool,
    epoch: u32,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("path", &self.path)
            .field("direct", &self.direct)
            .field("len", &self.len)
            .field("epoch", &self.epoch)
            .finish()
    }
}

fn check(payload: &[u8]) -> [u8; 4] {
    let h = Sha256::digest(payload);
    [h[0], h[1], h[2], h[3]]
}

fn record(epoch: u32, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEAD + payload.len());
    rec.push(MAGIC);
    rec.extend_from_slice(&epoch.to_le_bytes());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&check(payload));
    rec.extend_from_slice(payload);
    rec
}

fn encode(b: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * b.readings.len() + 16);
    out.extend_from_slice(&(b.devices.len() as u32).to_le_bytes());
    for (info, seen) in &b.devices {
        let json = serde_json::to_vec(info).unwrap_or_default();
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&seen.to_le_bytes());
    }
    out.extend_from_slice(&(b.readings.len() as u32).to_le_bytes());
    for r in &b.readings {
        let id = r.device_id.as_str().as_bytes();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&r.ts_ms.to_le_bytes());
        let vals = [r.power_mw, r.voltage_mv, r.current_ma, r.counter_wh];
        let mut flags = (u8::from(r.relay_on) << 5) | (u8::from(r.rssi.is_some()) << 4);
        for (i, v) in vals.iter().enumerate() {
            flags |= u8::from(v.is_some()) << i;
        }
        out.push(flags);
        for v in vals.iter().flatten() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(s) = r.rssi {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

/// Reads a payload back; `None` when it does not parse (then the record is not used).
fn decode(mut p: &[u8]) -> Option<Batch> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (a, b) = (p.get(..n)?, p.get(n..)?);
        *p = b;
        Some(a)
    }
    let u32_of = |p: &mut &[u8]| Some(u32::from_le_bytes(take(p, 4)?.try_into().ok()?));
    let i64_of = |p: &mut &[u8]| Some(i64::from_le_bytes(take(p, 8)?.try_into().ok()?));
    let mut b = Batch::default();
    for _ in 0..u32_of(&mut p)? {
        let n = u32_of(&mut p)? as usize;
        let info: DeviceInfo = serde_json::from_slice(take(&mut p, n)?).ok()?;
        b.devices.push((info, i64_of(&mut p)?));
    }
    for _ in 0..u32_of(&mut p)? {
        let n = *take(&mut p, 1)?.first()? as usize;
        let id = DeviceId::parse(std::str::from_utf8(take(&mut p, n)?).ok()?).ok()?;
        let ts_ms = i64_of(&mut p)?;
        let flags = *take(&mut p, 1)?.first()?;
        let mut vals = [None; 4];
        for (i, v) in vals.iter_mut().enumerate() {
            if flags & (1 << i) != 0 {
                *v = Some(i64_of(&mut p)?);
            }
        }
        let rssi = if flags & (1 << 4) != 0 {
            Some(i32::from_le_bytes(take(&mut p, 4)?.try_into().ok()?))
        } else {
            None
        };
        b.readings.push(Reading {
            device_id: id,
            ts_ms,
            power_mw: vals[0],
            voltage_mv: vals[1],
            current_ma: vals[2],
            counter_wh: vals[3],
            relay_on: flags & (1 << 5) != 0,
            rssi,
        });
    }
    p.is_empty().then_some(b)
}

/// The records of the first record's epoch in `bytes`: (epoch, end, batches).
fn parse(bytes: &[u8]) -> (u32, usize, Vec<Batch>) {
    let (mut at, mut epoch, mut batches) = (0usize, None, Vec::new());
    while let Some(head) = bytes.get(at..at + HEAD) {
        let e = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
        let Some(payload) = bytes.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        if head[0] != MAGIC || head[9..13] != check(payload) || epoch.is_some_and(|x| x != e) {
            break;
        }
        let Some(b) = decode(payload) else { break };
        epoch = Some(e);
        if !b.is_empty() {
            batches.push(b);
        }
        at += HEAD + len;
    }
    (epoch.unwrap_or(0), at, batches)
}

fn open_file(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    if direct {
        o.custom_flags((rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC).bits() as i32);
    }
    o.open(path)
}

impl Staging {
    /// Opens (or creates) the log at `path`; returns it with the batches it holds, oldest
    /// first. Nothing is removed until [`Self::clear`].
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Batch>)> {
        let mut bytes = Vec::new();
        open_file(path, false)?.read_to_end(&mut bytes)?;
        let (epoch, end, batches) = parse(&bytes);
        if end < bytes.len() && bytes[end..].iter().any(|b| *b != 0) && !batches.is_empty() {
            tracing::info!(
                records_end = end,
                "staging log: replaying up to the first torn, damaged or older record"
            );
        }
        // Direct I/O where the file system has it (not tmpfs, for one).
        let (file, direct) = match open_file(path, true) {
            Ok(f) => (f, true),
            Err(_) => (open_file(path, false)?, false),
        };
        let mut log = Self {
            path: path.to_owned(),
            file,
            direct,
            size: bytes.len() as u64,
            len: end as u64,
            synced: (end - end % BLOCK) as u64,
            pending: bytes[end - end % BLOCK..end].to_vec(),
            dirty: false,
            epoch,
        };
        if log.size < GROW {
            log.grow(GROW - log.size)?;
        }
        Ok((log, batches))
    }

    /// Zero-fills `by` more bytes at the end of the file, durably.
    fn grow(&mut self, by: u64) -> io::Result<()> {
        let plain = open_file(&self.path, false)?;
        let zeros = vec![0u8; 1 << 16];
        let mut at = self.size;
        while at < self.size + by {
            let n = (self.size + by - at).min(zeros.len() as u64) as usize;
            plain.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        plain.sync_all()?;
        self.size = at;
        Ok(())
    }

    /// Appends `b` (durable at the next [`Self::sync`]).
    pub fn append(&mut self, b: &Batch) -> io::Result<()> {
        let rec = record(self.epoch, &encode(b));
        self.len += rec.len() as u64;
        self.pending.extend_from_slice(&rec);
        self.dirty = true;
        Ok(())
    }

    /// Writes the blocks from `synced` holding `pending`, durably.
    fn write_pending(&mut self) -> io::Result<()> {
        let need = self.synced + self.pending.len().next_multiple_of(BLOCK) as u64;
        if need > self.size {
            self.grow((need - self.size).next_multiple_of(GROW))?;
        }
        let mut block = Box::new(Block([0; BLOCK]));
        for (k, chunk) in self.pending.chunks(BLOCK).enumerate() {
            block.0[..chunk.len()].copy_from_slice(chunk);
            block.0[chunk.len()..].fill(0);
            self.file
                .write_all_at(&block.0, self.synced + (k * BLOCK) as u64)?;
        }
        if !self.direct {
            self.file.sync_data()?;
        }
        // Keep the last, partial block: the next records continue it.
        let full = self.pending.len() - self.pending.len() % BLOCK;
        self.pending.drain(..full);
        self.synced += full as u64;
        self.dirty = false;
        Ok(())
    }

    /// Makes every append durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.write_pending()
    }

    /// Starts a new epoch at the start of the file (after a durable checkpoint of the
    /// database): what the log held is never replayed again.
    pub fn clear(&mut self) -> io::Result<()> {
        self.epoch = self.epoch.wrapping_add(1);
        self.synced = 0;
        self.pending = record(self.epoch, &encode(&Batch::default()));
        self.len = self.pending.len() as u64;
        self.write_pending()
    }

    /// Bytes of records (of this epoch).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no batch.
    pub fn is_empty(&self) -> bool {
        self.len <= (HEAD + 8) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: i64) -> Reading {
        Reading {
            device_id: DeviceId::parse("PLUG01").unwrap(),
            ts_ms: 1_700_000_000_000 + i * 10_000,
            power_mw: Some(45_200 + i),
            voltage_mv: (i % 2 == 0).then_some(120_000),
            current_ma: None,
            counter_wh: Some(i),
            relay_on: i % 3 != 0,
            rssi: Some(-50),
        }
    }

    fn batch(r: std::ops::Range<i64>) -> Batch {
        Batch {
            devices: vec![],
            readings: r.map(reading).collect(),
        }
    }

    #[test]
    fn synced_batches_come_back_unsynced_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging.log");
        let (mut log, old) = Staging::open(&path).unwrap();
        assert!(old.is_empty());
        // Enough to span several blocks.
        let batches: Vec<Batch> = (0..40).map(|k| batch(k * 10..k * 10 + 10)).collect();
        for b in &batches {
            log.append(b).unwrap();
            log.sync().unwrap();
        }
        log.append(&batch(1000..1005)).unwrap(); // never synced: lost, as in a power cut
        drop(log);
        let (mut log, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 40);
        for (a, b) in back.iter().zip(&batches) {
            assert_eq!(a.readings, b.readings);
        }
        // Appending continues after them; a checkpoint forgets them all.
        log.append(&batch(400..402)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (mut log, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 41);
        log.clear().unwrap();
        log.append(&batch(500..501)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, back) = Staging::open(&path).unwrap();
        assert_eq!(
            back.len(),
            1,
            "records of the old epoch are never read again"
        );
        assert_eq!(back[0].readings, batch(500..501).readings);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging.log");
        let (mut log, _) = Staging::open(&path).unwrap();
        for k in 0..3 {
            log.append(&batch(k..k + 1)).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let one = record(0, &encode(&batch(0..1))).len();
        bytes[one + HEAD + 3] ^= 0x40; // a flipped bit in the second record
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 1);
        // A record cut in half (a write torn by a power cut) is not used either.
        bytes[one + HEAD + 3] ^= 0x40;
        bytes[2 * one + HEAD + 2..].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 2);
    }
}
