//! Load errors. Each variant names what is wrong (file, config field, tensor) so that a user with a
//! broken or unusual checkpoint knows exactly what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: config field `{field}`: {problem}")]
    Config {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{path} is not a valid safetensors file: {problem}")]
    Safetensors { path: PathBuf, problem: String },
    #[error(
        "no safetensors weights found in {dir} (expected model.safetensors, \
             model.safetensors.index.json or *.safetensors)"
    )]
    NoWeights { dir: PathBuf },
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor `{name}` in {path} has shape {actual:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        path: PathBuf,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` in {path} has dtype {dtype}, only F32, F16 and BF16 are supported")]
    UnsupportedDtype {
        name: String,
        path: PathBuf,
        dtype: String,
    },
}

impl LoadError {
    pub fn config(path: impl Into<PathBuf>, field: &str, problem: impl Into<String>) -> Self {
        LoadError::Config {
            path: path.into(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}
