//! Updated versions on disk: a head slot's under `<state_dir>/models/<slot>/`, a model's under
//! `<state_dir>/models/<model>@<precision>/` (`@` is not allowed in slot names, so the two
//! cannot meet):
//!
//! ```text
//! <version>/head.safetensors   the payload as received (sha256 checked before it got here);
//!                              model.onnx for a model
//! <version>/update.json        the signed manifest and signature it came with
//! current -> <version>         symlink, replaced by rename (atomic); absent: the shipped head
//! previous -> <version>        what `rollback` returns to; absent: the shipped head
//! issued_at_ms                 the last accepted order's time (replay protection)
//! probation                    a model version on probation, and how many starts it has had
//! incoming/<sha256>.part       a transfer in progress, kept across restarts for resuming
//! ```
//!
//! Versions other than `current` and `previous` are deleted after each activation.

use std::io;
use std::path::{Path, PathBuf};

pub const HEAD_FILE: &str = "head.safetensors";
/// Names inside a store's folder that are not versions: a version may not take them.
pub const RESERVED_NAMES: [&str; 5] = ["current", "previous", "incoming", "issued_at_ms", "probation"];
pub const MODEL_FILE: &str = "model.onnx";

#[derive(Debug, Clone)]
pub struct VersionStore {
    dir: PathBuf,
    file: &'static str,
}

impl VersionStore {
    /// A head slot's store; `slot` must already be a valid name (see [`valid_name`]).
    pub fn new(state_dir: &Path, slot: &str) -> VersionStore {
        VersionStore { dir: state_dir.join("models").join(slot), file: HEAD_FILE }
    }

    /// A model variant's store; `name` is a catalog model's name.
    pub fn for_model(state_dir: &Path, name: &str, precision: &crate::Precision) -> VersionStore {
        VersionStore { dir: state_dir.join("models").join(format!("{name}@{precision}")), file: MODEL_FILE }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn incoming(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    /// The payload file of a version.
    pub fn path(&self, version: &str) -> PathBuf {
        self.dir.join(version).join(self.file)
    }

    /// The signed record a version came with (`update.json`).
    pub fn record(&self, version: &str) -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(self.dir.join(version).join("update.json")).ok()?).ok()
    }

    /// Deletes a version that never became current (a model that failed to load).
    pub fn discard(&self, version: &str) -> io::Result<()> {
        if self.current().as_deref() == Some(version) || self.previous().as_deref() == Some(version) {
            return Ok(());
        }
        std::fs::remove_dir_all(self.dir.join(version))
    }

    /// Writes a version's files into a temporary folder, syncs them and renames the folder
    /// into place, replacing an older copy of the same version.
    pub fn install(&self, version: &str, head: &[u8], record: &[u8]) -> io::Result<()> {
        if !valid_version(version) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{version:?} cannot name a version")));
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{version}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        write_synced(&tmp.join(self.file), head)?;
        write_synced(&tmp.join("update.json"), record)?;
        let dst = self.dir.join(version);
        if dst.exists() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::rename(&tmp, &dst)?;
        sync_dir(&self.dir)
    }

    /// Makes `version` current; the old current becomes previous. Then prunes.
    pub fn activate(&self, version: &str) -> io::Result<()> {
        match self.current() {
            Some(old) if old != version => self.point("previous", Some(&old))?,
            Some(_) => {}
            None => self.point("previous", None)?,
        }
        self.point("current", Some(version))?;
        self.prune()
    }

    /// Returns to the previous head: `current` takes `previous`'s place (or the shipped head
    /// when there is none), `previous` is cleared. Returns the new current version.
    pub fn rollback(&self) -> io::Result<Option<String>> {
        let previous = self.previous();
        self.point("current", previous.as_deref())?;
        self.point("previous", None)?;
        self.prune()?;
        Ok(previous)
    }

    pub fn current(&self) -> Option<String> {
        self.pointer("current")
    }

    pub fn previous(&self) -> Option<String> {
        self.pointer("previous")
    }

