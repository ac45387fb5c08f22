//! Atomic changes to the set of Parquet files.
//!
//! A flush adds files and retires WAL segments; a compaction adds one file and removes the
//! ones it merged. Either must happen entirely or not at all across a crash, or data is
//! lost or duplicated. The protocol:
//!
//! 1. new files are written as `<final>.tmp` and fsynced, and so are the directories that
//!    hold them, up to the data directory;
//! 2. a commit record listing the change is written to `<data>/commits/` (the commit point);
//! 3. the `.tmp` files are renamed to their final names;
//! 4. the caller retires what the commit names (WAL segments at once; merged files after a
//!    grace period, since a running query may still read them) and then deletes the record.
//!
//! On start, [`recover`] completes steps 3–4 for every commit record it finds and deletes
//! `.tmp` files no record names: their data is still in the WAL or in the files they were
//! to replace.

use std::collections::BTreeSet;
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
        // The new files' directory entries, and those of partitions just created for them,
        // must survive a crash that the record survives.
        let directories: BTreeSet<&Path> =
            self.add.iter().flat_map(|path| path.ancestors().skip(1).take_while(|dir| dir.starts_with(data_dir))).collect();
        for directory in directories {
            sync_dir(directory)?;
        }
        let dir = commits_dir(data_dir);
        fs::create_dir_all(&dir)?;
        let record = dir.join(format!("{id}.json"));
        let tmp = tmp_path(&record);
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &record)?;
        if let Err(error) = sync_dir(&dir).and_then(|()| self.rename_new_files()) {
            // The record may be durable, and the caller, told that the change failed, will
            // redo it: a restart completing this one as well would store its rows twice.
            self.undo(&record);
            return Err(error);
        }
        Ok(record)
    }

    fn rename_new_files(&self) -> io::Result<()> {
        for path in &self.add {
            let tmp = tmp_path(path);
            if tmp.exists() {
                fs::rename(&tmp, path)?;
            } else if !path.exists() {
                // Retention has deleted it since, with its partition's directory: a record
                // whose retirement failed outlives the files it added.
                continue;
            }
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Takes back an [`apply`](Self::apply) that failed after writing its record: the
    /// record first, so that a crash halfway leaves at worst rows twice (in a new file and
    /// still in the WAL or the merged files), never a WAL segment retired for a file that
    /// is gone. Best effort: what it cannot remove is logged.
    fn undo(&self, record: &Path) {
        let removed = fs::remove_file(record).and_then(|()| sync_dir(record.parent().unwrap_or(record)));
        if let Err(error) = removed {
            tracing::error!(%error, record = %record.display(), "could not take back a failed commit; a restart may store its rows twice");
            return;
        }
        for path in &self.add {
            for file in [tmp_path(path), path.clone()] {
                match fs::remove_file(&file) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => {
                        tracing::error!(%error, file = %file.display(), "could not remove a file of a failed commit");
                    }
                    _ => {}
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit adding `files` under `data_dir`, each written at its `.tmp` path.
    fn commit_adding(data_dir: &Path, files: &[&str]) -> Commit {
        let add: Vec<PathBuf> = files.iter().map(|file| data_dir.join(file)).collect();
        for path in &add {
            fs::create_dir_all(path.parent().expect("a partition")).expect("partition directory");
            fs::write(tmp_path(path), b"rows").expect("tmp file");
        }
        Commit { add, ..Commit::default() }
    }

    fn records(data_dir: &Path) -> usize {
        fs::read_dir(commits_dir(data_dir)).expect("commits directory").count()
    }

    #[test]
    fn a_commit_that_fails_after_its_record_leaves_neither_record_nor_files() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let commit = commit_adding(dir.path(), &["t/hour=1/a.parquet", "t/hour=2/b.parquet"]);
        // The second file cannot take its final name: a directory holds it.
        fs::create_dir_all(commit.add[1].join("in-the-way")).expect("a directory in the way");

        assert!(commit.apply(dir.path(), "failed").is_err());
        assert_eq!(records(dir.path()), 0, "a restart must not complete the change the caller will redo");
        assert!(!commit.add[0].exists() && !tmp_path(&commit.add[0]).exists());
        assert!(!tmp_path(&commit.add[1]).exists());
    }

    #[test]
    fn recovery_completes_a_record_whose_partition_retention_has_deleted() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let wal_dir = dir.path().join("wal");
        fs::create_dir_all(&wal_dir).expect("wal directory");
        let commit = commit_adding(dir.path(), &["t/hour=1/a.parquet"]);
        commit.apply(dir.path(), "flushed").expect("applied");
        // Its retirement failed, and retention dropped the partition later.
        fs::remove_dir_all(dir.path().join("t/hour=1")).expect("partition dropped");

        assert_eq!(recover(dir.path(), &wal_dir).expect("recovers"), 1);
        assert_eq!(records(dir.path()), 0);
    }
}
