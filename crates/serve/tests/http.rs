//! The server over real sockets, without a browser: every route, every kind of bad upload and bad
//! request with its status and message, and the server still answering after each.

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use image::{GrayImage, ImageFormat, Luma, RgbImage};
use serde_json::Value;
use stride_serve::upload::MAX_UPLOAD_BYTES;
use stride_serve::{ServedModel, Server, Stopper};

/// A server on a free port of 127.0.0.1, running on its own thread.
struct Running {
    address: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(model: ServedModel) -> Running {
        let server = Server::bind("127.0.0.1:0", model).unwrap();
        assert!(server.url().starts_with("http://127.0.0.1:"), "{}", server.url());
        let (address, stopper) = (server.local_addr(), server.stopper());
        Running { address, stopper, thread: Some(std::thread::spawn(move || server.run())) }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.text())).to_string()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` bytes and reads the whole answer (the server closes every connection).
fn exchange(address: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (and stop reading) before the whole body is sent.
    let _ = stream.write_all(raw);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut bytes = Vec::new();
    if let Err(e) = stream.read_to_end(&mut bytes) {
        assert!(!bytes.is_empty(), "no answer: {e}");
    }
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head");
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, head, body: bytes[end + 4..].to_vec() }
}

fn request(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    exchange(address, &raw)
}

fn get(address: SocketAddr, path: &str) -> Reply {
    request(address, "GET", path, b"")
}

fn png(picture: &GrayImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    picture.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
    bytes
}

/// Trousers as Fashion-MNIST draws them: two light legs on black, joined at the waist.
fn trousers(background: u8, ink: u8) -> GrayImage {
    GrayImage::from_fn(140, 140, |x, y| {
        let waist = (15..35).contains(&y) && (40..100).contains(&x);
        let legs = (15..130).contains(&y) && ((40..62).contains(&x) || (78..100).contains(&x));
        Luma([if waist || legs { ink } else { background }])
    })
}

/// The server still answers, and its page is intact.
fn still_serving(address: SocketAddr) {
    let reply = get(address, "/api/model");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "lenet5");
}

#[test]
fn the_page_and_its_files() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let page = get(server.address, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("Connection"), Some("close"));
    let html = page.text();
    for needle in
        ["<canvas id=\"canvas\"", "id=\"top\"", "id=\"maps\"", "id=\"layers\"", "/app.js", "/style.css"]
    {
        assert!(html.contains(needle), "{needle} missing from the page");
    }
    // A query (the page's demo switch) does not change the route.
    assert_eq!(get(server.address, "/?demo=draw").body, page.body);
    let script = get(server.address, "/app.js");
    assert_eq!((script.status, script.header("Content-Type")), (200, Some("text/javascript; charset=utf-8")));
    assert!(script.text().contains("/api/predict"));
    let style = get(server.address, "/style.css");
    assert_eq!((style.status, style.header("Content-Type")), (200, Some("text/css; charset=utf-8")));
}

#[test]
fn the_model_its_layers_and_filters() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let reply = get(server.address, "/api/model");
    assert_eq!((reply.status, reply.header("Content-Type")), (200, Some("application/json")));
    let model = reply.json();
    assert_eq!(model["title"], "lenet5 trained on fashion-mnist");
    assert!(model["source"].as_str().unwrap().contains("90.61% test accuracy after 20 epochs"), "{model}");
    assert_eq!(model["predicts"], true);
    assert_eq!(model["input"], serde_json::json!([1, 28, 28]));
    assert_eq!(model["classes"][9], "Ankle boot");
    assert_eq!(model["parameters"], 61706);
    let rows: Vec<(String, String)> = model["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap().to_string(), r["output"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rows[0], ("conv1".to_string(), "28×28×6".to_string()));
    assert!(rows.contains(&("pool2".to_string(), "5×5×16".to_string())), "{rows:?}");
    assert_eq!(rows.last().unwrap(), &("fc3".to_string(), "10".to_string()));
    assert_eq!(model["output"], "10");
    let filters = &model["filters"];
    assert_eq!((filters["path"].as_str(), filters["shape"].as_str()), (Some("conv1"), Some("6×1×5×5")));
    assert!(filters["png"].as_str().unwrap().starts_with("data:image/png;base64,iVBORw0KGgo"));
    assert_eq!(model["limits"]["max_bytes"], MAX_UPLOAD_BYTES);
}

#[test]
fn a_picture_gets_its_classes_and_every_layers_feature_maps() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let reply = request(server.address, "POST", "/api/predict", &png(&trousers(0, 255)));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    let top = answer["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    assert_eq!(top[0]["name"], "Trouser", "{top:?}");
    assert!(top[0]["probability"].as_f64().unwrap() > 0.5, "{top:?}");
    let probabilities: Vec<f64> = top.iter().map(|p| p["probability"].as_f64().unwrap()).collect();
    assert!(probabilities.windows(2).all(|w| w[0] >= w[1]), "most probable first: {probabilities:?}");
    assert_eq!(answer["inverted"], false);
    assert!(answer["input"].as_str().unwrap().starts_with("data:image/png;base64,"));
    let layers: Vec<(&str, &str)> = answer["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["path"].as_str().unwrap(), l["shape"].as_str().unwrap()))
        .collect();
    assert_eq!(
        layers,
        [
            ("conv1", "28×28×6"),
            ("relu1", "28×28×6"),
            ("pool1", "14×14×6"),
            ("conv2", "10×10×16"),
            ("relu2", "10×10×16"),
            ("pool2", "5×5×16")
        ]
    );
    for layer in answer["layers"].as_array().unwrap() {
        assert!(layer["png"].as_str().unwrap().starts_with("data:image/png;base64,iVBORw0KGgo"));
        assert!(layer["low"].as_f64().unwrap() <= layer["high"].as_f64().unwrap());
    }

    // Dark trousers on white paper, as a photo or a drawing would show them: inverted first, and
    // the same answer; a JPEG as well as a PNG.
    let mut jpeg = Vec::new();
    let paper = trousers(255, 0);
    paper.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
    for upload in [png(&paper), jpeg] {
        let answer = request(server.address, "POST", "/api/predict", &upload).json();
        assert_eq!(answer["inverted"], true);
        assert_eq!(answer["top"][0]["name"], "Trouser");
    }
    // Colour is turned grey.
    let colour = RgbImage::from_fn(50, 50, |x, _| image::Rgb([(x * 5) as u8, 30, 200]));
    let mut bytes = Vec::new();
    colour.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
    assert_eq!(request(server.address, "POST", "/api/predict", &bytes).status, 200);
}

#[test]
fn bad_uploads_are_refused_with_a_reason_and_the_server_goes_on() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let address = server.address;
    let refused = |body: &[u8]| {
        let reply = request(address, "POST", "/api/predict", body);
        let answer = (reply.status, reply.error());
        still_serving(address);
        answer
    };
    assert_eq!(refused(b""), (400, "the upload is empty: send a PNG or JPEG picture".into()));
    assert_eq!(
        refused(b"name,size\nboot,9\n"),
        (
            415,
            "the upload is not a PNG or JPEG picture: its 17 bytes start with 6e 61 6d 65 2c 73 69 7a (\"name,siz\")"
                .into()
        )
    );
    let mut truncated = png(&trousers(0, 255));
    truncated.truncate(60);
    let (status, message) = refused(&truncated);
    assert_eq!(status, 400);
    assert!(message.starts_with("the PNG picture cannot be read: "), "{message}");
    // More pixels than the server decodes, in a small file: refused from the header alone.
    let (status, message) = refused(&png(&GrayImage::new(5000, 4000)));
    assert_eq!(status, 413);
    assert_eq!(
        message,
        "the picture is 5000×4000 pixels (20,000,000); this server decodes at most 16,777,216 pixels \
         (4096×4096) and 16384 on a side"
    );

    // A body over the limit is refused from its Content-Length, before it is read: here only the
    // head and a little of the body are sent.
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        MAX_UPLOAD_BYTES + 1
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&[0x89; 4096]);
    let reply = exchange(address, &raw);
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.error(),
        "the upload is 8388609 bytes; the most this server accepts is 8 MiB (8388608 bytes)"
    );
    still_serving(address);
    // A declared length far beyond memory costs nothing either.
    let reply = exchange(address, b"POST /api/predict HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n");
    assert_eq!(reply.status, 413);
    still_serving(address);
    // A whole body over the limit, sent in full: the same answer.
    let reply = request(address, "POST", "/api/predict", &vec![0u8; MAX_UPLOAD_BYTES + 1]);
    assert_eq!(reply.status, 413);
    still_serving(address);
    // A body just under the limit is read and judged on its content.
    let reply = request(address, "POST", "/api/predict", &vec![0u8; MAX_UPLOAD_BYTES]);
    assert_eq!(reply.status, 415, "{}", reply.text());
    still_serving(address);
}

#[test]
fn requests_outside_the_routes_are_answered_and_never_reach_files() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let address = server.address;
    for path in
        ["/nothing", "/../../etc/passwd", "/assets/index.html", "/Cargo.toml", "/app.js/../lib.rs", "//etc"]
    {
        let reply = get(address, path);
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.error(), format!("there is nothing at {path}; the page is at /"));
    }
    let reply = request(address, "POST", "/", b"x");
    assert_eq!((reply.status, reply.header("Allow")), (405, Some("GET")));
    assert_eq!(reply.error(), "/ takes GET, not POST");
    let reply = get(address, "/api/predict");
    assert_eq!((reply.status, reply.header("Allow")), (405, Some("POST")));
    let reply = request(address, "DELETE", "/api/model", b"");
    assert_eq!(reply.status, 405);

    // Malformed requests.
    let answer = |raw: &[u8]| {
        let reply = exchange(address, raw);
        still_serving(address);
        (reply.status, reply.error())
    };
    assert_eq!(answer(b"hello\r\n\r\n"), (400, "the request line is not `METHOD TARGET HTTP/1.1`".into()));
    assert_eq!(
        answer(b"GET / HTTP/2.0\r\n\r\n"),
        (505, "HTTP/2.0: this server speaks HTTP/1.0 and HTTP/1.1".into())
    );
    assert_eq!(
        answer(b"POST /api/predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        (411, "send the body with a Content-Length, not in chunks".into())
    );
    assert_eq!(
        answer(b"POST /api/predict HTTP/1.1\r\nContent-Length: many\r\n\r\n"),
        (400, "Content-Length \"many\" is not a number".into())
    );
    assert_eq!(
        answer(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
        (400, "the header line \"no colon here\" has no colon".into())
    );
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(answer(long.as_bytes()), (431, "the request's head is longer than 16384 bytes".into()));
    // A client that sends less than it announced.
    assert_eq!(
        answer(b"POST /api/predict HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort"),
        (400, "the body ended after fewer than the 100 bytes its Content-Length announced".into())
    );
    // A client that connects and says nothing does not hold the server up.
    let silent = TcpStream::connect(address).unwrap();
    still_serving(address);
    drop(silent);
}

#[test]
fn expect_100_continue_is_honoured_for_bodies_within_the_limit() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let body = png(&trousers(0, 255));
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&body).unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap_or_else(|e| panic!("{e}"));
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest:.200}");

    // Over the limit: refused without a 100, so the client never sends it.
    let reply = exchange(
        server.address,
        b"POST /api/predict HTTP/1.1\r\nContent-Length: 9000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(reply.status, 413);
}

#[test]
fn a_zoo_network_without_weights_shows_its_layers_only() {
    let server = Running::start(ServedModel::zoo("resnet18").unwrap());
    let model = get(server.address, "/api/model").json();
    assert_eq!(model["predicts"], false);
    assert_eq!(model["name"], "resnet18");
    assert_eq!(model["input"], serde_json::json!([3, 224, 224]));
    assert_eq!(model["parameters"], 11_689_512);
    assert_eq!(model["layers"][0]["path"], "conv1");
    assert_eq!(model["layers"][0]["output"], "112×112×64");
    assert!(model["filters"].is_null());
    let reply = request(server.address, "POST", "/api/predict", &png(&trousers(0, 255)));
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.error(),
        "resnet18 has no trained weights here, so it cannot predict; start `stride serve --checkpoint DIR` \
         with a run of `stride train`"
    );
    let err = ServedModel::zoo("resnet19").err().unwrap().to_string();
    assert!(err.contains("no model called \"resnet19\"; the zoo has: "), "{err}");
}

#[test]
fn several_clients_at_once_are_all_answered() {
    let server = Running::start(ServedModel::shipped().unwrap());
    let address = server.address;
    let upload = png(&trousers(0, 255));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let upload = upload.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    request(address, "POST", "/api/predict", &upload).status
                } else {
                    get(address, "/api/model").status
                }
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
}

#[test]
fn a_port_in_use_is_an_error_naming_it() {
    let first = Server::bind("127.0.0.1:0", ServedModel::zoo("lenet5").unwrap()).unwrap();
    let address = first.local_addr().to_string();
    let err = Server::bind(address.as_str(), ServedModel::zoo("lenet5").unwrap()).err().unwrap();
    assert!(err.to_string().starts_with(&format!("cannot listen on {address}: ")), "{err}");
}

#[test]
fn a_checkpoint_of_stride_train_is_served_from_its_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("weights-e020.safetensors");
    std::fs::write(&weights, stride_serve::model::SHIPPED_WEIGHTS).unwrap();
    let server = Running::start(ServedModel::checkpoint(&weights).unwrap());
    let model = get(server.address, "/api/model").json();
    assert_eq!(model["source"], weights.display().to_string());
    assert_eq!(model["predicts"], true);
    let reply = request(server.address, "POST", "/api/predict", &png(&trousers(0, 255)));
    assert_eq!(reply.json()["top"][0]["name"], "Trouser");
    let err = ServedModel::checkpoint(&tmp.path().join("missing")).err().unwrap().to_string();
    assert!(
        err.ends_with(
            "does not exist; give a run directory (the --out of `stride train`) or a weights file in it"
        ),
        "{err}"
    );
}
