//! Atomic changes to the set of Parquet files.
//!
//! A flush adds files and retires WAL segments; a compaction adds one file and removes the
//! ones it merged. Either must happen entirely or not at all across a crash, or data is
//! lost or duplicated. The protocol:
//!
//! 1. new files are written as `<final>.tmp` and fsynced;
//! 2. a commit record listing the change is written to `<data>/commits/` (the commit point);
//! 3. the `.tmp` files are renamed to their final names;
//! 4. the caller retires what the commit names (WAL segments at once; merged files after a
//!    grace period, since a running query may still read them) and then deletes the record.
//!
//! On start, [`recover`] completes steps 3–4 for every commit record it finds and deletes
//! `.tmp` files no record names: their data is still in the WAL or in the files they were
//! to replace.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::wal::remove_segments_through;

/// A change to the set of files.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Commit {
    /// Final paths of new files; each is written first at `<path>.tmp`.
    pub(crate) add: Vec<PathBuf>,
    /// Files this change replaces.
    pub(crate) remove: Vec<PathBuf>,
    /// WAL segments up to this one are in the new files.
    pub(crate) wal_through: Option<u64>,
}

/// The path a new file is written at before its commit.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

fn commits_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("commits")
}

impl Commit {
    /// Steps 2 and 3: returns the commit record's path, to delete once the change is retired.
    pub(crate) fn apply(&self, data_dir: &Path, id: &str) -> io::Result<PathBuf> {
        let dir = commits_dir(data_dir);
        fs::create_dir_all(&dir)?;
        let record = dir.join(format!("{id}.json"));
        let tmp = tmp_path(&record);
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &record)?;
        sync_dir(&dir)?;
        self.rename_new_files()?;
        Ok(record)
    }

    fn rename_new_files(&self) -> io::Result<()> {
        for path in &self.add {
            let tmp = tmp_path(path);
            if tmp.exists() {
                fs::rename(&tmp, path)?;
            }
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Step 4 for everything the commit names, then the record itself.
    pub(crate) fn retire(&self, wal_dir: &Path, record: &Path) -> io::Result<()> {
        if let Some(through) = self.wal_through {
            remove_segments_through(wal_dir, through)?;
        }
        for path in &self.remove {
            match fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        fs::remove_file(record)
    }
}

/// Completes interrupted commits and removes orphaned `.tmp` files. Run before anything
/// reads the catalog or the WAL.
pub(crate) fn recover(data_dir: &Path, wal_dir: &Path) -> io::Result<usize> {
    let dir = commits_dir(data_dir);
    let mut completed = 0;
    if dir.exists() {
        for entry in fs::read_dir(&dir)? {
            let record = entry?.path();
            if record.extension().is_none_or(|ext| ext != "json") {
                fs::remove_file(&record)?;
                continue;
            }
            let commit: Commit = serde_json::from_slice(&fs::read(&record)?)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            commit.rename_new_files()?;
            commit.retire(wal_dir, &record)?;
            completed += 1;
        }
    }
    remove_tmp_files(data_dir)?;
    Ok(completed)
}

fn remove_tmp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_tmp_files(&path)?;
        } else if path.extension().is_some_and(|ext| ext == "tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
