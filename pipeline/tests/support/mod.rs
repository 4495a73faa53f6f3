//! Shared helpers for tests that compare against the reference goldens in `models/fixtures`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(name)
}

/// A fixture model in f32 on two threads, as the golden comparisons run it.
pub fn f32_engine(name: &str) -> lookout_pipeline::engine::Engine {
    lookout_pipeline::engine::Engine::load(
        &fixture(name),
        &lookout_pipeline::engine::EngineOptions {
            precision: lookout_models::Precision::F32,
            threads: Some(2),
            compiled_cache: None,
        },
    )
    .unwrap()
}

/// A scratch copy of a fixture's files that a test may alter; `tag` keeps copies apart.
pub fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lookout-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// A golden tensor: shape and values widened to f64 (ids are exact in f64).
pub struct Golden {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Golden {
    pub fn f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
    pub fn ids(&self) -> Vec<u32> {
        self.values.iter().map(|&v| v as u32).collect()
    }
    pub fn row(&self, i: usize) -> Vec<f32> {
        let w: usize = self.shape[1..].iter().product();
        self.values[i * w..(i + 1) * w]
            .iter()
            .map(|&v| v as f32)
            .collect()
    }
}

pub fn goldens(path: PathBuf) -> HashMap<String, Golden> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("unexpected golden dtype {other:?} for {name}"),
            };
            (
                name.to_string(),
                Golden {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    lookout_pipeline::sampler::argmax(v)
}
