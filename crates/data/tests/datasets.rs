//! Data sets: names, loading a split, the discovery order on temporary folders, and downloads
//! against a local HTTP server on 127.0.0.1 (good, corrupted, truncated and missing files). No
//! test reaches an outside address, the user's home or /usr/share; each HTTP test has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stride_data::Error;
use stride_data::datasets::{
    DatasetName, Discovery, FILE_STEMS, Found, Place, RemoteFile, download_file, load_split,
};
use stride_data::idx::{IMAGES_MAGIC, LABELS_MAGIC};

/// Writes the four files of a tiny data set (`train` 3 images, `t10k` 2, 28×28) into `dir`.
fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (stem, count) in FILE_STEMS.into_iter().zip([3u32, 3, 2, 2]) {
        let mut bytes: Vec<u8> = Vec::new();
        if stem.contains("images") {
            for w in [IMAGES_MAGIC, count, 28, 28] {
                bytes.extend(w.to_be_bytes());
            }
            bytes.extend((0..count * 28 * 28).map(|i| (i % 256) as u8));
        } else {
            for w in [LABELS_MAGIC, count] {
                bytes.extend(w.to_be_bytes());
            }
            bytes.extend((0..count).map(|i| i as u8 + 1));
        }
        std::fs::write(dir.join(stem), bytes).unwrap();
    }
}

#[test]
fn names_parse_and_unknown_ones_list_the_known() {
    assert_eq!("mnist".parse::<DatasetName>().unwrap(), DatasetName::Mnist);
    assert_eq!("fashion-mnist".parse::<DatasetName>().unwrap(), DatasetName::FashionMnist);
    let err = "cifar".parse::<DatasetName>().unwrap_err();
    assert_eq!(err.to_string(), "unknown data set \"cifar\"; known: mnist, fashion-mnist");
    assert_eq!(DatasetName::FashionMnist.classes()[9], "Ankle boot");
}

#[test]
fn pinned_files_are_the_published_gzip_names_with_sha256_digests() {
    for dataset in DatasetName::ALL {
        for (file, stem) in dataset.files().iter().zip(FILE_STEMS) {
            assert_eq!(file.name, format!("{stem}.gz"));
            assert_eq!(file.sha256.len(), 64);
            assert!(file.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}

#[test]
fn load_split_pairs_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let train = load_split(dir.path(), DatasetName::Mnist, true).unwrap();
    assert_eq!(train.images.dims(), [3, 1, 28, 28]);
    assert_eq!(train.labels, [1, 2, 3]);
    let test = load_split(dir.path(), DatasetName::Mnist, false).unwrap();
    assert_eq!(test.images.dims(), [2, 1, 28, 28]);
    assert_eq!(test.images.data()[255], 1.0);
}

#[test]
fn load_split_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_split(dir.path(), DatasetName::FashionMnist, false).unwrap_err();
    let expected = dir.path().join("t10k-images-idx3-ubyte.gz");
    assert_eq!(err.to_string(), format!("{}: no such file", expected.display()));
}

/// Four roots, each holding a complete copy in the layout that root expects.
struct Roots {
    _tmp: tempfile::TempDir,
    explicit: PathBuf,
    env: PathBuf,
    cache: PathBuf,
    system: PathBuf,
}

fn roots() -> Roots {
    let tmp = tempfile::tempdir().unwrap();
    let [explicit, env, cache, system] = ["explicit", "env", "cache", "system"].map(|n| tmp.path().join(n));
    write_dataset(&explicit.join("mnist"));
    // STRIDE_DATA may also point straight at the files.
    write_dataset(&env);
    write_dataset(&cache.join("mnist"));
    write_dataset(&system.join("mnist"));
    Roots { _tmp: tmp, explicit, env, cache, system }
}

#[test]
fn discovery_order_is_explicit_env_cache_system() {
    let r = roots();
    let mut discovery = Discovery {
        explicit: Some(r.explicit.clone()),
        env: Some(r.env.clone()),
        cache: Some(r.cache.clone()),
        system: Some(r.system.clone()),
    };
    let found = |d: &Discovery| d.find(DatasetName::Mnist).unwrap();
    assert_eq!(found(&discovery), Found { dir: r.explicit.join("mnist"), place: Place::Explicit });
    discovery.explicit = None;
    assert_eq!(found(&discovery), Found { dir: r.env.clone(), place: Place::Env });
    discovery.env = None;
    assert_eq!(found(&discovery), Found { dir: r.cache.join("mnist"), place: Place::Cache });
    discovery.cache = None;
    assert_eq!(found(&discovery), Found { dir: r.system.join("mnist"), place: Place::System });
    discovery.system = None;
    assert_eq!(discovery.find(DatasetName::Mnist), None);
}

#[test]
fn an_incomplete_folder_is_skipped() {
    let r = roots();
    std::fs::remove_file(r.explicit.join("mnist").join("t10k-labels-idx1-ubyte")).unwrap();
    let discovery = Discovery {
        explicit: Some(r.explicit.clone()),
        system: Some(r.system.clone()),
        ..Default::default()
    };
    assert_eq!(discovery.find(DatasetName::Mnist).unwrap().place, Place::System);
    // Another data set's folder does not count.
    assert_eq!(discovery.find(DatasetName::FashionMnist), None);
}

#[test]
fn debian_layout_is_accepted() {
    // dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist/<stem>.gz.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fashion-mnist");
    write_dataset(&dir);
    for stem in FILE_STEMS {
        let raw = std::fs::read(dir.join(stem)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        std::fs::write(dir.join(format!("{stem}.gz")), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(dir.join(stem)).unwrap();
    }
    let discovery = Discovery { system: Some(tmp.path().to_path_buf()), ..Default::default() };
    let found = discovery.find(DatasetName::FashionMnist).unwrap();
    assert_eq!(found.place, Place::System);
    assert_eq!(load_split(&found.dir, DatasetName::FashionMnist, true).unwrap().labels, [1, 2, 3]);
}

// ---- a local HTTP server -------------------------------------------------------------------

/// What the test server answers for a path.
fn respond(path: &str, stream: &mut TcpStream) {
    let good = good_body();
    let reply: Vec<u8> = match path {
        "/good.gz" => [ok_header(good.len()), good].concat(),
        "/bad.gz" => {
            // Same length, one byte different: only the digest can tell.
            let mut bad = good.clone();
            bad[0] ^= 1;
            [ok_header(bad.len()), bad].concat()
        }
        // Promises the full length, sends ten bytes and closes the connection.
        "/short.gz" => [ok_header(good.len()), good[..10].to_vec()].concat(),
        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    };
    let _ = stream.write_all(&reply);
}

fn ok_header(len: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn good_body() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn good_file(name: &str) -> RemoteFile {
    let body = good_body();
    let digest: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    RemoteFile::new(name, body.len() as u64, digest)
}

/// Starts a server on 127.0.0.1 (a free port) and returns its base URL. The thread serves until
/// the test process exits.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers up to the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
            respond(&path, &mut stream);
        }
    });
    format!("http://{addr}/")
}

