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
pub const FILES: [&str; 6] = [
    "kasad.redb",
    "staging.log",
    "jwt.key",
    "audit.key",
    "export.key",
    "statement.key",
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
    let (size, sha256) = copy_hashed(&mut f, zip).map_err(io_err(src))?;
    Ok(Entry {
        name: name.to_owned(),
        size,
        sha256,
    })
}

/// Copies `r` to `w`; the bytes copied and their SHA-256 (hex).
fn copy_hashed(r: &mut impl Read, w: &mut impl Write) -> io::Result<(u64, String)> {
    let (mut hash, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 16]);
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex(&hash.finalize())));
        }
        hash.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        size += n as u64;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Prefix of the files a backup works with in the data directory.
const TEMP_PREFIX: &str = ".backup-";

/// One backup at a time in this process (each needs the database's size again on disk, and
/// the start of one sweeps what an interrupted one left).
static BUSY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Removes its file when dropped, unless disarmed.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A new file only its owner may read (backups hold the keys and password hashes).
fn private_file(path: &Path) -> Result<File, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

/// Writes a backup of `store` (and the files beside it) to `out` (via a temporary file beside
/// it, renamed when complete; mode 0600). While a write transaction is held, the files are
/// only copied raw into the data directory (no commit can land; the time writes wait is one
/// plain file copy); they are hashed and compressed after. Refused when the data directory
/// lacks room for the copies. Every temporary file goes, whatever happens. Blocking.
pub fn create(store: &Store, out: &Path, now_ms: i64) -> Result<Manifest, BackupError> {
    // A second backup waits for the first (so it never sweeps the first's files).
    let _one = BUSY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = store
        .path()
        .parent()
        .ok_or_else(|| BackupError::Invalid("the database has no directory".into()))?
        .to_path_buf();
    sweep(&dir);
    let sources: Vec<(&str, PathBuf)> = FILES
        .iter()
        .map(|&name| {
            let src = if name == "kasad.redb" {
                store.path().to_path_buf()
            } else {
                dir.join(name)
            };
            (name, src)
        })
        .filter(|(_, src)| src.exists())
        .collect();
    let need: u64 = sources
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    if let Some(free) = crate::store::free_bytes(&dir) {
        // The raw copies, the zip (at most as large) and room for the database to grow.
        if free < need.saturating_mul(2).saturating_add(64 << 20) {
            return Err(BackupError::Invalid(format!(
                "not enough free space in {}: {} MB free, a backup needs about {} MB",
                dir.display(),
                free >> 20,
                (need.saturating_mul(2) >> 20) + 64
            )));
        }
    }
    let tag = crate::random::random_token::<6>();
    let copies: Vec<(String, TempFile)> = sources
        .iter()
        .map(|(name, _)| {
            let p = dir.join(format!("{TEMP_PREFIX}{tag}-{name}"));
            ((*name).to_owned(), TempFile(Some(p)))
        })
        .collect();
    store.with_writes_held(|| -> Result<(), BackupError> {
        for ((_, src), (_, copy)) in sources.iter().zip(&copies) {
            let dest = copy.0.as_ref().expect("armed");
            drop(private_file(dest)?);
            std::fs::copy(src, dest).map_err(io_err(src))?;
        }
        Ok(())
    })??;
    let tmp = TempFile(Some(out.with_extension("partial")));
    let partial = tmp.0.clone().expect("armed");
    let mut zip = zip::ZipWriter::new(private_file(&partial)?);
    let mut files = Vec::new();
    for (name, copy) in &copies {
        files.push(add(&mut zip, copy.0.as_ref().expect("armed"), name)?);
    }
    drop(copies);
    let manifest = Manifest {
        format: 1,
        kasad_version: env!("CARGO_PKG_VERSION").into(),
        created_ms: now_ms,
        files,
    };
    zip.start_file(MANIFEST, zip::write::SimpleFileOptions::default())?;
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid(e.to_string()))?;
    zip.write_all(&text).map_err(io_err(&partial))?;
    let file = zip.finish()?;
    file.sync_all().map_err(io_err(&partial))?;
    std::fs::rename(&partial, out).map_err(io_err(out))?;
    tmp.keep();
    Ok(manifest)
}

