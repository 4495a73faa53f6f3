use std::path::PathBuf;

/// What went wrong loading or running a detector; each names the file and what was found.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    // The I/O error is part of the message, not a source, so a `{:#}` chain does not repeat it.
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not an ONNX model tract can read: {cause}", path.display())]
    NotOnnx { path: PathBuf, cause: String },
    #[error("{}: {what}", path.display())]
    Input { path: PathBuf, what: String },
    #[error("{}: {what}", path.display())]
    Layout { path: PathBuf, what: String },
    #[error("{}: {what}", path.display())]
    Metadata { path: PathBuf, what: String },
    #[error("labels file {} has {found} names, but {} has {classes} classes", labels.display(), model.display())]
    Labels {
        labels: PathBuf,
        model: PathBuf,
        found: usize,
        classes: usize,
    },
    #[error("{}: cannot prepare the graph to run: {cause}", path.display())]
    Compile { path: PathBuf, cause: String },
    #[error("running the detector: {0}")]
    Run(String),
    #[error("the detector's output: {0}")]
    Output(String),
    #[error("frame: {0}")]
    Frame(String),
}
