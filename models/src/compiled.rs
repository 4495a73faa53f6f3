//! The compiled cache: a model's converted weights (quantized and packed for the CPU's kernels),
//! written once and memory-mapped on later starts so that they are ready without re-converting.
//!
//! A cache file holds named byte blobs and an index that says what they were made from:
//!
//! ```text
//! "LOOKCMP1" | blob | pad to 64 | blob | ... | index (JSON) | index length u64 LE |
//! index SHA-256 (32 bytes) | "LOOKCMP1"
//! ```
//!
//! The index records the [`CompiledKey`]: the checkpoint's fingerprint, the part of the model,
//! the precision, the kernel the packing was chosen for and the lookout version. A file whose
//! trailer, index checksum, key or blob ranges do not hold is reported as [`Stale`] with the
//! reason and is rebuilt; it is never trusted partly. Files are written to a temporary name
//! and renamed, so a crash while writing leaves no half file under the real name.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::weights::WeightStore;

const MAGIC: &[u8; 8] = b"LOOKCMP1";
/// Blobs start at multiples of this, so that any element type can be viewed in place.
pub const ALIGN: usize = 64;
/// Length, checksum and magic after the index.
const TRAILER: usize = 8 + 32 + 8;

/// What a cache file must have been made from to be used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompiledKey {
    /// [`fingerprint`] of the checkpoint's weights and config.
    pub checkpoint: String,
    /// Which part of the model: `language_model`, `vision`.
    pub part: String,
    /// The weights' precision, and anything else that changes their conversion.
    pub precision: String,
    /// The SIMD kernel the packing was chosen for.
    pub kernel: String,
    /// The lookout version that wrote it: a new version may convert differently.
    pub version: String,
}

