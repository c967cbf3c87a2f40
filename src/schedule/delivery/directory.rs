//! Delivery into a directory under `[delivery] directory_roots` (a USB stick, an SMB mount):
//! every step through directory descriptors opened beneath the root without following links,
//! a fresh temp file, fsync, and a rename that never replaces an existing file.

use super::{DeliveryError, Invalid, Parcel, file_name, invalid};
use crate::config::Settings;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// `path` if it is absolute, free of `..`, and under one of `roots`; with that root.
pub(super) fn allowed_dir(path: &str, roots: &[PathBuf]) -> Result<(PathBuf, PathBuf), Invalid> {
    let p = PathBuf::from(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(format!(
            "path {path:?} must be an absolute directory without \"..\""
        )));
    }
    let root = roots.iter().find(|r| p.starts_with(r)).ok_or_else(|| {
        invalid(format!(
            "path {path:?} is not under a directory in [delivery] directory_roots ({})",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok((root.clone(), p))
}

/// Whether `dir` lies on another file system than the directory holding `root` (so a mount
/// sits between them).
pub fn is_mounted(root: &Path, dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let base = root.parent().unwrap_or(root);
    Ok(std::fs::metadata(dir)?.dev() != std::fs::metadata(base)?.dev())
}

fn to_directory(
    src: &Path,
    root: &Path,
    dir: &Path,
    name: &str,
    must_mount: bool,
) -> Result<String, DeliveryError> {
    to_directory_with(src, root, dir, name, must_mount, &|| {})
}

/// Opens directory `name` inside `dir`, never through a symbolic link and never outside it:
/// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or an `O_NOFOLLOW` open where the
/// kernel has no `openat2` (before Linux 5.6).
fn open_beneath(dir: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(
        dir,
        name,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        other => other,
    }
}

/// `name` with `-n` before its extension (`report.csv.gz` → `report-2.csv.gz`).
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let ext_at = [".csv", ".json", ".xlsx", ".pdf", ".zip", ".gz"]
        .iter()
        .filter_map(|e| name.find(e))
        .min()
        .or_else(|| name.rfind('.'))
        .unwrap_or(name.len());
    format!("{}-{n}{}", &name[..ext_at], &name[ext_at..])
}

/// Copies the run's file into `path` (a folder under `[delivery] directory_roots`), named by
/// the `filename` template or the export's own name; returns what was done.
pub(super) async fn deliver(
    path: &str,
    filename: Option<&str>,
    require_mount: Option<bool>,
    parcel: &Parcel,
    s: &Settings,
) -> Result<String, DeliveryError> {
    let refused = |e: Invalid| DeliveryError::Refused(e.message);
    let (root, dir) = allowed_dir(path, &s.delivery.directory_roots).map_err(refused)?;
    let name = match filename {
        Some(t) => file_name(t, &parcel.vars).map_err(refused)?,
        None => parcel
            .export
            .file_name
            .clone()
            .unwrap_or_else(|| parcel.export.disk_name()),
    };
    let must_mount = require_mount.unwrap_or(s.delivery.require_mount);
    let src = parcel.file.clone();
    tokio::task::spawn_blocking(move || to_directory(&src, &root, &dir, &name, must_mount))
        .await
        .map_err(|e| DeliveryError::Refused(format!("delivery task failed: {e}")))?
}

/// Where a write goes: `dir` beneath `root`, named for errors as `shown`.
struct Target<'a> {
    root: &'a Path,
    dir: &'a Path,
    shown: String,
}

impl Target<'_> {
    fn io(&self, source: std::io::Error) -> DeliveryError {
        DeliveryError::Io {
            path: self.shown.clone(),
            source,
        }
    }

    fn outside(&self) -> DeliveryError {
        DeliveryError::Refused(format!(
            "{} leads outside {} through a symbolic link",
            self.shown,
            self.root.display()
        ))
    }

    /// Opens `dir` one component at a time beneath the root, never through a link; creates
    /// missing folders only on a mounted file system when `must_mount`.
    fn open(&self, must_mount: bool) -> Result<OwnedFd, DeliveryError> {
        use rustix::fs::{Mode, OFlags};
        use rustix::io::Errno;
        let rest = self
            .dir
            .strip_prefix(self.root)
            .map_err(|_| self.outside())?;
        // The root is the administrator's (it may itself be a link, as /media can be).
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut cur = match rustix::fs::open(self.root, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if must_mount => {
                return Err(DeliveryError::NotMounted(self.shown.clone()));
            }
            Err(e) => return Err(self.io(e.into())),
        };
        let base_dev = std::fs::metadata(self.root.parent().unwrap_or(self.root))
            .map_err(|e| self.io(e))?
            .dev();
        let unmounted = |fd: &OwnedFd| -> Result<bool, DeliveryError> {
            let st = rustix::fs::fstat(fd).map_err(|e| self.io(e.into()))?;
            Ok(must_mount && st.st_dev == base_dev)
        };
        let escape = |e: Errno| match e {
            Errno::LOOP | Errno::XDEV | Errno::NOTDIR => self.outside(),
            e => self.io(e.into()),
        };
        for part in rest.components() {
            let Component::Normal(part) = part else {
                return Err(self.outside());
            };
            cur = match open_beneath(&cur, part) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    // Never create folders on the SD card's bare mount point; missing folders
                    // on the mounted stick or share are created.
                    if unmounted(&cur)? {
                        return Err(DeliveryError::NotMounted(self.shown.clone()));
                    }
                    match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(0o750)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.io(e.into())),
                    }
                    open_beneath(&cur, part).map_err(escape)?
                }
                Err(e) => return Err(escape(e)),
            };
        }
        if unmounted(&cur)? {
            return Err(DeliveryError::NotMounted(self.shown.clone()));
        }
        Ok(cur)
    }
}

