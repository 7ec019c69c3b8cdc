//! Downloading a data set's files, each checked against a pinned SHA-256 before it is kept.
//!
//! A file is streamed to `NAME.part` beside its final place while its digest is computed, then
//! renamed to `NAME` only if its size and digest are the pinned ones; rename within a folder is
//! atomic, so `NAME` is either absent or complete and verified. On any failure the `.part` file is
//! removed. A progress bar goes to stderr when stderr is a terminal (indicatif hides it otherwise).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::DatasetName;
use crate::error::{Error, Result};

/// How long to wait for a server to accept the connection, and for each read: long enough for a
/// slow mirror, short enough that a dead one fails rather than hangs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One file to fetch: its name under the base URL, its exact size and its SHA-256 (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl RemoteFile {
    pub fn new(name: impl Into<String>, bytes: u64, sha256: impl Into<String>) -> Self {
        RemoteFile { name: name.into(), bytes, sha256: sha256.into() }
    }

    /// The gzip file `STEM.gz`.
    pub(crate) fn gz(stem: &str, bytes: u64, sha256: &str) -> Self {
        RemoteFile::new(format!("{stem}.gz"), bytes, sha256)
    }
}

/// Downloads every file of `dataset` missing from `dir` (created if needed) from `base_url`, or
/// the official source when `None`. Files already in `dir` were verified when they were renamed
/// into place, so they are kept as they are.
pub fn download_dataset(dataset: DatasetName, base_url: Option<&str>, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let base_url = base_url.unwrap_or(dataset.base_url());
    for file in dataset.files() {
        if !dir.join(&file.name).is_file() {
            download_file(base_url, &file, dir)?;
        }
    }
    Ok(())
}

/// Downloads `base_url` + `file.name` into `dir/file.name`, checked against `file.bytes` and
/// `file.sha256`; returns the final path. Nothing is left at either path on failure.
pub fn download_file(base_url: &str, file: &RemoteFile, dir: &Path) -> Result<PathBuf> {
    let url = format!("{}/{}", base_url.trim_end_matches('/'), file.name);
    let path = dir.join(&file.name);
    let part = dir.join(format!("{}.part", file.name));
    let result = fetch_to(&url, file, &path, &part);
    if result.is_err() {
        // Best effort: the error being reported matters more than a failure to clean up.
        let _ = fs::remove_file(&part);
    }
    result.map(|()| path)
}

/// Streams `url` into `part`, verifies it, and renames it to `path`.
fn fetch_to(url: &str, file: &RemoteFile, path: &Path, part: &Path) -> Result<()> {
    let failed = |reason: String| Error::Download { path: path.to_path_buf(), url: url.to_string(), reason };
    let agent = ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout_read(READ_TIMEOUT).build();
    let response = match agent.get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(code, response)) => {
            return Err(failed(format!("the server answered HTTP {code} {}", response.status_text())));
        }
        Err(ureq::Error::Transport(transport)) => {
            // ureq starts its message with the URL, which the error already names.
            let message = transport.to_string();
            let message = message.strip_prefix(&format!("{url}: ")).unwrap_or(&message).to_string();
            return Err(failed(message));
        }
    };
    if let Some(length) = response.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok())
        && length != file.bytes
    {
        return Err(failed(format!("the server offers {length} bytes, expected {}", file.bytes)));
    }

    let progress = ProgressBar::new(file.bytes).with_message(file.name.clone());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        progress.set_style(style);
    }
    let mut out = File::create(part).map_err(|e| Error::write(part, e))?;
    let mut hasher = Sha256::new();
    // One byte more than expected tells an oversized body from an exact one without reading it all.
    let mut body = response.into_reader().take(file.bytes + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress.abandon();
                return Err(failed(format!(
                    "transfer interrupted after {received} of {} bytes: {e}",
                    file.bytes
                )));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::write(part, e))?;
        received += n as u64;
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    if received != file.bytes {
        return Err(failed(format!("transfer ended after {received} bytes, expected {}", file.bytes)));
    }
    let found = hex(&hasher.finalize());
    if !found.eq_ignore_ascii_case(&file.sha256) {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            url: url.to_string(),
            expected: file.sha256.clone(),
            found,
        });
    }
    // Flushed to disk before the rename, so a crash cannot leave a verified name on partial data.
    out.sync_all().map_err(|e| Error::write(part, e))?;
    drop(out);
    fs::rename(part, path).map_err(|e| Error::write(path, e))
}

/// Lower-case hex, as digests are published.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
