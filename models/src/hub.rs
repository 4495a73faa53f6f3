//! Models by name: a small registry of the checkpoints lookout runs, and fetching one from a
//! Hugging Face hub into a local directory the loader reads as is.
//!
//! A download is resumable at file granularity: each file is written to `<name>.part`, checked
//! against the advertised length, synced and renamed, and a `.complete` marker is written last.
//! An interrupted download keeps its finished files and fetches only the rest next time; a
//! directory with the marker is never touched again.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};

/// The public hub; `[model] hub_url` points elsewhere (a mirror, or a local server in tests).
pub const DEFAULT_HUB: &str = "https://huggingface.co";

/// A checkpoint lookout knows by a short id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnownModel {
    pub id: &'static str,
    pub repo: &'static str,
    pub revision: &'static str,
}

/// MiniCPM-V 4.6 ships as two checkpoints: instruct and thinking.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        id: "minicpm-v-4.6",
        repo: "openbmb/MiniCPM-V-4.6",
        revision: "main",
    },
    KnownModel {
        id: "minicpm-v-4.6-thinking",
        repo: "openbmb/MiniCPM-V-4.6-Thinking",
        revision: "main",
    },
];

/// Where a model id points: a known id, or any `owner/name` hub repository (optionally
/// `owner/name@revision`), so sibling checkpoints work without a release of lookout.
#[derive(Clone, Debug, PartialEq)]
pub struct RepoRef {
    pub repo: String,
    pub revision: String,
}

impl RepoRef {
    pub fn resolve(id: &str) -> anyhow::Result<RepoRef> {
        if let Some(known) = KNOWN_MODELS.iter().find(|m| m.id == id) {
            return Ok(RepoRef {
                repo: known.repo.into(),
                revision: known.revision.into(),
            });
        }
        let (repo, revision) = id.split_once('@').unwrap_or((id, "main"));
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) && valid(revision) => Ok(RepoRef {
                repo: repo.into(),
                revision: revision.into(),
            }),
            _ => {
                let known: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.id).collect();
                bail!(
                    "{id:?} is neither a known model ({}) nor a hub repository (owner/name[@revision])",
                    known.join(", ")
                )
            }
        }
    }

    /// The local directory name: `owner--name--revision`.
    pub fn dir_name(&self) -> String {
        format!(
            "{}--{}",
            self.repo.replace('/', "--"),
            self.revision.replace('/', "-")
        )
    }
}

/// One file of a hub repository: `hf://owner/name[@revision]/path/in/the/repo`, as the Hugging
/// Face hub's own file system names it (an ONNX detector, for one).
#[derive(Clone, Debug, PartialEq)]
pub struct HubFile {
    pub repo: RepoRef,
    pub path: String,
}

/// The scheme of a [`HubFile`].
pub const HUB_FILE_SCHEME: &str = "hf://";

impl HubFile {
    /// `None` when `reference` is not an `hf://` reference at all (a local path, then).
    pub fn parse(reference: &str) -> Option<anyhow::Result<HubFile>> {
        let rest = reference.strip_prefix(HUB_FILE_SCHEME)?;
        let parsed = (|| {
            let mut parts = rest.splitn(3, '/');
            let (owner, name, path) = match (parts.next(), parts.next(), parts.next()) {
                (Some(o), Some(n), Some(p)) if !p.is_empty() => (o, n, p),
                _ => bail!("{reference:?} is not hf://owner/name[@revision]/path/to/file"),
            };
            let repo = RepoRef::resolve(&format!("{owner}/{name}"))
                .with_context(|| format!("in {reference:?}"))?;
            let file_ok = path.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
            if !file_ok {
                bail!("{reference:?}: the file path {path:?} must be plain names separated by /");
            }
            Ok(HubFile {
                repo,
                path: path.to_string(),
            })
        })();
        Some(parsed)
    }

    /// Where the file lives under a cache directory: `<repo dir name>/<path>`.
    pub fn local_path(&self, cache: &Path) -> std::path::PathBuf {
        cache.join(self.repo.dir_name()).join(&self.path)
    }
}

/// Fetches `file` from `hub` to `file.local_path(cache)` unless it is there already, and returns
/// that path. The file is written whole or not at all (a `.part` file renamed when complete).
pub fn fetch_file(hub: &str, file: &HubFile, cache: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dest = file.local_path(cache);
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = cache.join(file.repo.dir_name());
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Client::new(hub, &file.repo).get(&file.path, &dir, true)?;
    Ok(dest)
}

/// Files of a checkpoint directory: these must exist...
const REQUIRED: &[&str] = &["config.json", "tokenizer.json", "tokenizer_config.json"];
/// ...these are used when present (the image processor's settings are in one of the two
/// processor files, [`crate::checkpoint::Checkpoint::image_processor`])...
const OPTIONAL: &[&str] = &[
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    crate::checkpoint::PROCESSOR_CONFIG,
    crate::checkpoint::PREPROCESSOR_CONFIG,
];
/// ...and the weights are one file, or shards listed by an index.
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
const COMPLETE: &str = ".complete";

