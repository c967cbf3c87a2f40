//! The staging log: what the writer hands the database is first appended here, and the log
//! is synced every `commit_interval`, while the database commits non-durably (readers see
//! the data at once) and durably only at a checkpoint (`checkpoint_interval`) or shutdown.
//! One 4 KiB block written per interval replaces rewriting B-tree pages every 30 s, which is
//! what wears an SD card.
//!
//! The file is zero-filled ahead and written in place with direct, synchronous writes
//! (`O_DIRECT | O_DSYNC`; plain writes and `fdatasync` where the file system has no direct
//! I/O): no size or block-allocation changes per sync, so a sync costs its blocks and nothing
//! else. A sync writes whole 4 KiB blocks from the first block not yet written, zero-padded:
//! bytes once synced are never written again, so a write torn by a power cut can only damage
//! what it was adding. Records: `0xA5`, the epoch (u32 LE), payload length (u32 LE), the first
//! 4 bytes of the SHA-256 of the epoch and payload, the payload (device records as JSON,
//! readings and device day totals in a fixed binary layout); zero padding runs to the next
//! block. A checkpoint starts a new, random epoch with a marker record at the start of the
//! file, so records left from older epochs are never read again. On open, the records of the first record's epoch
//! are returned for replay, up to the first torn or damaged one; replaying is idempotent,
//! since the store refuses readings not newer than a device's newest. Versions before device
//! day totals stop replaying at a record that has them: stop the daemon cleanly (a checkpoint
//! empties the log) before going back to one.

use super::write::Batch;
use crate::domain::{DailyEnergy, DeviceId, DeviceInfo, Reading};
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

/// `O_DSYNC` on Linux (x86, ARM, AArch64; rustix's `DSYNC` is `O_SYNC`, which also forces
/// a journal commit for the modification time on every write).
const O_DSYNC: i32 = 0o10000;

/// The open log.
pub struct Staging {
    path: PathBuf,
    file: File,
    direct: bool,
    /// File size (zero-filled beyond the records).
    size: u64,
    /// Start of the first block not yet written.
    synced: u64,
    /// Records appended since the last sync (written from `synced`).
    pending: Vec<u8>,
    /// Bytes of records in this epoch.
    len: u64,
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

fn check(epoch: u32, payload: &[u8]) -> [u8; 4] {
    let h = Sha256::new()
        .chain_update(epoch.to_le_bytes())
        .chain_update(payload)
        .finalize();
    [h[0], h[1], h[2], h[3]]
}

fn record(epoch: u32, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEAD + payload.len());
    rec.push(MAGIC);
    rec.extend_from_slice(&epoch.to_le_bytes());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&check(epoch, payload));
    rec.extend_from_slice(payload);
    rec
}