/// Writes `src` as `name` (or `name-1`, `name-2` … when taken: nothing is ever overwritten)
/// into `dir` beneath `root`. Every step goes through directory descriptors opened beneath
/// the root without following links, so a link swapped in at any moment cannot move the
/// write elsewhere. `before_write` runs between opening the directory and writing (tests).
fn to_directory_with(
    src: &Path,
    root: &Path,
    dir: &Path,
    name: &str,
    must_mount: bool,
    before_write: &dyn Fn(),
) -> Result<String, DeliveryError> {
    let target = Target {
        root,
        dir,
        shown: dir.display().to_string(),
    };
    let cur = target.open(must_mount)?;
    before_write();
    // A fresh, unguessable temp name, created exclusively (never through an existing link)
    // in the opened directory, then moved to a free name without replacing anything.
    let tmp = format!(".kasad-{}.part", crate::random::random_token::<9>());
    let written = write_new(&cur, &tmp, src, name).map_err(|e| {
        let _ = rustix::fs::unlinkat(&cur, tmp.as_str(), rustix::fs::AtFlags::empty());
        target.io(e)
    })?;
    // Some network file systems refuse to fsync a directory; the file itself is synced.
    if let Err(e) = rustix::fs::fsync(&cur) {
        tracing::warn!(dir = %target.shown, error = %e, "could not sync the directory");
    }
    Ok(format!("written to {}", dir.join(written).display()))
}

