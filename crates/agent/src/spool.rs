//! The disk spool: chunks wait here, in order, until a vault has them. A chunk is written to a
//! temporary file, flushed, then renamed into place, so a crash leaves whole chunks or nothing.
//! The spool is bounded: past `max_bytes` the oldest chunks are dropped (and counted).

use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next_seq: u64,
}

/// A chunk in the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    pub path: PathBuf,
    pub file_name: String,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir.join("rejected"))
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot create spool {}", dir.display()))?;
        let mut next_seq = 0;
        for (path, name) in entries(dir)? {
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).ok();
            } else if let Some(seq) = name.split_once('-').and_then(|(s, _)| s.parse::<u64>().ok()) {
                next_seq = next_seq.max(seq + 1);
            }
        }
        Ok(Spool { dir: dir.to_path_buf(), max_bytes, next_seq })
    }

    /// Adds a chunk after the others.
    pub fn push(&mut self, file_name: &str, bytes: &[u8]) -> Result<()> {
        if file_name.contains('/') || file_name.starts_with('.') {
            return Err(Error::invalid(format!("spool: bad chunk name {file_name:?}")));
        }
        let name = format!("{:012}-{file_name}", self.next_seq);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(&name))?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().kind_ctx(ErrorKind::Unavailable, || format!("spool: cannot write {name}"))?;
        self.next_seq += 1;
        self.enforce_bound()
    }

    fn enforce_bound(&self) -> Result<()> {
        let mut chunks = self.chunks()?;
        let mut total: u64 = chunks.iter().map(|c| std::fs::metadata(&c.path).map(|m| m.len()).unwrap_or(0)).sum();
        chunks.reverse();
        // Keep the newest chunk even if it alone is over the bound.
        while total > self.max_bytes && chunks.len() > 1 {
            let oldest = chunks.pop().expect("more than one chunk");
            total -= std::fs::metadata(&oldest.path).map(|m| m.len()).unwrap_or(0);
            tracing::warn!(chunk = %oldest.file_name, "spool is full: dropping the oldest chunk");
            metrics::counter!(crate::metrics::SPOOL_DROPPED_TOTAL).increment(1);
            std::fs::remove_file(&oldest.path).ok();
        }
        Ok(())
    }

    /// Chunks waiting, oldest first.
    pub fn chunks(&self) -> Result<Vec<Spooled>> {
        let mut out: Vec<Spooled> = entries(&self.dir)?
            .into_iter()
            .filter(|(path, name)| !name.ends_with(".tmp") && path.is_file())
            .filter_map(|(path, name)| {
                name.split_once('-').map(|(_, f)| Spooled { path: path.clone(), file_name: f.to_string() })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn oldest(&self) -> Result<Option<Spooled>> {
        Ok(self.chunks()?.into_iter().next())
    }

    pub fn remove(&self, chunk: &Spooled) -> Result<()> {
        std::fs::remove_file(&chunk.path)
            .kind_ctx(ErrorKind::Unavailable, || format!("spool: cannot remove {}", chunk.path.display()))
    }

    /// Sets aside a chunk every vault refuses for good, so it does not block those after it.
    pub fn reject(&self, chunk: &Spooled) -> Result<()> {
        let to = self.dir.join("rejected").join(chunk.path.file_name().expect("spooled files have names"));
        std::fs::rename(&chunk.path, to).kind_ctx(ErrorKind::Unavailable, || "spool: cannot set a chunk aside".into())
    }
}

fn entries(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let read =
        std::fs::read_dir(dir).kind_ctx(ErrorKind::Unavailable, || format!("cannot read spool {}", dir.display()))?;
    Ok(read.filter_map(|e| e.ok()).map(|e| (e.path(), e.file_name().to_string_lossy().into_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1000).unwrap();
        for i in 0..3 {
            spool.push(&format!("c{i}.mp4"), &[i as u8; 300]).unwrap();
        }
        drop(spool);
        std::fs::write(dir.path().join("000000000099-torn.mp4.tmp"), b"half").unwrap();
        let mut spool = Spool::open(dir.path(), 1000).unwrap();
        let names: Vec<String> = spool.chunks().unwrap().into_iter().map(|c| c.file_name).collect();
        assert_eq!(names, ["c0.mp4", "c1.mp4", "c2.mp4"], "order kept, torn write gone");
        spool.push("c3.mp4", &[3; 300]).unwrap(); // 1200 bytes > 1000: the oldest goes
        let names: Vec<String> = spool.chunks().unwrap().into_iter().map(|c| c.file_name).collect();
        assert_eq!(names, ["c1.mp4", "c2.mp4", "c3.mp4"]);
        let oldest = spool.oldest().unwrap().unwrap();
        spool.remove(&oldest).unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().file_name, "c2.mp4");
        assert!(spool.push("../evil.mp4", b"x").is_err());
    }
}
