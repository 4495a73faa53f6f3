//! Tensors of a safetensors checkpoint, one or many shards.
//!
//! Tensors are read on demand with positioned reads rather than memory-mapped: a mapping keeps every
//! page it has touched resident, so converting a 1.6 GB checkpoint tensor by tensor through a map
//! would hold the whole file in the process's RSS until the end of loading. Reading one tensor at a
//! time keeps the transient cost to the tensor being converted.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorInfo};

use crate::error::LoadError;

/// Numeric precision a weight is kept in once loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    F16,
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "q4_0" | "q4" => Ok(Precision::Q4_0),
            other => Err(format!(
                "unknown weights precision `{other}` (expected f32, f16 or q4_0)"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Q4_0 => "q4_0",
        })
    }
}

/// Element type of a stored tensor, restricted to the float types checkpoints ship in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
}

impl StoredDtype {
    pub fn size(self) -> usize {
        match self {
            StoredDtype::F32 => 4,
            StoredDtype::F16 | StoredDtype::BF16 => 2,
        }
    }

    /// Decodes little-endian elements of this type into `out`.
    pub fn decode_into(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            StoredDtype::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            StoredDtype::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            StoredDtype::BF16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        }
    }
}

/// Where one tensor's bytes live on disk.
#[derive(Clone, Debug)]
pub struct TensorLocation {
    pub path: PathBuf,
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the first element in the file.
    pub offset: u64,
}

impl TensorLocation {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Index of every tensor in a checkpoint directory.
#[derive(Debug)]
pub struct WeightStore {
    files: Vec<PathBuf>,
    tensors: HashMap<String, TensorLocation>,
}

impl WeightStore {
    /// Opens the safetensors files of a checkpoint directory: the shards listed by
    /// `model.safetensors.index.json` when present, else `model.safetensors`, else every
    /// `*.safetensors` file in the directory.
    pub fn open_dir(dir: &Path) -> Result<WeightStore, LoadError> {
        let files = shard_files(dir)?;
        let mut tensors = HashMap::new();
        for file in &files {
            for (name, location) in read_header(file)? {
                tensors.insert(name, location);
            }
        }
        Ok(WeightStore { files, tensors })
    }

    /// The safetensors files, in a fixed order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn location(&self, name: &str) -> Result<&TensorLocation, LoadError> {
        self.tensors
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// Reads a tensor as f32, checking that it has exactly `expected` shape.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, LoadError> {
        let location = self.location(name)?;
        if location.shape != expected {
            return Err(LoadError::WrongShape {
                name: name.to_string(),
                path: location.path.clone(),
                actual: location.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let mut out = vec![0f32; location.len()];
        TensorReader::open(location)?.read(0, &mut out)?;
        Ok(out)
    }
}

/// A tensor's file, opened once, for repeated partial reads (row lookups, chunked conversion).
#[derive(Debug)]
pub struct TensorReader {
    location: TensorLocation,
    file: File,
}

impl TensorReader {
    pub fn open(location: &TensorLocation) -> Result<TensorReader, LoadError> {
        let file = File::open(&location.path).map_err(|source| LoadError::Io {
            path: location.path.clone(),
            source,
        })?;
        Ok(TensorReader {
            location: location.clone(),
            file,
        })
    }

    pub fn location(&self) -> &TensorLocation {
        &self.location
    }

    /// Reads `out.len()` elements starting at element `first` and converts them to f32.
    pub fn read(&self, first: usize, out: &mut [f32]) -> Result<(), LoadError> {
        let size = self.location.dtype.size();
        let mut bytes = vec![0u8; out.len() * size];
        self.file
            .read_exact_at(&mut bytes, self.location.offset + (first * size) as u64)
            .map_err(|source| LoadError::Io {
                path: self.location.path.clone(),
                source,
            })?;
        self.location.dtype.decode_into(&bytes, out);
        Ok(())
    }
}

fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| LoadError::Io {
            path: index.clone(),
            source,
        })?;
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let parsed: Index = serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: index.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = parsed.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// Parses a safetensors header and checks it against the file's real length, so that a truncated
/// download is reported at open time rather than as a short read halfway through loading.
fn read_header(path: &Path) -> Result<Vec<(String, TensorLocation)>, LoadError> {
    let bad = |problem: String| LoadError::Safetensors {
        path: path.to_path_buf(),
        problem,
    };
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < 8 {
        return Err(bad(format!(
            "file is {file_len} bytes, too short for a header"
        )));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(bad(format!(
            "header claims {header_len} bytes but the file has {file_len} (truncated or not safetensors)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(io)?;
    let mut entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    entries.remove("__metadata__");

    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut out = Vec::with_capacity(entries.len());
    let mut data_end = 0u64;
    for (name, value) in entries {
        let info: TensorInfo = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor `{name}` has a malformed entry: {e}")))?;
        let dtype = match info.dtype {
            Dtype::F32 => StoredDtype::F32,
            Dtype::F16 => StoredDtype::F16,
            Dtype::BF16 => StoredDtype::BF16,
            other => {
                return Err(LoadError::UnsupportedDtype {
                    name,
                    path: path.to_path_buf(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let (begin, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        let expected = info.shape.iter().product::<usize>() as u64 * dtype.size() as u64;
        if end < begin || end - begin != expected {
            return Err(bad(format!(
                "tensor `{name}` spans {} bytes but its shape {:?} needs {expected}",
                end.saturating_sub(begin),
                info.shape
            )));
        }
        if end > data_len {
            return Err(bad(format!(
                "tensor `{name}` ends at byte {end} of the data but the file holds only {data_len} \
                 (truncated)"
            )));
        }
        data_end = data_end.max(end);
        out.push((
            name,
            TensorLocation {
                path: path.to_path_buf(),
                dtype,
                shape: info.shape,
                offset: data_start + begin,
            },
        ));
    }
    if data_end != data_len {
        return Err(bad(format!(
            "data section is {data_len} bytes but the tensors cover {data_end}"
        )));
    }
    Ok(out)
}