/// Copies `src` into the new file `tmp` in `dir`, syncs it, and gives it the first free name
/// of `name`, `name-1` … `name-999`.
fn write_new(dir: &OwnedFd, tmp: &str, src: &Path, name: &str) -> std::io::Result<String> {
    use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
    use rustix::io::Errno;
    let fd = rustix::fs::openat(
        dir,
        tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    )?;
    let mut to = std::fs::File::from(fd);
    std::io::copy(&mut std::fs::File::open(src)?, &mut to)?;
    to.sync_all()?;
    for n in 0..1000 {
        let target = numbered(name, n);
        match rustix::fs::renameat_with(dir, tmp, dir, target.as_str(), RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(target),
            Err(Errno::EXIST) => continue,
            // File systems without RENAME_NOREPLACE (some network ones): a hard link, which
            // never replaces either, then the temp name goes.
            Err(Errno::INVAL | Errno::NOSYS) => {
                match rustix::fs::linkat(dir, tmp, dir, target.as_str(), AtFlags::empty()) {
                    Ok(()) => {
                        rustix::fs::unlinkat(dir, tmp, AtFlags::empty())?;
                        return Ok(target);
                    }
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!(
        "{name} and 999 numbered names are taken"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_detection_compares_file_systems() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("usb");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mounted(tmp.path(), &sub).unwrap(), "same file system");
        // /proc is always its own file system under /.
        assert!(is_mounted(Path::new("/proc"), Path::new("/proc")).unwrap());
        assert!(is_mounted(tmp.path(), &tmp.path().join("gone")).is_err());
    }

    #[test]
    fn directory_writes_never_follow_links_out_of_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let src = root.path().join("export.csv");
        std::fs::write(&src, b"a,b\r\n").unwrap();
        // A directory link under the root that leads outside is refused.
        let link = root.path().join("usb");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let e = to_directory(&src, root.path(), &link.join("x"), "f.csv", false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing is created outside"
        );
        // A file link at the target name is neither written through nor replaced: the export
        // takes the next free name.
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("f.csv")).unwrap();
        let done = to_directory(&src, root.path(), &dir, "f.csv", false).unwrap();
        assert!(done.ends_with("f-1.csv"), "{done}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.join("f-1.csv")).unwrap(), b"a,b\r\n");
        assert!(dir.join("f.csv").is_symlink());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|d| d.file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
    }

    /// Finding 9: the directory was checked for links and then written by path, so a link
    /// swapped in between moved the file elsewhere (the data directory, say).
    #[test]
    fn a_link_swapped_in_during_delivery_writes_nothing_outside() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let src = root.path().join("export.csv");
        std::fs::write(&src, b"data").unwrap();
        let dir = root.path().join("usb").join("reports");
        std::fs::create_dir_all(&dir).unwrap();
        let (real, out) = (dir.clone(), outside.path().to_path_buf());
        let moved = root.path().join("usb").join("reports.old");
        let swap = || {
            // After the checks, before the write: the folder becomes a link to elsewhere.
            std::fs::rename(&real, &moved).unwrap();
            std::os::unix::fs::symlink(&out, &real).unwrap();
        };
        to_directory_with(&src, root.path(), &dir, "f.csv", false, &swap).unwrap();
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside the root"
        );
        // The file went into the folder that was opened (now renamed), inside the root.
        assert_eq!(std::fs::read(moved.join("f.csv")).unwrap(), b"data");
    }

    #[test]
    fn nothing_is_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("r.csv.gz"), b"older").unwrap();
        let src = root.path().join("src");
        for (i, body) in [b"one", b"two"].iter().enumerate() {
            std::fs::write(&src, body).unwrap();
            let done = to_directory(&src, root.path(), &dir, "r.csv.gz", false).unwrap();
            assert!(done.ends_with(&format!("r-{}.csv.gz", i + 1)), "{done}");
        }
        assert_eq!(std::fs::read(dir.join("r.csv.gz")).unwrap(), b"older");
        assert_eq!(std::fs::read(dir.join("r-2.csv.gz")).unwrap(), b"two");
        assert_eq!(numbered("report", 3), "report-3");
        assert_eq!(numbered("a.b.xlsx", 1), "a.b-1.xlsx");
    }

    #[test]
    fn a_reader_never_sees_a_partial_file() {
        use sha2::Digest;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        let versions: Vec<Vec<u8>> = (0..3u8).map(|v| vec![b'a' + v; 8 << 20]).collect();
        let hashes: Vec<_> = versions.iter().map(sha2::Sha256::digest).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for n in ["f.csv", "f-1.csv", "f-2.csv"] {
                        if let Ok(b) = std::fs::read(dir.join(n)) {
                            seen.push(sha2::Sha256::digest(&b));
                        }
                    }
                }
                seen
            })
        };
        for v in &versions {
            let src = root.path().join("src");
            std::fs::write(&src, v).unwrap();
            to_directory(&src, root.path(), &dir, "f.csv", false).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().unwrap();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|h| hashes.contains(h)),
            "a partial file was read"
        );
    }

    #[test]
    fn a_missing_folder_on_a_mounted_target_is_created() {
        // /dev/shm is a tmpfs mounted below /dev (devtmpfs): a mount between root and target.
        let base = tempfile::tempdir_in("/dev/shm").unwrap();
        let src = base.path().join("export.csv");
        std::fs::write(&src, b"x").unwrap();
        let dir = base.path().join("kasad").join("reports");
        let done = to_directory(&src, Path::new("/dev"), &dir, "f.csv", true).unwrap();
        assert!(done.contains("written to"), "{done}");
        assert_eq!(std::fs::read(dir.join("f.csv")).unwrap(), b"x");
        // Not mounted: a folder on the root's own file system.
        let plain = tempfile::tempdir().unwrap();
        let e = to_directory(
            &src,
            plain.path(),
            &plain.path().join("usb/x"),
            "f.csv",
            true,
        )
        .unwrap_err();
        assert!(matches!(e, DeliveryError::NotMounted(_)), "{e}");
        assert!(
            !plain.path().join("usb").exists(),
            "nothing created on the SD card"
        );
    }
}