/// Whether `dir` holds a finished download.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE).is_file()
}

/// Fetches `repo` from `hub` into `dest` (created if needed) unless it is complete there.
/// `progress` hears of each file as it starts. `HF_TOKEN` in the environment is sent as a bearer
/// token, for gated repositories.
pub fn fetch(
    hub: &str,
    repo: &RepoRef,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    if is_complete(dest) {
        return Ok(());
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let client = Client::new(hub, repo);
    for name in REQUIRED {
        progress(name);
        client.get(name, dest, true)?;
    }
    for name in OPTIONAL {
        progress(name);
        client.get(name, dest, false)?;
    }
    progress(WEIGHTS_INDEX);
    if client.get(WEIGHTS_INDEX, dest, false)? {
        for shard in shards(&dest.join(WEIGHTS_INDEX))? {
            progress(&shard);
            client.get(&shard, dest, true)?;
        }
    } else {
        progress(WEIGHTS);
        client.get(WEIGHTS, dest, true)?;
    }
    File::create(dest.join(COMPLETE)).with_context(|| format!("writing to {}", dest.display()))?;
    Ok(())
}

/// The shard files an index maps tensors to, each once, in order.
fn shards(index: &Path) -> anyhow::Result<Vec<String>> {
    let text = fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", index.display()))?;
    let map = value["weight_map"]
        .as_object()
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut shards: Vec<String> = Vec::new();
    for file in map.values().filter_map(|v| v.as_str()) {
        // A shard name is a plain file name: never a path out of the model directory.
        if file.contains('/') || file.contains("..") {
            bail!("{}: bad shard name {file:?}", index.display());
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    Ok(shards)
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(hub: &str, repo: &RepoRef) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        Client {
            agent,
            base: format!(
                "{}/{}/resolve/{}",
                hub.trim_end_matches('/'),
                repo.repo,
                repo.revision
            ),
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    /// Downloads `name` into `dir` unless it is there already. Returns whether the file exists
    /// afterwards; a missing optional file is `false`, a missing required one an error.
    fn get(&self, name: &str, dir: &Path, required: bool) -> anyhow::Result<bool> {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(true);
        }
        let url = format!("{}/{name}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request
            .call()
            .with_context(|| format!("downloading {url}"))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 if !required => return Ok(false),
            401 | 403 => bail!(
                "downloading {url}: HTTP {status} (a gated repository needs HF_TOKEN in the environment)"
            ),
            _ => bail!("downloading {url}: HTTP {status}"),
        }
        let expected = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let part = dir.join(format!("{name}.part"));
        let mut write = || -> anyhow::Result<u64> {
            let mut file = File::create(&part)?;
            let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
                total += n as u64;
            }
            file.sync_all()?;
            Ok(total)
        };
        let got = write().with_context(|| format!("downloading {url} to {}", part.display()))?;
        if let Some(expected) = expected
            && got != expected
        {
            bail!("downloading {url}: got {got} of {expected} bytes");
        }
        fs::rename(&part, &path).with_context(|| format!("renaming {}", part.display()))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_files_parse_and_refuse_what_could_escape_the_cache() {
        assert!(HubFile::parse("/var/lib/lookout/yolo.onnx").is_none());
        let f = HubFile::parse("hf://org/detectors@v2/onnx/model.onnx")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                f.repo.repo.as_str(),
                f.repo.revision.as_str(),
                f.path.as_str()
            ),
            ("org/detectors", "v2", "onnx/model.onnx")
        );
        assert_eq!(
            f.local_path(Path::new("/c")),
            Path::new("/c/org--detectors--v2/onnx/model.onnx")
        );
        let main = HubFile::parse("hf://org/d/m.onnx").unwrap().unwrap();
        assert_eq!(main.repo.revision, "main");
        for bad in [
            "hf://org/d",
            "hf://org/d/",
            "hf://org/d/../x.onnx",
            "hf://org/d/a//b",
            "hf://../d/x",
        ] {
            assert!(HubFile::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_resolve_to_repositories() {
        assert_eq!(
            RepoRef::resolve("minicpm-v-4.6").unwrap(),
            RepoRef {
                repo: "openbmb/MiniCPM-V-4.6".into(),
                revision: "main".into()
            }
        );
        let r = RepoRef::resolve("someone/Tiny_Model-1.0@v2").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("someone/Tiny_Model-1.0", "v2")
        );
        assert_eq!(r.dir_name(), "someone--Tiny_Model-1.0--v2");
        for bad in ["", "minicpm", "a/b/c", "../x", "a/..", "a/b@", "a b/c"] {
            let e = RepoRef::resolve(bad).unwrap_err().to_string();
            assert!(e.contains("minicpm-v-4.6"), "{bad}: {e}");
        }
    }
}
