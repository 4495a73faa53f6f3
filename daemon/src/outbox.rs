//! The durable outbox: every description and answer is written here before it is published, and
//! removed only when the broker acknowledges it (PUBACK, QoS 1). It survives broker outages and
//! daemon restarts, crashes included.
//!
//! Layout: one file per message, `<seq>.msg` with a 20-digit zero-padded sequence so that name
//! order is publish order. A message is written to `<seq>.tmp`, fsynced, renamed into place, and
//! the directory fsynced: after `append` returns, the message survives power loss, and a crash
//! mid-write leaves only a `.tmp` that the next start deletes. Removal is not fsynced: a removal
//! lost to a crash republishes one message (at-least-once; consumers dedupe by `id`).
//!
//! Size cap: when the total exceeds `max_bytes`, the oldest messages are dropped, counted, and
//! logged, so a broker that never comes back cannot fill the disk.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(skip)]
    pub seq: u64,
    pub topic: String,
    pub retain: bool,
    /// UTF-8 (descriptions and answers are JSON text).
    pub payload: String,
    /// MQTT 5 correlation data of a reply to an asker's response topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<Vec<u8>>,
}

pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    /// seq → file size.
    entries: BTreeMap<u64, u64>,
    total: u64,
    next_seq: u64,
    /// Messages dropped by the size cap or found unreadable, since start.
    pub dropped: u64,
}

impl Outbox {
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Outbox> {
        fs::create_dir_all(dir)
            .with_context(|| format!("outbox.path: cannot create {}", dir.display()))?;
        let mut entries = BTreeMap::new();
        let mut total = 0;
        for entry in fs::read_dir(dir)
            .with_context(|| format!("outbox.path: cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                // An append interrupted before its rename: never acknowledged to anyone.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".msg")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            entries.insert(seq, size);
            total += size;
        }
        // Probe writability now, so a read-only directory fails at start, naming the key.
        let probe = dir.join(".probe.tmp");
        File::create(&probe)
            .with_context(|| format!("outbox.path: {} is not writable", dir.display()))?;
        let _ = fs::remove_file(&probe);
        let next_seq = entries.keys().next_back().map_or(1, |s| s + 1);
        let mut outbox = Outbox {
            dir: dir.to_path_buf(),
            max_bytes,
            entries,
            total,
            next_seq,
            dropped: 0,
        };
        outbox.enforce_cap(None);
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.msg"))
    }

    /// Durably appends a message; returns its sequence number.
    pub fn append(
        &mut self,
        topic: &str,
        payload: &str,
        retain: bool,
        correlation_data: Option<&[u8]>,
    ) -> anyhow::Result<u64> {
        let seq = self.next_seq;
        let message = Message {
            seq,
            topic: topic.to_string(),
            retain,
            payload: payload.to_string(),
            correlation_data: correlation_data.map(<[u8]>::to_vec),
        };
        let bytes = serde_json::to_vec(&message)?;
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path(seq))?;
            File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("writing to the outbox in {}", self.dir.display()))?;
        self.next_seq += 1;
        self.entries.insert(seq, bytes.len() as u64);
        self.total += bytes.len() as u64;
        self.enforce_cap(Some(seq));
        Ok(seq)
    }

    /// The oldest message. Unreadable files are dropped (counted, logged) rather than blocking
    /// the queue forever.
    pub fn head(&mut self) -> Option<Message> {
        while let Some((&seq, _)) = self.entries.iter().next() {
            let path = self.path(seq);
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Message>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(mut m) => {
                    m.seq = seq;
                    return Some(m);
                }
                Err(e) => {
                    self.dropped += 1;
                    log::error!(
                        "outbox: dropping unreadable message {}: {e} ({} dropped so far)",
                        path.display(),
                        self.dropped
                    );
                    self.remove(seq);
                }
            }
        }
        None
    }

    /// Removes an acknowledged (or dropped) message; unknown sequence numbers are ignored.
    pub fn remove(&mut self, seq: u64) {
        if let Some(size) = self.entries.remove(&seq) {
            self.total -= size;
            if let Err(e) = fs::remove_file(self.path(seq))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("outbox: cannot remove {}: {e}", self.path(seq).display());
            }
        }
    }

    fn enforce_cap(&mut self, keep: Option<u64>) {
        while self.total > self.max_bytes {
            let Some(&oldest) = self.entries.keys().next() else {
                break;
            };
            if Some(oldest) == keep {
                break;
            }
            self.remove(oldest);
            self.dropped += 1;
            log::warn!(
                "outbox: over its {} byte cap (outbox.max_bytes), dropped the oldest message ({} dropped so far)",
                self.max_bytes,
                self.dropped
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_in_order_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 1 << 20).unwrap();
        let a = o.append("t/a", "1", false, None).unwrap();
        let b = o.append("t/b", "2", true, Some(b"req-7")).unwrap();
        assert!(b > a);
        drop(o);
        std::fs::write(dir.path().join("00000000000000000099.tmp"), b"partial").unwrap();
        let mut o = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(o.len(), 2);
        let h = o.head().unwrap();
        assert_eq!(
            (h.seq, h.topic.as_str(), h.payload.as_str()),
            (a, "t/a", "1")
        );
        assert_eq!(h.correlation_data, None);
        o.remove(a);
        let h = o.head().unwrap();
        assert_eq!((h.seq, h.retain), (b, true));
        assert_eq!(h.correlation_data.as_deref(), Some(&b"req-7"[..]));
        assert!(!dir.path().join("00000000000000000099.tmp").exists());
        // New sequence numbers continue after the highest stored one.
        assert!(o.append("t/c", "3", false, None).unwrap() > b);

        let mut small = Outbox::open(&dir.path().join("small"), 200).unwrap();
        for i in 0..10 {
            small.append("t", &format!("{i:040}"), false, None).unwrap();
        }
        assert!(small.dropped > 0);
        assert!(small.len() < 10);
        assert_eq!(
            small.head().unwrap().payload,
            format!("{:040}", 10 - small.len())
        );
    }

    #[test]
    fn skips_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 1 << 20).unwrap();
        let a = o.append("t", "1", false, None).unwrap();
        let b = o.append("t", "2", false, None).unwrap();
        std::fs::write(o.path(a), b"{not json").unwrap();
        assert_eq!(o.head().unwrap().seq, b);
        assert_eq!(o.dropped, 1);
    }
}
