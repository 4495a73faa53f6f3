//! Token embedding lookup straight from the checkpoint file.
//!
//! The embedding table is the largest tensor of a small model (248320 x 1024 for Qwen3.5-0.8B:
//! 1 GB in f32). A lookup needs a handful of rows per step, so rows are read from the safetensors
//! file on demand, in the checkpoint's own precision, instead of keeping the table in memory. The
//! operating system's page cache serves repeated tokens.

use lookout_models::LoadError;
use lookout_models::weights::{TensorLocation, TensorReader};

pub struct EmbeddingTable {
    reader: TensorReader,
    vocab: usize,
    width: usize,
}

impl EmbeddingTable {
    pub fn new(
        location: TensorLocation,
        vocab: usize,
        width: usize,
    ) -> Result<EmbeddingTable, LoadError> {
        if location.shape != [vocab, width] {
            return Err(LoadError::WrongShape {
                name: "embed_tokens.weight".into(),
                path: location.path.clone(),
                actual: location.shape.clone(),
                expected: vec![vocab, width],
            });
        }
        Ok(EmbeddingTable {
            reader: TensorReader::open(&location)?,
            vocab,
            width,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Embeddings of `ids`, row after row (`[ids.len(), width]`).
    pub fn lookup(&self, ids: &[u32]) -> anyhow::Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.width];
        for (row, &id) in out.chunks_exact_mut(self.width).zip(ids) {
            anyhow::ensure!(
                (id as usize) < self.vocab,
                "token id {id} is outside the vocabulary of {} entries",
                self.vocab
            );
            self.reader.read(id as usize * self.width, row)?;
        }
        Ok(out)
    }
}