/// Removes what an interrupted backup left in `dir` (a daemon stop or a killed CLI).
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Restores the backup `file` into `data_dir`, which must hold no kasad data. Every file is
/// checked against the manifest and written under a temporary name first (mode 0600), then
/// moved into place with the database last and the directory synced, so an interrupted
/// restore leaves no half-written database. Returns the manifest. Blocking; the database is
/// opened (replaying its staging log) by the caller.
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
    if let Some(e) = manifest
        .files
        .iter()
        .find(|e| !FILES.contains(&e.name.as_str()))
    {
        return Err(BackupError::Invalid(format!(
            "unexpected file {:?}",
            e.name
        )));
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(data_dir)
            .map_err(io_err(data_dir))?;
    }
    let mut staged: Vec<(TempFile, PathBuf)> = Vec::new();
    for e in &manifest.files {
        let tmp = data_dir.join(format!(".restore-{}", e.name));
        let _ = std::fs::remove_file(&tmp);
        let guard = TempFile(Some(tmp.clone()));
        let mut out = private_file(&tmp)?;
        let mut src = zip.by_name(&e.name)?;
        let (size, sha256) = copy_hashed(&mut src, &mut out).map_err(io_err(&tmp))?;
        if size != e.size || sha256 != e.sha256 {
            return Err(BackupError::Invalid(format!(
                "{} does not match its checksum",
                e.name
            )));
        }
        out.sync_all().map_err(io_err(&tmp))?;
        staged.push((guard, data_dir.join(&e.name)));
    }
    // The database last: until it is in place, the directory holds no kasad data.
    staged.sort_by_key(|(_, dest)| dest.ends_with("kasad.redb"));
    for (guard, dest) in staged {
        let tmp = guard.0.clone().expect("armed");
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        guard.keep();
    }
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(data_dir))?;
    Ok(manifest)
}

/// Gives every file in `data_dir` to the directory's owner (under systemd the `kasad` user,
/// while `kasad restore` runs as root), so the daemon can open them. Only root can; others
/// keep them.
pub fn give_to_owner(data_dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self")
        .map(|x| x.uid())
        .unwrap_or(u32::MAX);
    let owner = std::fs::metadata(data_dir).map_err(io_err(data_dir))?;
    if me != 0 || owner.uid() == 0 {
        return Ok(());
    }
    give_to(data_dir, owner.uid(), owner.gid())
}

/// Gives every entry of `data_dir` to `uid`:`gid`, never through a symbolic link: a link
/// planted in the data directory is itself given away (`lchown`), not what it points to.
pub fn give_to(data_dir: &Path, uid: u32, gid: u32) -> Result<(), BackupError> {
    for e in std::fs::read_dir(data_dir)
        .map_err(io_err(data_dir))?
        .flatten()
    {
        let f = e.path();
        std::os::unix::fs::lchown(&f, Some(uid), Some(gid)).map_err(io_err(&f))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 10: `chown` followed links, so a link planted in the data directory handed its
    /// target to the daemon's user when root restored a backup.
    #[test]
    fn a_planted_link_is_given_away_itself_not_its_target() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("kasad.redb"), b"db").unwrap();
        let me = std::fs::metadata(&data).unwrap();
        // A file someone else owns: made so as root, else one of the system's.
        let victim = if me.uid() == 0 {
            let v = dir.path().join("victim");
            std::fs::write(&v, b"secret").unwrap();
            std::os::unix::fs::chown(&v, Some(4242), Some(4242)).unwrap();
            v
        } else {
            std::path::PathBuf::from("/etc/hostname")
        };
        let before = std::fs::metadata(&victim).unwrap();
        assert_ne!(
            before.uid(),
            me.uid(),
            "the victim must belong to someone else"
        );
        std::os::unix::fs::symlink(&victim, data.join("planted")).unwrap();
        give_to(&data, me.uid(), me.gid()).unwrap();
        let after = std::fs::metadata(&victim).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        let link = std::fs::symlink_metadata(data.join("planted")).unwrap();
        assert_eq!(link.uid(), me.uid());
    }

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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may read a backup");
        // Nothing of the backup's own stays in the data directory.
        let left: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let again = dir.path().join("restored");
        assert_eq!(restore(&out, &again).unwrap(), m);
        let mode = std::fs::metadata(again.join("kasad.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
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
