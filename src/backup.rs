//! Backups: one zip file holding the database, the staging log and the key files, taken while
//! the daemon runs; and restoring one into an empty data directory.
//!
//! Owns: what a backup holds and its manifest (sizes and SHA-256 of every file, checked on
//! restore). Consistency: a running daemon first commits its pending readings durably (the
//! callers flush the writer), then the files are copied while a write transaction is held, so
//! no commit lands during the copy. The copy is what a power cut at that moment would leave
//! (anything not yet durable is rolled back when the restored database first opens, and the
//! staging log is replayed), which kasad is built to recover from.

use crate::store::Store;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The data directory's files a backup holds (those present), in this order.
pub const FILES: [&str; 5] = [
    "kasad.redb",
    "staging.log",
    "jwt.key",
    "audit.key",
    "export.key",
];
const MANIFEST: &str = "MANIFEST.json";

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file.
    #[error("{0}: {1}")]
    Io(String, io::Error),
    /// The zip format.
    #[error("backup file: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// The database.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Not a kasad backup, or damaged.
    #[error("not a usable kasad backup: {0}")]
    Invalid(String),
    /// Restoring would overwrite data.
    #[error("{0} already holds kasad data ({1}); restore only into an empty data directory")]
    NotEmpty(PathBuf, String),
}

fn io_err(what: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(what.display().to_string(), e)
}

/// One file in the manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Entry {
    /// File name in the data directory.
    pub name: String,
    /// Size, bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// What a backup says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Manifest {
    /// Format of the backup file (1).
    pub format: u32,
    /// kasad version that made it.
    pub kasad_version: String,
    /// When, UTC ms.
    pub created_ms: i64,
    /// The files.
    pub files: Vec<Entry>,
}

/// Copies `src` into the zip as `name`, hashing it on the way.
fn add(zip: &mut zip::ZipWriter<File>, src: &Path, name: &str) -> Result<Entry, BackupError> {
    let mut f = File::open(src).map_err(io_err(src))?;
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file(name, opts)?;
    let (mut hash, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 16]);
    loop {
        let n = f.read(&mut buf).map_err(io_err(src))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        zip.write_all(&buf[..n]).map_err(io_err(src))?;
        size += n as u64;
    }
    Ok(Entry {
        name: name.to_owned(),
        size,
        sha256: hex(&hash.finalize()),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes a backup of `store` (and the files beside it) to `out` (via a temporary file beside
/// it, renamed when complete). Blocking.
pub fn create(store: &Store, out: &Path, now_ms: i64) -> Result<Manifest, BackupError> {
    let dir = store
        .path()
        .parent()
        .ok_or_else(|| BackupError::Invalid("the database has no directory".into()))?
        .to_path_buf();
    let tmp = out.with_extension("partial");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut zip = zip::ZipWriter::new(file);
    let files = store.with_writes_held(|| -> Result<Vec<Entry>, BackupError> {
        let mut files = Vec::new();
        for name in FILES {
            let src = if name == "kasad.redb" {
                store.path().to_path_buf()
            } else {
                dir.join(name)
            };
            if src.exists() {
                files.push(add(&mut zip, &src, name)?);
            }
        }
        Ok(files)
    })??;
    let manifest = Manifest {
        format: 1,
        kasad_version: env!("CARGO_PKG_VERSION").into(),
        created_ms: now_ms,
        files,
    };
    zip.start_file(MANIFEST, zip::write::SimpleFileOptions::default())?;
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid(e.to_string()))?;
    zip.write_all(&text).map_err(io_err(&tmp))?;
    let file = zip.finish()?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    Ok(manifest)
}

/// Restores the backup `file` into `data_dir`, which must hold no kasad data. Every file is
/// checked against the manifest; keys get mode 0600. Returns the manifest. Blocking; the
/// database is opened (replaying its staging log) by the caller.
pub fn restore(file: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    if let Some(f) = FILES.iter().find(|f| data_dir.join(f).exists()) {
        return Err(BackupError::NotEmpty(
            data_dir.to_path_buf(),
            (*f).to_owned(),
        ));
    }
    let mut zip = zip::ZipArchive::new(File::open(file).map_err(io_err(file))?)?;
    let manifest: Manifest = {
        let mut m = zip
            .by_name(MANIFEST)
            .map_err(|_| BackupError::Invalid(format!("{} has no {MANIFEST}", file.display())))?;
        let mut text = Vec::new();
        m.read_to_end(&mut text).map_err(io_err(file))?;
        serde_json::from_slice(&text).map_err(|e| BackupError::Invalid(e.to_string()))?
    };
    if manifest.format != 1 || !manifest.files.iter().any(|e| e.name == "kasad.redb") {
        return Err(BackupError::Invalid("unknown format or no database".into()));
    }
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let mut written = Vec::new();
    let result = (|| {
        for e in &manifest.files {
            if !FILES.contains(&e.name.as_str()) {
                return Err(BackupError::Invalid(format!(
                    "unexpected file {:?}",
                    e.name
                )));
            }
            let dest = data_dir.join(&e.name);
            let mut src = zip.by_name(&e.name)?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dest)
                .map_err(io_err(&dest))?;
            written.push(dest.clone());
            let (mut hash, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 16]);
            loop {
                let n = src.read(&mut buf).map_err(io_err(&dest))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(&dest))?;
                size += n as u64;
            }
            if size != e.size || hex(&hash.finalize()) != e.sha256 {
                return Err(BackupError::Invalid(format!(
                    "{} does not match its checksum",
                    e.name
                )));
            }
            out.sync_all().map_err(io_err(&dest))?;
            if e.name.ends_with(".key") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err(&dest))?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        // Nothing half-restored stays behind.
        for f in written {
            let _ = std::fs::remove_file(f);
        }
    }
    result.map(|()| manifest)
}

