//! Finding a data set on disk, and downloading it into the cache when it is nowhere.
//!
//! The search order, first hit wins:
//!
//! ```text
//! 1. explicit  --data DIR            DIR/<name>/, then DIR itself
//! 2. env       $STRIDE_DATA          the same
//! 3. cache     <user cache>/stride   <cache>/<name>/   (dirs::cache_dir(), e.g. ~/.cache/stride)
//! 4. system    /usr/share/datasets   <system>/<name>/  (Debian: apt-get install dataset-fashion-mnist)
//! 5. download  into the cache folder of 3
//! ```
//!
//! A folder counts only if it holds all four files, each raw or gzip. The roots are fields of
//! [`Discovery`] so that tests (and embedding programs) can search folders of their choosing
//! instead of the user's home and `/usr/share`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{DatasetName, FILE_STEMS, download, file_in};
use crate::error::{Error, Result};

/// The environment variable naming a folder of data sets.
pub const ENV_VAR: &str = "STRIDE_DATA";
/// Where Debian's `dataset-*` packages install data sets.
pub const SYSTEM_DIR: &str = "/usr/share/datasets";

/// Where to look for data sets; `None` skips a root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The `--data DIR` argument.
    pub explicit: Option<PathBuf>,
    /// `$STRIDE_DATA`.
    pub env: Option<PathBuf>,
    /// The cache root (`<user cache>/stride`); downloads go to `<cache>/<name>`.
    pub cache: Option<PathBuf>,
    /// The system root (`/usr/share/datasets`).
    pub system: Option<PathBuf>,
}

/// Which root a data set was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Explicit,
    Env,
    Cache,
    System,
    /// Not found anywhere, then downloaded into the cache.
    Downloaded,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Place::Explicit => "--data",
            Place::Env => ENV_VAR,
            Place::Cache => "cache",
            Place::System => "system",
            Place::Downloaded => "downloaded",
        })
    }
}

/// A folder holding the four files of a data set, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub dir: PathBuf,
    pub place: Place,
}

impl Discovery {
    /// The standard roots: `explicit` (the `--data` argument), `$STRIDE_DATA`, the user's cache
    /// folder and `/usr/share/datasets`.
    pub fn standard(explicit: Option<PathBuf>) -> Self {
        Discovery {
            explicit,
            env: std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()).map(PathBuf::from),
            cache: dirs::cache_dir().map(|d| d.join("stride")),
            system: Some(PathBuf::from(SYSTEM_DIR)),
        }
    }

    /// Every folder searched for `dataset`, in order, with the root it belongs to.
    pub fn candidates(&self, dataset: DatasetName) -> Vec<(Place, PathBuf)> {
        let name = dataset.as_str();
        let mut dirs = Vec::new();
        // An explicit or environment folder may be a folder of data sets or the data set itself.
        for (place, root) in [(Place::Explicit, &self.explicit), (Place::Env, &self.env)] {
            if let Some(root) = root {
                dirs.push((place, root.join(name)));
                dirs.push((place, root.clone()));
            }
        }
        for (place, root) in [(Place::Cache, &self.cache), (Place::System, &self.system)] {
            if let Some(root) = root {
                dirs.push((place, root.join(name)));
            }
        }
        dirs
    }

    /// The first candidate folder holding all four files of `dataset`, or `None`.
    pub fn find(&self, dataset: DatasetName) -> Option<Found> {
        self.candidates(dataset)
            .into_iter()
            .find(|(_, dir)| missing_files(dir).is_empty())
            .map(|(place, dir)| Found { dir, place })
    }

    /// [`find`](Self::find), else a download from `base_url` (the official source when `None`)
    /// into `<cache>/<name>`. The error lists every folder searched, what each lacked, why the
    /// download failed and how to fix it.
    pub fn find_or_download(&self, dataset: DatasetName, base_url: Option<&str>) -> Result<Found> {
        if let Some(found) = self.find(dataset) {
            return Ok(found);
        }
        let download_error = match &self.cache {
            Some(cache) => {
                let dir = cache.join(dataset.as_str());
                match download::download_dataset(dataset, base_url, &dir) {
                    Ok(()) => return Ok(Found { dir, place: Place::Downloaded }),
                    Err(e) => e.to_string(),
                }
            }
            None => "no cache folder to download into (the user's cache folder is unknown)".to_string(),
        };
        let searched = self
            .candidates(dataset)
            .into_iter()
            .map(|(place, dir)| format!("{place}: {}: {}", dir.display(), describe_missing(&dir)))
            .collect();
        Err(Error::DatasetNotFound { name: dataset.as_str().to_string(), searched, download: download_error })
    }
}

/// The file stems of a data set that `dir` lacks (in neither raw nor gzip form).
fn missing_files(dir: &Path) -> Vec<&'static str> {
    FILE_STEMS.into_iter().filter(|stem| file_in(dir, stem).is_none()).collect()
}

/// Why a candidate folder was not taken, for the not-found message.
fn describe_missing(dir: &Path) -> String {
    if !dir.is_dir() {
        return "no such folder".to_string();
    }
    let missing = missing_files(dir);
    if missing.len() == FILE_STEMS.len() {
        "none of the four files".to_string()
    } else {
        format!("missing {}", missing.iter().map(|s| format!("{s}[.gz]")).collect::<Vec<_>>().join(", "))
    }
}
