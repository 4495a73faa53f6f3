//! The compiled cache as the graph builders use it: Q4_0 matrices mapped from a cache file when
//! one was made from this checkpoint for this CPU kernel, else quantized and written there for
//! the next start.
//!
//! Quantizing is nearly all of a cold start (3.8 s of 3.85 s for the full-size language model at
//! 2 threads; building and optimizing the graph takes the other 40 ms), so the cache holds the
//! packed matrices and nothing else. Everything small (norms, biases, convolution taps) is still
//! read from the checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lookout_models::Checkpoint;
use lookout_models::compiled::{CompiledFile, CompiledKey, CompiledWriter, Stale, fingerprint};
use tract_core::internal::*;

use crate::graph::Matrix;
use crate::q4_0::{Q4_0Matrix, kernel_name};

/// Bumped whenever the packing of [`Q4_0Matrix`] changes, so older files are rebuilt even
/// within one lookout version.
const PACKING: u32 = 1;

/// What the compiled cache did for one part of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache directory was given, or this part has no quantized weights.
    Off,
    /// Every quantized matrix was mapped from this file.
    Mapped { path: PathBuf },
    /// The matrices were quantized and written to this file because the old one was not
    /// usable (`reason`).
    Written { path: PathBuf, reason: String },
    /// Quantized, but the cache could not be written (`reason`); the next start quantizes again.
    NotWritten { reason: String },
}

impl std::fmt::Display for CacheUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheUse::Off => f.write_str("off"),
            CacheUse::Mapped { .. } => f.write_str("mapped"),
            CacheUse::Written { .. } => f.write_str("written"),
            CacheUse::NotWritten { .. } => f.write_str("not written"),
        }
    }
}

/// The Q4_0 matrices of one graph, from and for the cache.
pub struct WeightCache {
    target: Option<Target>,
    /// Every matrix handed out, in order: the next cache file's content.
    matrices: Vec<(String, Arc<Q4_0Matrix>)>,
    quantized: usize,
}

struct Target {
    path: PathBuf,
    key: CompiledKey,
    file: Result<CompiledFile, Stale>,
}

impl WeightCache {
    /// No cache: every matrix is quantized.
    pub fn off() -> WeightCache {
        WeightCache {
            target: None,
            matrices: vec![],
            quantized: 0,
        }
    }

    /// The cache of `part` (`language_model`, `vision`) of `checkpoint` at `precision` in
    /// `dir`. A checkpoint that cannot be fingerprinted is loaded without the cache.
    pub fn open(dir: &Path, checkpoint: &Checkpoint, part: &str, precision: &str) -> WeightCache {
        let fingerprint = match fingerprint(&checkpoint.dir, &checkpoint.weights) {
            Ok(f) => f,
            Err(e) => {
                log::warn!(
                    "compiled cache: cannot fingerprint {}: {e}; converting without it",
                    checkpoint.dir.display()
                );
                return WeightCache::off();
            }
        };
        let key = CompiledKey {
            checkpoint: fingerprint,
            part: part.to_string(),
            precision: precision.to_string(),
            kernel: kernel_name().to_string(),
            version: format!("{}+packing{PACKING}", env!("CARGO_PKG_VERSION")),
        };
        let path = dir.join(key.file_name());
        let file = CompiledFile::open(&path, &key);
        WeightCache {
            target: Some(Target { path, key, file }),
            matrices: vec![],
            quantized: 0,
        }
    }

    /// The Q4_0 form of `w`, named `name` in the graph: mapped from the cache file when it has
    /// it with the right size, else quantized now.
    pub(crate) fn q4_0(&mut self, name: &str, w: Matrix) -> TractResult<Arc<Q4_0Matrix>> {
        let cached = self.target.as_ref().and_then(|t| t.file.as_ref().ok());
        let mapped = cached.and_then(|file| {
            let (nibbles, scales) = (
                file.blob(&format!("{name}.q4_0"))?,
                file.blob(&format!("{name}.scales"))?,
            );
            Q4_0Matrix::mapped(w.rows, w.cols, nibbles, scales)
                .map_err(|e| {
                    log::warn!("compiled cache: `{name}` in {}: {e}", file.path().display())
                })
                .ok()
        });
        let matrix = match mapped {
            Some(m) => m,
            None => {
                let mut quantized = Q4_0Matrix::new(w.rows, w.cols);
                w.for_each_chunk(|rows| quantized.push_rows(rows))?;
                self.quantized += 1;
                quantized
            }
        };
        let matrix = Arc::new(matrix);
        self.matrices.push((name.to_string(), matrix.clone()));
        Ok(matrix)
    }

    /// Writes a new cache file when any matrix had to be quantized, and says what happened.
    pub fn finish(self) -> CacheUse {
        let Some(target) = self.target else {
            return CacheUse::Off;
        };
        if self.matrices.is_empty() {
            return CacheUse::Off;
        }
        let reason = match &target.file {
            Ok(_) if self.quantized == 0 => return CacheUse::Mapped { path: target.path },
            Ok(_) => format!(
                "it lacked {} of {} matrices",
                self.quantized,
                self.matrices.len()
            ),
            Err(stale) => stale.to_string(),
        };
        let written = write(&target.path, target.key, &self.matrices);
        match written {
            Ok(path) => {
                log::info!("compiled cache: wrote {} ({reason})", path.display());
                CacheUse::Written { path, reason }
            }
            Err(e) => {
                let reason = format!("writing {}: {e}", target.path.display());
                log::warn!("compiled cache: {reason}; the next start quantizes again");
                CacheUse::NotWritten { reason }
            }
        }
    }
}

fn write(
    path: &Path,
    key: CompiledKey,
    matrices: &[(String, Arc<Q4_0Matrix>)],
) -> std::io::Result<PathBuf> {
    let mut writer = CompiledWriter::create(path, key)?;
    for (name, matrix) in matrices {
        let (nibbles, scales) = matrix.packed();
        writer.blob(&format!("{name}.q4_0"), nibbles)?;
        writer.blob(&format!("{name}.scales"), scales)?;
    }
    writer.finish()
}