/// A new epoch, different from `old`.
fn new_epoch(old: u32) -> u32 {
    let r = u32::from_le_bytes(crate::random::random_bytes::<4>());
    if r == old { r.wrapping_add(1) } else { r }
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
    // Device day totals (after a gap): absent in logs written before they existed.
    if !b.days.is_empty() {
        out.extend_from_slice(&(b.days.len() as u32).to_le_bytes());
        for d in &b.days {
            let id = d.device_id.as_str().as_bytes();
            out.push(id.len() as u8);
            out.extend_from_slice(id);
            out.extend_from_slice(&d.at_ms.to_le_bytes());
            out.extend_from_slice(&(d.days.len() as u32).to_le_bytes());
            for (start, wh) in &d.days {
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&wh.to_le_bytes());
            }
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
    let id_of = |p: &mut &[u8]| {
        let n = *take(p, 1)?.first()? as usize;
        DeviceId::parse(std::str::from_utf8(take(p, n)?).ok()?).ok()
    };
    let mut b = Batch::default();
    for _ in 0..u32_of(&mut p)? {
        let n = u32_of(&mut p)? as usize;
        let info: DeviceInfo = serde_json::from_slice(take(&mut p, n)?).ok()?;
        b.devices.push((info, i64_of(&mut p)?));
    }
    for _ in 0..u32_of(&mut p)? {
        let id = id_of(&mut p)?;
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
    if !p.is_empty() {
        for _ in 0..u32_of(&mut p)? {
            let device_id = id_of(&mut p)?;
            let at_ms = i64_of(&mut p)?;
            let mut days = Vec::new();
            for _ in 0..u32_of(&mut p)? {
                days.push((i64_of(&mut p)?, i64_of(&mut p)?));
            }
            b.days.push(DailyEnergy {
                device_id,
                at_ms,
                days,
            });
        }
    }
    p.is_empty().then_some(b)
}

/// Why reading records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Zeros or a record of another epoch: the normal end.
    End,
    /// A record of this epoch that is torn or damaged.
    Damaged,
}

/// The records of the first record's epoch in `bytes`: (epoch, end of the last block
/// written, batches, why it stopped).
fn parse(bytes: &[u8]) -> (Option<u32>, usize, Vec<Batch>, Stop) {
    let (mut at, mut epoch, mut batches) = (0usize, None, Vec::new());
    let stop = loop {
        // Zero padding runs to the next block.
        if bytes.get(at) == Some(&0) && at % BLOCK != 0 {
            at = at.next_multiple_of(BLOCK);
            continue;
        }
        let Some(head) = bytes.get(at..at.saturating_add(HEAD)) else {
            break Stop::End;
        };
        if head[0] != MAGIC {
            break if head[0] == 0 {
                Stop::End
            } else {
                Stop::Damaged
            };
        }
        let e = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if epoch.is_some_and(|x| x != e) {
            break Stop::End;
        }
        let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]) as usize;
        let payload = at
            .checked_add(HEAD)
            .and_then(|a| Some(a..a.checked_add(len)?))
            .and_then(|r| bytes.get(r));
        let Some(payload) = payload.filter(|p| head[9..13] == check(e, p)) else {
            break if epoch.is_none() {
                Stop::End
            } else {
                Stop::Damaged
            };
        };
        let Some(b) = decode(payload) else {
            break Stop::Damaged;
        };
        epoch = Some(e);
        if !b.is_empty() {
            batches.push(b);
        }
        at += HEAD + len;
    };
    (epoch, at.next_multiple_of(BLOCK), batches, stop)
}

/// The batches a log file's bytes hold, as a start would replay them (for the fuzz target:
/// damaged bytes end the replay, they never panic).
pub fn replayable(bytes: &[u8]) -> Vec<Batch> {
    parse(bytes).2
}

fn open_file(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    if direct {
        o.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32 | O_DSYNC);
    }
    o.open(path)
}

