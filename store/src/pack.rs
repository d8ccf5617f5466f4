//! Pack files: where chunk bytes live on disk.
//!
//! Every upload appends its new chunks to one pack file of its own and fsyncs it once, instead
//! of creating and fsyncing a file per chunk (a 1 GiB object is ~1000 chunks; per-file fsync
//! plus directory fsync made durable PUTs several times slower on ext4). A pack is written
//! under `tmp/`, fsynced, renamed into `packs/` and the directory fsynced before the metadata
//! batch that references it commits; a crash before that commit leaves a pack no record
//! points to, which `PackSet::recover` deletes at the next start.
//!
//! A pack's record counts its live bytes; when the last chunk in it is released the file is
//! unlinked. Readers hold open file handles (`Arc<File>`), so an unlink never cuts a read
//! that already started.
//!
//! Reads are plain `pread`s into a buffer, never a mapping: a disk that fails a read then
//! returns `EIO` to one request (the copy is dropped and fetched again from a peer), where a
//! mapped page that cannot be read kills the whole process with SIGBUS. The copy this costs
//! is small beside the BLAKE3 check every read is given.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{Result, StoreError};

/// Names one pack file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub u64);

impl PackId {
    fn file_name(self) -> String {
        format!("{:016x}.pack", self.0)
    }

    fn parse_file_name(name: &str) -> Option<Self> {
        let hex = name.strip_suffix(".pack")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(PackId)
    }
}

/// The pack directories of one store, and a cache of open pack files.
pub struct PackSet {
    packs_dir: PathBuf,
    tmp_dir: PathBuf,
    open: Mutex<HashMap<PackId, Arc<File>>>,
}

impl PackSet {
    /// The directory holding the sealed packs.
    pub fn dir(&self) -> &Path {
        &self.packs_dir
    }