/// Runs `f` on a thread and fails the test if it takes longer than 20 s.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("the download did not finish within 20 s")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_good_download_is_verified_and_renamed() {
    let base = serve();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_path_buf();
    let path = within(move || download_file(&base, &good_file("good.gz"), &target)).unwrap();
    assert_eq!(path, dir.path().join("good.gz"));
    assert_eq!(std::fs::read(&path).unwrap(), good_body());
    assert_eq!(entries(dir.path()), ["good.gz"]);
}

#[test]
fn a_corrupted_download_names_both_digests_and_is_removed() {
    let base = serve();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_path_buf();
    let file = good_file("bad.gz");
    let expected = file.sha256.clone();
    let err = within(move || download_file(&base, &file, &target)).unwrap_err();
    let Error::Checksum { expected: e, found, .. } = &err else { panic!("{err:?}") };
    assert_eq!(e, &expected);
    assert_ne!(found, &expected);
    let path = dir.path().join("bad.gz");
    assert!(
        err.to_string().starts_with(&format!("{}: SHA-256 mismatch for http://127.0.0.1:", path.display()))
    );
    assert!(err.to_string().contains(&format!("expected {expected}, found {found}")), "{err}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn a_truncated_transfer_leaves_nothing_behind() {
    let base = serve();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_path_buf();
    let err = within(move || download_file(&base, &good_file("short.gz"), &target)).unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("{}: cannot download", dir.path().join("short.gz").display())));
    assert!(message.contains("of 5000 bytes") || message.contains("expected 5000"), "{message}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn a_404_is_reported_with_its_status() {
    let base = serve();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_path_buf();
    let err = within(move || download_file(&base, &good_file("missing.gz"), &target)).unwrap_err();
    assert!(err.to_string().ends_with("the server answered HTTP 404 Not Found"), "{err}");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn nothing_found_and_no_download_lists_every_place_and_the_fixes() {
    let base = serve();
    let tmp = tempfile::tempdir().unwrap();
    let [explicit, env, cache, system] = ["explicit", "env", "cache", "system"].map(|n| tmp.path().join(n));
    // A partial copy, to check that the message says what it lacks.
    std::fs::create_dir_all(explicit.join("mnist")).unwrap();
    std::fs::write(explicit.join("mnist").join("train-images-idx3-ubyte.gz"), b"").unwrap();
    let discovery = Discovery {
        explicit: Some(explicit.clone()),
        env: Some(env.clone()),
        cache: Some(cache.clone()),
        system: Some(system.clone()),
    };
    let err = within(move || discovery.find_or_download(DatasetName::Mnist, Some(&base))).unwrap_err();
    let message = err.to_string();
    let searched = [
        format!(
            "--data: {}: missing train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
            explicit.join("mnist").display()
        ),
        format!("--data: {}: none of the four files", explicit.display()),
        format!("STRIDE_DATA: {}: no such folder", env.join("mnist").display()),
        format!("STRIDE_DATA: {}: no such folder", env.display()),
        format!("cache: {}: ", cache.join("mnist").display()),
        format!("system: {}: no such folder", system.join("mnist").display()),
    ];
    let mut at = 0;
    for place in &searched {
        let found = message[at..]
            .find(place.as_str())
            .unwrap_or_else(|| panic!("{place:?} not in order in:\n{message}"));
        at += found + place.len();
    }
    assert!(message.starts_with("data set mnist not found; searched, in order:\n"), "{message}");
    assert!(message.contains("the server answered HTTP 404 Not Found"), "{message}");
    for fix in ["--data DIR", "STRIDE_DATA=DIR", "apt-get install dataset-fashion-mnist"] {
        assert!(message.contains(fix), "{fix} missing in:\n{message}");
    }
    // The failed download leaves an empty cache folder at most, never a partial file.
    let cached = cache.join("mnist");
    assert!(!cached.exists() || entries(&cached).is_empty(), "{:?}", entries(&cached));
}