    /// The last accepted order's time: 0 when none was ever accepted (no file). A file that
    /// cannot be read or parsed is an error, so that replay protection fails closed.
    pub fn last_issued_at_ms(&self) -> io::Result<u64> {
        let path = self.dir.join("issued_at_ms");
        match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {s:?} is not a time: {e}", path.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }

    /// Raises the last accepted order's time to `t` (never lowers it: an older order finishing
    /// late must not reopen a window), durably (file synced, renamed, folder synced).
    pub fn set_last_issued_at_ms(&self, t: u64) -> io::Result<()> {
        let t = t.max(self.last_issued_at_ms()?);
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(".issued_at_ms.tmp");
        write_synced(&tmp, t.to_string().as_bytes())?;
        std::fs::rename(tmp, self.dir.join("issued_at_ms"))?;
        sync_dir(&self.dir)
    }

    /// Puts `version` on probation (no start counted yet), durably.
    pub fn begin_probation(&self, version: &str) -> io::Result<()> {
        self.write_probation(version, 0)
    }

    /// The version on probation and the starts it has had; none when no file. A file that
    /// cannot be parsed reads as none: probation is a safety net, not a lock.
    pub fn probation(&self) -> Option<(String, u32)> {
        let text = std::fs::read_to_string(self.dir.join("probation")).ok()?;
        let (version, starts) = text.trim().split_once(' ')?;
        Some((version.to_string(), starts.parse().ok()?)).filter(|(v, _)| valid_version(v))
    }

    /// Counts one more start of the version on probation; returns the count.
    pub fn count_probation_start(&self, version: &str) -> io::Result<u32> {
        let starts = match self.probation() {
            Some((v, n)) if v == version => n + 1,
            _ => 1,
        };
        self.write_probation(version, starts)?;
        Ok(starts)
    }

    /// Probation is over (passed, or the version is gone).
    pub fn end_probation(&self) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join("probation")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => sync_dir(&self.dir),
        }
    }

    fn write_probation(&self, version: &str, starts: u32) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(".probation.tmp");
        write_synced(&tmp, format!("{version} {starts}\n").as_bytes())?;
        std::fs::rename(tmp, self.dir.join("probation"))?;
        sync_dir(&self.dir)
    }

    fn pointer(&self, name: &str) -> Option<String> {
        let target = std::fs::read_link(self.dir.join(name)).ok()?;
        let v = target.file_name()?.to_str()?.to_string();
        valid_name(&v).then_some(v)
    }

    /// Atomically sets (or removes) a pointer symlink.
    fn point(&self, name: &str, version: Option<&str>) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let link = self.dir.join(name);
        match version {
            None => match std::fs::remove_file(&link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
            Some(v) => {
                let tmp = self.dir.join(format!(".{name}.tmp"));
                let _ = std::fs::remove_file(&tmp);
                symlink(Path::new(v), &tmp)?;
                std::fs::rename(&tmp, &link)?;
            }
        }
        sync_dir(&self.dir)
    }

    /// Deletes version folders that neither pointer names.
    fn prune(&self) -> io::Result<()> {
        let keep = [self.current(), self.previous()];
        for e in std::fs::read_dir(&self.dir)?.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_version = e.file_type().is_ok_and(|t| t.is_dir()) && valid_name(&name) && name != "incoming";
            if is_version && !keep.iter().any(|k| k.as_deref() == Some(name.as_str())) {
                std::fs::remove_dir_all(e.path())?;
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "head updates need a Unix file system"))
}

/// Names a version may have: a [`valid_name`] that is none of the store's own entries.
pub fn valid_version(name: &str) -> bool {
    valid_name(name) && !RESERVED_NAMES.contains(&name)
}

/// Names a head or model may have: they become folder names and topic levels, so only
/// `[A-Za-z0-9._-]`, 1 to 64 long, not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activate_keeps_one_previous_and_rollback_walks_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = VersionStore::new(dir.path(), "door");
        assert_eq!((s.current(), s.previous()), (None, None));
        for v in ["1", "2", "3"] {
            s.install(v, v.as_bytes(), b"{}").unwrap();
            s.activate(v).unwrap();
        }
        assert_eq!((s.current().as_deref(), s.previous().as_deref()), (Some("3"), Some("2")));
        assert!(!s.dir().join("1").exists(), "older versions pruned");
        assert_eq!(std::fs::read(s.path("3")).unwrap(), b"3");
        assert_eq!(s.rollback().unwrap().as_deref(), Some("2"));
        assert_eq!((s.current().as_deref(), s.previous()), (Some("2"), None));
        assert!(!s.dir().join("3").exists());
        assert_eq!(s.rollback().unwrap(), None, "back to the shipped head");
        assert_eq!(s.current(), None);
    }

    #[test]
    fn probation_counts_starts_per_version_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let s = VersionStore::for_model(dir.path(), "nanodet", &crate::Precision::Int8);
        assert_eq!(s.probation(), None);
        s.begin_probation("2").unwrap();
        assert_eq!(s.probation(), Some(("2".into(), 0)));
        assert_eq!(s.count_probation_start("2").unwrap(), 1);
        assert_eq!(s.count_probation_start("2").unwrap(), 2);
        assert_eq!(s.count_probation_start("3").unwrap(), 1, "another version starts over");
        s.end_probation().unwrap();
        assert_eq!(s.probation(), None);
        s.end_probation().unwrap();
        std::fs::write(s.dir().join("probation"), "garbage").unwrap();
        assert_eq!(s.probation(), None);
    }

    #[test]
    fn issued_at_ms_persists() {
        let dir = tempfile::tempdir().unwrap();
        let s = VersionStore::new(dir.path(), "door");
        assert_eq!(s.last_issued_at_ms().unwrap(), 0);
        s.set_last_issued_at_ms(42).unwrap();
        assert_eq!(VersionStore::new(dir.path(), "door").last_issued_at_ms().unwrap(), 42);
        // an older order finishing late does not lower it
        s.set_last_issued_at_ms(7).unwrap();
        assert_eq!(s.last_issued_at_ms().unwrap(), 42);
        // unreadable: an error (replay protection fails closed), not 0
        std::fs::write(dir.path().join("models/door/issued_at_ms"), "garbage").unwrap();
        assert!(s.last_issued_at_ms().is_err());
        assert!(s.set_last_issued_at_ms(50).is_err());
    }

    #[test]
    fn the_stores_own_names_are_not_versions() {
        let dir = tempfile::tempdir().unwrap();
        let s = VersionStore::new(dir.path(), "door");
        for name in RESERVED_NAMES {
            assert!(!valid_version(name));
            assert!(s.install(name, b"x", b"{}").is_err(), "{name}");
        }
        assert!(valid_version("2.0.1") && s.install("2.0.1", b"x", b"{}").is_ok());
    }
}
