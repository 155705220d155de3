//! Where dashboards live between restarts. `DashboardStore` is the seam: standalone nodes
//! use `FileStore` (one JSON file per dashboard, written crash-safe); a cluster store can
//! implement the same trait.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use livedash_engine::Dashboard;
use uuid::Uuid;

/// A failure to read or write dashboards.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid dashboard: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "data directory {dir} is in use by another livedash node ({holder}); stop it or pass another --data-dir"
    )]
    Locked { dir: PathBuf, holder: String },
}

/// Durable dashboard storage. Every method returns only once the change is durable.
pub trait DashboardStore: Send + Sync {
    /// Every stored dashboard.
    fn load_all(&self) -> Result<Vec<Dashboard>, StoreError>;
    /// Creates or replaces one dashboard.
    fn put(&self, dashboard: &Dashboard) -> Result<(), StoreError>;
    /// Deletes one dashboard; deleting a missing one is not an error.
    fn delete(&self, id: Uuid) -> Result<(), StoreError>;
    /// Makes buffered writes durable; called at shutdown. Stores that write through need
    /// nothing here.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One `<dashboard_id>.json` per dashboard in a directory. A write goes to a temporary
/// file that is fsynced, renamed over the old one, and the directory fsynced, so after a
/// crash (even `kill -9` or power loss) each file is either the old or the new version.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// An exclusive lock on `<data_dir>/lock`, held for the life of the store (the
    /// process), so two nodes never share a data directory.
    _lock: fs::File,
}

/// Takes the data directory's lock, or names the node that holds it.
fn lock(data_dir: &Path) -> Result<fs::File, StoreError> {
    let path = data_dir.join("lock");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path)
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
            return Err(StoreError::Locked {
                dir: data_dir.to_path_buf(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(io(&path))?;
    Ok(file)
}

impl FileStore {
    /// Opens (creating if needed) `<data_dir>/dashboards`, locks the data directory
    /// against other nodes, and removes temporary files left by an interrupted write.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("dashboards");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock = lock(data_dir)?;
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(Self { dir, _lock: lock })
    }

    fn path_of(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DashboardStore for FileStore {
    fn load_all(&self) -> Result<Vec<Dashboard>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(io(&path))?;
            let dashboard: Dashboard =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            out.push(dashboard);
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.dashboard_id.cmp(&b.dashboard_id))
        });
        Ok(out)
    }

    fn put(&self, dashboard: &Dashboard) -> Result<(), StoreError> {
        let path = self.path_of(dashboard.dashboard_id);
        let tmp = path.with_extension("json.tmp");
        // Compact, as the size checks measured it: a file is no larger than the request.
        let bytes = serde_json::to_vec(dashboard).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let written = fs::File::create(&tmp)
            .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()))
            .map_err(io(&tmp))
            .and_then(|()| fs::rename(&tmp, &path).map_err(io(&path)));
        if let Err(e) = written {
            // Nothing changed: the temporary file goes too.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The new version is in place and is what the node serves from now on; a failed
        // directory sync only leaves it unsure whether a power cut would keep it.
        if let Err(e) = self.sync_dir() {
            tracing::warn!(
                "dashboard {} written, but syncing its directory failed: {e}; it may be the old version after a power cut: check the disk under --data-dir",
                dashboard.dashboard_id
            );
        }
        Ok(())
    }

    fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("livedash-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn put_load_delete_round_trip() {
        let dir = temp_dir("rt");
        let store = FileStore::open(&dir).unwrap();
        let d = Dashboard {
            dashboard_id: Uuid::new_v4(),
            name: "ops".into(),
            layout: serde_json::json!({"cols": 12}),
            widgets: Vec::new(),
        };
        store.put(&d).unwrap();
        // A leftover temporary file from a crash is cleaned up and never loaded.
        fs::write(dir.join("dashboards").join("x.json.tmp"), b"{garbage").unwrap();
        drop(store);
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![d.clone()]);
        store.delete(d.dashboard_id).unwrap();
        store.delete(d.dashboard_id).unwrap();
        assert!(store.load_all().unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_are_compact_and_a_failed_write_leaves_nothing_behind() {
        let dir = temp_dir("compact");
        let store = FileStore::open(&dir).unwrap();
        let mut d = Dashboard {
            dashboard_id: Uuid::new_v4(),
            name: "ops".into(),
            layout: serde_json::json!({"items": [{"i": 1, "x": 0}, {"i": 2, "x": 6}]}),
            widgets: Vec::new(),
        };
        store.put(&d).unwrap();
        let file = dir
            .join("dashboards")
            .join(format!("{}.json", d.dashboard_id));
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(text, serde_json::to_string(&d).unwrap(), "stored as sent");
        // The rename cannot replace a directory: the write fails, the old file stays, and
        // no temporary file is left.
        d.dashboard_id = Uuid::new_v4();
        let blocked = dir
            .join("dashboards")
            .join(format!("{}.json", d.dashboard_id));
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(store.put(&d).is_err());
        let names: Vec<String> = fs::read_dir(dir.join("dashboards"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_store_on_the_same_dir_names_the_holder() {
        let dir = temp_dir("lock");
        let first = FileStore::open(&dir).unwrap();
        let err = FileStore::open(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        FileStore::open(&dir).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_reported_by_path() {
        let dir = temp_dir("corrupt");
        let store = FileStore::open(&dir).unwrap();
        fs::write(dir.join("dashboards").join("bad.json"), b"{").unwrap();
        let err = store.load_all().unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