    /// Bytes the sealed pack files take on disk (their lengths).
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(&self.packs_dir)? {
            match entry?.metadata() {
                Ok(m) if m.is_file() => total += m.len(),
                Ok(_) => {}
                // Collected between listing and looking: not there any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(total)
    }

    /// Creates the directories under `root` if needed.
    pub fn open(root: &Path) -> Result<Self> {
        let packs_dir = root.join("packs");
        let tmp_dir = root.join("tmp");
        fs::create_dir_all(&packs_dir)?;
        fs::create_dir_all(&tmp_dir)?;
        Ok(Self {
            packs_dir,
            tmp_dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Removes what a crash left behind: everything in `tmp/` and every pack `is_live` denies.
    /// Returns the number of files removed.
    pub fn recover(&self, is_live: impl Fn(PackId) -> Result<bool>) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp_dir)? {
            let entry = entry?;
            fs::remove_file(entry.path()).or_else(|e| {
                if entry.path().is_dir() {
                    fs::remove_dir_all(entry.path())
                } else {
                    Err(e)
                }
            })?;
            removed += 1;
        }
        for entry in fs::read_dir(&self.packs_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let live = match name.to_str().and_then(PackId::parse_file_name) {
                Some(id) => is_live(id)?,
                None => false,
            };
            if !live {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            File::open(&self.packs_dir)?.sync_all()?;
        }
        Ok(removed)
    }

    /// Starts a new pack in `tmp/`.
    pub fn writer(&self) -> Result<PackWriter> {
        let id = PackId(rand::random::<u64>());
        let tmp_path = self.tmp_dir.join(id.file_name());
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&tmp_path)?;
        Ok(PackWriter {
            id,
            file,
            tmp_path,
            len: 0,
            final_dir: self.packs_dir.clone(),
            sealed: false,
            flushed: 0,
        })
    }

    /// `len` bytes at `offset` of pack `id`.
    pub fn read(&self, id: PackId, offset: u64, len: usize) -> Result<Bytes> {
        let mut buf = Vec::new();
        self.read_into(id, offset, len, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Copies `len` bytes at `offset` of pack `id` into `buf` (resized to `len`).
    pub fn read_into(&self, id: PackId, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let file = self.handle(id)?;
        buf.resize(len, 0);
        file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::Corrupt(format!(
                    "pack {id:?} is shorter than {} bytes",
                    offset + len as u64
                ))
            } else {
                StoreError::Io(e)
            }
        })
    }

    /// The BLAKE3 of `len` bytes at `offset` of pack `id`, read in 256 KiB steps into one
    /// buffer per thread: a chunk is checked without being held (GET checks, the scrub).
    pub fn hash(&self, id: PackId, offset: u64, len: usize) -> Result<crate::ChunkHash> {
        const STEP: usize = 256 * 1024;
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            let mut hasher = blake3::Hasher::new();
            let mut at = 0usize;
            while at < len {
                let n = STEP.min(len - at);
                self.read_into(id, offset + at as u64, n, buf)?;
                hasher.update(buf);
                at += n;
            }
            Ok(crate::ChunkHash::from(hasher.finalize()))
        })
    }

    /// Writes, syncs and removes a small file where packs are staged: whether a chunk write
    /// could land now (after the disk was full).
    pub fn probe(&self) -> Result<()> {
        let path = self.tmp_dir.join("write-probe");
        let outcome = (|| {
            let mut f = File::create(&path)?;
            f.write_all(&[0u8; 64 * 1024])?;
            f.sync_all()
        })();
        let _ = fs::remove_file(&path);
        Ok(outcome?)
    }

    /// Opens a sealed pack; one that is not there is damage (a record points to it).
    fn open_sealed(&self, id: PackId) -> Result<File> {
        File::open(self.packs_dir.join(id.file_name())).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::Corrupt(format!("pack {id:?} is missing"))
            } else {
                StoreError::Io(e)
            }
        })
    }

    fn handle(&self, id: PackId) -> Result<Arc<File>> {
        let mut open = self.open.lock().map_err(|_| StoreError::Closed)?;
        if let Some(f) = open.get(&id) {
            return Ok(f.clone());
        }
        let file = Arc::new(self.open_sealed(id)?);
        // The cache only saves open() calls; bound it so a huge store keeps few descriptors.
        if open.len() >= 512 {
            open.clear();
        }
        open.insert(id, file.clone());
        Ok(file)
    }

    /// Unlinks a pack whose last live chunk was released (after that release is durable).
    pub fn remove(&self, id: PackId) -> Result<()> {
        // Unlink under the cache lock, so a concurrent read cannot open the file again and
        // keep the space of a deleted pack alive in the cache.
        let mut open = self.open.lock().map_err(|_| StoreError::Closed)?;
        open.remove(&id);
        match fs::remove_file(self.packs_dir.join(id.file_name())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Appends chunks to a pack being written.
pub struct PackWriter {
    id: PackId,
    file: File,
    tmp_path: PathBuf,
    len: u64,
    final_dir: PathBuf,
    sealed: bool,
    /// Bytes already handed to writeback.
    flushed: u64,
}

/// Writeback is started every this many appended bytes.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

impl PackWriter {
    /// This pack's id.
    pub fn id(&self) -> PackId {
        self.id
    }

    /// Appends `data`, returning its offset in the pack.
    pub fn append(&mut self, data: &[u8]) -> Result<u64> {
        let offset = self.len;
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        if self.len - self.flushed >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(offset)
    }

    /// Asks the kernel to start writing what was appended so far, without waiting: the disk
    /// works while the rest of the body arrives, and the final fsync finds little left to do.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let (from, len) = (self.flushed as i64, (self.len - self.flushed) as i64);
        // SAFETY: plain syscalls on a file descriptor we own; failures only lose the hint.
        unsafe {
            libc::sync_file_range(fd, from, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.flushed = self.len;
    }

    /// Makes the pack durable under its final name; returns its size.
    pub fn seal(mut self) -> Result<(PackId, u64)> {
        self.file.sync_data()?;
        let final_path = self.final_dir.join(self.id.file_name());
        fs::rename(&self.tmp_path, &final_path)?;
        self.sealed = true;
        File::open(&self.final_dir)?.sync_all()?;
        Ok((self.id, self.len))
    }
}

impl Drop for PackWriter {
    /// An upload that fails or is abandoned (client gone) leaves no temp data behind.
    fn drop(&mut self) {
        if !self.sealed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}
