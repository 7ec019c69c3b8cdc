//! `stride serve` end to end: the built binary serves on a free port and a real browser (headless
//! Chromium, Debian's `chromium`) loads the page, which draws a pair of trousers on its canvas by
//! itself (`?demo=draw`, through the same functions the pointer uses), sends it, and draws the
//! answer. The test reads the browser's DOM for the prediction, the feature maps, the filters and
//! the layer table, keeps a screenshot as `target/test-artifacts/serve.png`, and stops the server
//! with Ctrl-C (SIGINT).
//!
//! Chromium is found as $CHROMIUM or `chromium` on the PATH; `.ci/run` installs it. Without it the
//! browser tests fail and say how to install it, as the Fashion-MNIST test does without its data.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_fails_with, stride};

/// A `stride serve --port 0` process and the address it printed.
struct Serving {
    child: Child,
    stdout: BufReader<ChildStdout>,
    url: String,
}

impl Serving {
    fn start(args: &[&str]) -> Serving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stride"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the stride binary runs");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        // From here on, dropping `serving` (a failed assertion too) ends the process.
        let mut serving = Serving { child, stdout, url: String::new() };
        let mut printed = String::new();
        loop {
            let mut line = String::new();
            if serving.stdout.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                serving.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("stride serve {args:?} stopped before serving:\n{printed}{err}");
            }
            printed.push_str(&line);
            if let Some(rest) = line.strip_prefix("serving on ") {
                serving.url = rest.split(' ').next().unwrap().to_string();
                assert!(serving.url.starts_with("http://127.0.0.1:") && serving.url.ends_with('/'), "{line}");
                return serving;
            }
        }
    }

    /// Ctrl-C: the server stops by itself, says so and exits with success.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
        assert!(kill.success());
        let status =
            wait_for(&mut self.child, Duration::from_secs(20)).expect("stride serve stops on Ctrl-C");
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{status:?}: {rest}");
        assert_eq!(rest, "stopped\n");
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits at most `limit` for `child` to exit.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The headless browser, or a failure that says how to get it.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "Chromium was not found: the browser tests need headless Chromium; install it with \
         `apt-get install chromium` (as .ci/run does) or point $CHROMIUM at its binary"
    );
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=…`), in a profile of
/// its own, letting the page run for up to 20 s of its own time (network waits do not count).
fn browse(url: &str, args: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--virtual-time-budget=20000")
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // Read while it runs, so that a full pipe never blocks it.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let Some(status) = wait_for(&mut child, Duration::from_secs(90)) else {
        let _ = child.kill();
        panic!("chromium did not finish within 90 s on {url}");
    };
    let mut stderr = Vec::new();
    let _ = child.stderr.take().unwrap().read_to_end(&mut stderr);
    Output { status, stdout: reader.join().unwrap(), stderr }
}

/// The page's DOM once it has run, with `data:` URLs shortened for messages.
fn dump_dom(url: &str) -> String {
    let output = browse(url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium --dump-dom {url}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// Everything between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("{start} not in the page")) + start.len();
    let to = text[from..].find(end).map_or(text.len(), |i| from + i);
    &text[from..to]
}

fn shorten(dom: &str) -> String {
    let mut out = String::new();
    for (i, part) in dom.split("data:image/png;base64,").enumerate() {
        if i > 0 {
            out.push_str("data:…");
            out.push_str(part.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "+/=".contains(c)));
        } else {
            out.push_str(part);
        }
    }
    out
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_drawing_is_predicted_in_a_real_browser() {
    let started = Instant::now();
    let server = Serving::start(&[]);
    let url = format!("{}?demo=draw", server.url);
    let dom = dump_dom(&url);
    let short = shorten(&dom);
    assert!(dom.contains("<body data-state=\"predicted\""), "the page did not finish:\n{short}");
    assert!(!short.contains("<p id=\"message\" role=\"alert\">"), "an error is shown:\n{short}");
    assert!(short.contains("lenet5 trained on fashion-mnist"), "{short}");

    // The top five, most probable first: the drawing is a pair of trousers.
    let top = between(&dom, "<ol id=\"top\"", "</ol>");
    let names: Vec<&str> = top.split("<span class=\"name\">").skip(1).map(|s| between(s, "", "<")).collect();
    assert_eq!(names.len(), 5, "{top}");
    assert_eq!(names[0], "Trouser", "{top}");
    let first = between(top, "<span class=\"p\">", "%");
    assert!(first.parse::<f32>().unwrap() > 50.0, "{top}");
    assert!(short.contains("the drawing at 28×28×1"), "{short}");
    assert!(between(&dom, "<img id=\"input-picture\"", ">").contains("src=\"data:image/png;base64,"));

    // Every layer with feature maps, captioned with its path and W2×H2×D2, each a picture.
    let maps = between(&dom, "<div id=\"maps\">", "</section>");
    let figures: Vec<&str> = maps.split("<figure class=\"layer\"").skip(1).collect();
    let captions: Vec<String> = figures
        .iter()
        .map(|f| {
            format!("{} {}", between(f, "<b>", "</b>"), between(f, "<span class=\"volume\">", "</span>"))
        })
        .collect();
    assert_eq!(
        captions,
        [
            "conv1 28×28×6",
            "relu1 28×28×6",
            "pool1 14×14×6",
            "conv2 10×10×16",
            "relu2 10×10×16",
            "pool2 5×5×16"
        ]
    );
    for figure in &figures {
        assert!(figure.contains("<img src=\"data:image/png;base64,iVBORw0KGgo"), "{}", shorten(figure));
    }

    // The first layer's filters and the table of layer shapes, from /api/model.
    assert!(between(&dom, "<img id=\"filters-picture\"", ">").contains("src=\"data:image/png;base64,"));
    assert!(short.contains("conv1: weight 6×1×5×5 (K×C×F×F)"), "{short}");
    let table = between(&dom, "<tbody>", "</tbody>");
    assert_eq!(table.matches("<tr data-path=").count(), 12, "{table}");
    assert!(table.contains("<td class=\"n\">5×5×16</td>"), "{table}");
    assert!(between(&dom, "<tfoot>", "</tfoot>").contains("61,706"));

    // The screenshot, kept as the test's artefact.
    let shot = artifacts().join("serve.png");
    let _ = std::fs::remove_file(&shot);
    let output = browse(&url, &[&format!("--screenshot={}", shot.display()), "--window-size=1400,2000"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (1400, 2000));
    println!("screenshot: {} ({:.1} s in all)", shot.display(), started.elapsed().as_secs_f64());

    server.interrupt();
}

#[test]
fn a_file_that_is_no_picture_gets_a_message_on_the_page() {
    let server = Serving::start(&[]);
    let dom = dump_dom(&format!("{}?demo=not-a-picture", server.url));
    let short = shorten(&dom);
    assert!(dom.contains("<body data-state=\"error\""), "{short}");
    assert_eq!(
        between(&dom, "<p id=\"message\" role=\"alert\">", "</p>"),
        "notes.csv: the upload is not a PNG or JPEG picture: its 17 bytes start with \
         6e 61 6d 65 2c 73 69 7a (\"name,siz\") (HTTP 415)"
    );
    assert!(between(&dom, "<ol id=\"top\"", "</ol>").ends_with('>'), "no prediction: {short}");
}

#[test]
fn a_zoo_network_shows_its_layer_table_in_a_real_browser() {
    let server = Serving::start(&["--model", "resnet18"]);
    let dom = dump_dom(&server.url);
    let short = shorten(&dom);
    assert!(dom.contains("<body data-state=\"summary\" class=\"summary-only\""), "{short}");
    assert!(short.contains("no trained weights"), "{short}");
    let table = between(&dom, "<tbody>", "</tbody>");
    assert!(table.contains("<tr data-path=\"layer4.1.conv2\">"), "{table}");
    assert!(table.contains("<td class=\"n\">7×7×512</td>"), "{table}");
    assert!(between(&dom, "<tfoot>", "</tfoot>").contains("11,689,512"));
}

#[test]
fn what_cannot_be_served_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    assert_fails_with(
        &stride(&["serve", "--port", "0", "--checkpoint", missing.to_str().unwrap()]),
        "does not exist; give a run directory",
    );
    assert_fails_with(&stride(&["serve", "--port", "0", "--model", "lenet6"]), "no model called \"lenet6\"");
    let both = stride(&["serve", "--checkpoint", "x", "--model", "lenet5"]);
    assert_eq!(both.status.code(), Some(2), "clap refuses both");

    // A port in use.
    let first = Serving::start(&["--model", "lenet5"]);
    let port = first.url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
    assert_fails_with(
        &stride(&["serve", "--port", &port, "--model", "lenet5"]),
        &format!("cannot listen on 127.0.0.1:{port}: "),
    );
    assert_fails_with(&stride(&["serve", "--port", &port, "--model", "lenet5"]), "give another --port");
    drop(first);
}