/// Gives the restored files to the owner of `data_dir` (under systemd the `kasad` user, while
/// `kasad restore` runs as root), so the daemon can open them. Only root can; others keep them.
pub fn give_to_owner(data_dir: &Path, m: &Manifest) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self")
        .map(|x| x.uid())
        .unwrap_or(u32::MAX);
    let owner = std::fs::metadata(data_dir).map_err(io_err(data_dir))?;
    if me != 0 || owner.uid() == 0 {
        return Ok(());
    }
    for e in &m.files {
        let f = data_dir.join(&e.name);
        std::os::unix::fs::chown(&f, Some(owner.uid()), Some(owner.gid())).map_err(io_err(&f))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_restores_byte_for_byte_and_refuses_a_used_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let store = Store::open(&data.join("kasad.redb"), 4).unwrap();
        std::fs::write(data.join("jwt.key"), [7u8; 32]).unwrap();
        let out = dir.path().join("b.zip");
        let m = create(&store, &out, 1_000).unwrap();
        assert_eq!(
            m.files.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["kasad.redb", "jwt.key"]
        );
        let again = dir.path().join("restored");
        assert_eq!(restore(&out, &again).unwrap(), m);
        assert_eq!(std::fs::read(again.join("jwt.key")).unwrap(), [7u8; 32]);
        assert!(matches!(
            restore(&out, &again),
            Err(BackupError::NotEmpty(..))
        ));
        drop(store);
        Store::open(&again.join("kasad.redb"), 4).unwrap();
    }

    #[test]
    fn a_damaged_backup_is_refused_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kasad.redb"), 4).unwrap();
        let out = dir.path().join("b.zip");
        let mut m = create(&store, &out, 1).unwrap();
        // A manifest that disagrees with the database's bytes.
        m.files[0].sha256 = "00".repeat(32);
        let bad = dir.path().join("bad.zip");
        {
            let mut src = zip::ZipArchive::new(File::open(&out).unwrap()).unwrap();
            let mut w = zip::ZipWriter::new(File::create(&bad).unwrap());
            let opts = zip::write::SimpleFileOptions::default();
            let mut db = Vec::new();
            src.by_name("kasad.redb")
                .unwrap()
                .read_to_end(&mut db)
                .unwrap();
            w.start_file("kasad.redb", opts).unwrap();
            w.write_all(&db).unwrap();
            w.start_file(MANIFEST, opts).unwrap();
            w.write_all(&serde_json::to_vec(&m).unwrap()).unwrap();
            w.finish().unwrap();
        }
        let target = dir.path().join("target");
        let e = restore(&bad, &target).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(!target.join("kasad.redb").exists());
    }
}