impl Staging {
    /// Opens (or creates) the log at `path`; returns it with the batches it holds, oldest
    /// first. Nothing is removed until [`Self::clear`].
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Batch>)> {
        let mut bytes = Vec::new();
        open_file(path, false)?.read_to_end(&mut bytes)?;
        let (epoch, end, batches, stop) = parse(&bytes);
        if stop == Stop::Damaged {
            tracing::warn!(
                batches = batches.len(),
                at = end,
                "staging log: replay stops at a torn or damaged record"
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
            synced: end as u64,
            pending: Vec::new(),
            len: 0,
            epoch: epoch.unwrap_or_else(|| new_epoch(0)),
        };
        if log.size < GROW {
            log.grow(GROW - log.size)?;
        }
        if batches.is_empty() && (epoch.is_none() || stop == Stop::Damaged) {
            // Nothing to replay and nothing to continue: start a fresh epoch. (With batches,
            // the caller clears once they are durable in the database.)
            log.clear()?;
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
        Ok(())
    }

    /// Writes `pending` from `synced` in whole, zero-padded blocks, durably.
    fn write_pending(&mut self) -> io::Result<()> {
        let blocks = self.pending.len().div_ceil(BLOCK) as u64;
        let need = self.synced + blocks * BLOCK as u64;
        if need > self.size {
            self.grow((need - self.size).next_multiple_of(GROW))?;
        }
        let mut block = Box::new(Block([0; BLOCK]));
        for (k, chunk) in self.pending.chunks(BLOCK).enumerate() {
            block.0[..chunk.len()].copy_from_slice(chunk);
            block.0[chunk.len()..].fill(0);
            let at = self.synced + (k * BLOCK) as u64;
            match self.file.write_all_at(&block.0, at) {
                // Direct I/O accepted at open but not for writes (some FUSE, NFS, overlays).
                Err(e) if self.direct && e.raw_os_error() == Some(22) => {
                    tracing::warn!("staging log: no direct I/O here; using fdatasync");
                    self.file = open_file(&self.path, false)?;
                    self.direct = false;
                    self.file.write_all_at(&block.0, at)?;
                }
                r => r?,
            }
        }
        if !self.direct {
            self.file.sync_data()?;
        }
        self.pending.clear();
        self.synced = need;
        Ok(())
    }

    /// Makes every append durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write_pending()
    }

    /// Starts a new epoch at the start of the file (after a durable checkpoint of the
    /// database): what the log held is never replayed again.
    pub fn clear(&mut self) -> io::Result<()> {
        self.epoch = new_epoch(self.epoch);
        self.synced = 0;
        self.pending = record(self.epoch, &encode(&Batch::default()));
        self.len = 0;
        self.write_pending()
    }

    /// Bytes of records (of this epoch).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
            // Some batches carry a device's day totals (as after a gap).
            days: (r.start % 30 == 0 && r.start > 0)
                .then(|| DailyEnergy {
                    device_id: DeviceId::parse("8006ABCDEF").unwrap(),
                    at_ms: r.start,
                    days: vec![(r.start * 1000, 7), (r.start * 1000 + 86_400_000, 0)],
                })
                .into_iter()
                .collect(),
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
            assert_eq!(a.days, b.days);
        }
        assert!(back.iter().any(|b| !b.days.is_empty()));
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
    fn synced_bytes_are_never_written_again_and_devices_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging.log");
        let (mut log, _) = Staging::open(&path).unwrap();
        let mut info = crate::domain::DeviceInfo::plug(DeviceId::parse("PLUG01").unwrap())
            .at("127.0.0.9:9999")
            .named("Lamp")
            .made("HS110", "1", "1");
        log.append(&Batch {
            devices: vec![(info.clone(), 5)],
            readings: vec![reading(0)],
            days: vec![],
        })
        .unwrap();
        log.sync().unwrap();
        let first = std::fs::read(&path).unwrap()[..2 * BLOCK].to_vec();
        info.name = "Lamp 2".into();
        log.append(&Batch {
            devices: vec![(info.clone(), 6)],
            readings: vec![reading(1)],
            days: vec![],
        })
        .unwrap();
        log.sync().unwrap();
        drop(log);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes[..2 * BLOCK],
            first[..],
            "the synced blocks are untouched"
        );
        let (_, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].devices[0].0.name, "Lamp 2");
        assert_eq!(back[1].devices[0].1, 6);
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
        // Block 0 holds the marker; the three records follow in block 1.
        let one = record(0, &encode(&batch(0..1))).len();
        let second = BLOCK + one;
        bytes[second + HEAD + 3] ^= 0x40; // a flipped bit in the second record
        std::fs::write(&path, &bytes).unwrap();
        let copy = bytes.clone();
        let (_, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 1);
        // A record cut in half (a write torn by a power cut) is not used either.
        let mut bytes = copy;
        bytes[second + HEAD + 3] ^= 0x40;
        bytes[second + one + HEAD + 2..].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = Staging::open(&path).unwrap();
        assert_eq!(back.len(), 2);
    }
}