impl CompiledKey {
    /// The file name for this key: readable parts, then a hash of the whole key.
    pub fn file_name(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(serde_json::to_vec(self).expect("a key serializes"));
        let digest = hex(&hash.finalize()[..8]);
        format!("{}-{}-{}.lookout", self.part, self.precision, digest)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Index {
    key: CompiledKey,
    blobs: Vec<BlobEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BlobEntry {
    name: String,
    offset: usize,
    len: usize,
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum Stale {
    #[error("there is no cache file yet")]
    Missing,
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    #[error("it is truncated or not a lookout cache file ({0})")]
    Damaged(String),
    #[error("it was made from something else ({0})")]
    Foreign(String),
}

/// A cache file mapped into memory, its blobs by name.
#[derive(Debug)]
pub struct CompiledFile {
    path: PathBuf,
    map: Arc<Mmap>,
    blobs: HashMap<String, Range<usize>>,
}

/// One blob of a mapped cache file; it keeps the mapping alive.
#[derive(Clone, Debug)]
pub struct MappedBlob {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl MappedBlob {
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl CompiledFile {
    /// Opens and checks `path` against `key`.
    pub fn open(path: &Path, key: &CompiledKey) -> Result<CompiledFile, Stale> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Stale::Missing),
            Err(e) => return Err(Stale::Unreadable(e)),
        };
        // SAFETY: the file is only ever replaced by rename, never written in place, so the
        // mapped bytes do not change under us (a user truncating it by hand could still fault
        // a read; the trailer check below makes that a deliberate act, not an accident).
        let map = unsafe { Mmap::map(&file) }.map_err(Stale::Unreadable)?;
        let index = read_index(&map)?;
        if index.key != *key {
            return Err(Stale::Foreign(describe_difference(&index.key, key)));
        }
        let index_start = map.len() - TRAILER - index_len(&map);
        let mut blobs = HashMap::with_capacity(index.blobs.len());
        for blob in index.blobs {
            let end = blob.offset.checked_add(blob.len);
            let fits = blob.offset >= MAGIC.len()
                && blob.offset.is_multiple_of(ALIGN)
                && end.is_some_and(|e| e <= index_start);
            if !fits {
                return Err(Stale::Damaged(format!(
                    "blob `{}` at {}+{} lies outside the data section",
                    blob.name, blob.offset, blob.len
                )));
            }
            blobs.insert(blob.name, blob.offset..blob.offset + blob.len);
        }
        Ok(CompiledFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            blobs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn blob(&self, name: &str) -> Option<MappedBlob> {
        self.blobs.get(name).map(|range| MappedBlob {
            map: self.map.clone(),
            range: range.clone(),
        })
    }
}

fn index_len(map: &[u8]) -> usize {
    let at = map.len() - TRAILER;
    u64::from_le_bytes(map[at..at + 8].try_into().expect("8 bytes")) as usize
}

fn read_index(map: &[u8]) -> Result<Index, Stale> {
    let damaged = |why: &str| Stale::Damaged(why.to_string());
    if map.len() < MAGIC.len() + TRAILER || &map[..MAGIC.len()] != MAGIC {
        return Err(damaged("no lookout header"));
    }
    if &map[map.len() - MAGIC.len()..] != MAGIC {
        return Err(damaged("no trailer at the end"));
    }
    let len = index_len(map);
    let Some(start) = (map.len() - TRAILER)
        .checked_sub(len)
        .filter(|&s| s >= MAGIC.len())
    else {
        return Err(damaged("the index length is larger than the file"));
    };
    let bytes = &map[start..start + len];
    let at = map.len() - TRAILER + 8;
    if Sha256::digest(bytes)[..] != map[at..at + 32] {
        return Err(damaged("the index checksum does not match"));
    }
    serde_json::from_slice(bytes).map_err(|e| Stale::Damaged(format!("the index: {e}")))
}

fn describe_difference(found: &CompiledKey, wanted: &CompiledKey) -> String {
    let fields = [
        ("checkpoint", &found.checkpoint, &wanted.checkpoint),
        ("part", &found.part, &wanted.part),
        ("precision", &found.precision, &wanted.precision),
        ("kernel", &found.kernel, &wanted.kernel),
        ("lookout version", &found.version, &wanted.version),
    ];
    fields
        .iter()
        .filter(|(_, f, w)| f != w)
        .map(|(what, f, w)| format!("{what} {f}, expected {w}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes a cache file: blobs in order, then the index; the file appears under its real name
/// only when complete.
pub struct CompiledWriter {
    path: PathBuf,
    temp: PathBuf,
    out: BufWriter<File>,
    at: usize,
    index: Index,
}

impl CompiledWriter {
    pub fn create(path: &Path, key: CompiledKey) -> std::io::Result<CompiledWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension(format!("partial-{}", std::process::id()));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
        out.write_all(MAGIC)?;
        Ok(CompiledWriter {
            path: path.to_path_buf(),
            temp,
            out,
            at: MAGIC.len(),
            index: Index { key, blobs: vec![] },
        })
    }

    /// Appends one blob, aligned to [`ALIGN`].
    pub fn blob(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let pad = self.at.next_multiple_of(ALIGN) - self.at;
        self.out.write_all(&[0u8; ALIGN][..pad])?;
        self.at += pad;
        self.index.blobs.push(BlobEntry {
            name: name.to_string(),
            offset: self.at,
            len: bytes.len(),
        });
        self.out.write_all(bytes)?;
        self.at += bytes.len();
        Ok(())
    }

    /// Writes the index and trailer, syncs, and renames the file into place.
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        let index = serde_json::to_vec(&self.index).map_err(std::io::Error::other)?;
        self.out.write_all(&index)?;
        self.out.write_all(&(index.len() as u64).to_le_bytes())?;
        self.out.write_all(&Sha256::digest(&index))?;
        self.out.write_all(MAGIC)?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        Ok(self.path.clone())
    }
}

impl Drop for CompiledWriter {
    fn drop(&mut self) {
        // Unfinished (an error or a panic while converting): leave nothing behind. After
        // `finish` the temporary name no longer exists and this does nothing.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Bytes read from each sampled place of a weight file.
const SAMPLE: usize = 4096;
/// Distance between samples.
const SAMPLE_STRIDE: u64 = 4 << 20;

/// A fingerprint of a checkpoint's content, cheap enough to take at every start: `config.json`,
/// and for each weight file its length, its safetensors header and 4 KiB of every 4 MiB of its
/// data (and its last 4 KiB). Copying or moving the checkpoint keeps it; re-saving different
/// weights over it changes it.
pub fn fingerprint(dir: &Path, weights: &WeightStore) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    hash.update(std::fs::read(dir.join("config.json"))?);
    let mut buffer = vec![0u8; SAMPLE];
    for path in weights.files() {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        hash.update(len.to_le_bytes());
        let mut offset = 0;
        while offset < len {
            let n = SAMPLE.min((len - offset) as usize);
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut buffer[..n])?;
            hash.update(&buffer[..n]);
            offset += SAMPLE_STRIDE;
        }
        let tail = SAMPLE.min(len as usize);
        file.seek(SeekFrom::Start(len - tail as u64))?;
        file.read_exact(&mut buffer[..tail])?;
        hash.update(&buffer[..tail]);
    }
    Ok(hex(&hash.finalize()[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CompiledKey {
        CompiledKey {
            checkpoint: "abc".into(),
            part: "language_model".into(),
            precision: "q4_0".into(),
            kernel: "avx2".into(),
            version: "0.1.0".into(),
        }
    }

    fn written(dir: &Path) -> PathBuf {
        let path = dir.join(key().file_name());
        let mut w = CompiledWriter::create(&path, key()).unwrap();
        w.blob("a", &[1, 2, 3]).unwrap();
        w.blob("b", &[9; 100]).unwrap();
        w.finish().unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lookout-compiled-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn blobs_come_back_aligned_and_whole() {
        let dir = temp_dir("roundtrip");
        let path = written(&dir);
        let file = CompiledFile::open(&path, &key()).unwrap();
        assert_eq!(file.blob("a").unwrap().bytes(), &[1, 2, 3]);
        let b = file.blob("b").unwrap();
        assert_eq!(b.bytes(), &[9; 100]);
        assert_eq!(b.bytes().as_ptr() as usize % ALIGN, 0);
        assert!(file.blob("c").is_none());
        assert!(
            !dir.read_dir()
                .unwrap()
                .any(|e| { e.unwrap().file_name().to_string_lossy().contains("partial") })
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_truncated_file_is_damaged_at_every_length() {
        let dir = temp_dir("truncated");
        let path = written(&dir);
        let full = std::fs::read(&path).unwrap();
        for len in [0, 5, 8, 64, full.len() / 2, full.len() - 1] {
            std::fs::write(&path, &full[..len]).unwrap();
            match CompiledFile::open(&path, &key()) {
                Err(Stale::Damaged(_)) => {}
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_changed_index_or_key_is_not_used() {
        let dir = temp_dir("foreign");
        let path = written(&dir);
        let mut other = key();
        other.version = "9.9.9".into();
        match CompiledFile::open(&path, &other) {
            Err(Stale::Foreign(why)) => assert!(why.contains("lookout version 0.1.0"), "{why}"),
            r => panic!("{r:?}"),
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - TRAILER - 10;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        match CompiledFile::open(&path, &key()) {
            Err(Stale::Damaged(why)) => assert!(why.contains("checksum"), "{why}"),
            r => panic!("{r:?}"),
        }
        std::fs::write(&path, b"not a cache at all, just some text").unwrap();
        assert!(matches!(
            CompiledFile::open(&path, &key()),
            Err(Stale::Damaged(_))
        ));
        assert!(matches!(
            CompiledFile::open(&dir.join("none"), &key()),
            Err(Stale::Missing)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing() {
        let dir = temp_dir("unfinished");
        let path = dir.join("x.lookout");
        let mut w = CompiledWriter::create(&path, key()).unwrap();
        w.blob("a", &[1; 10]).unwrap();
        drop(w);
        assert_eq!(dir.read_dir().unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
