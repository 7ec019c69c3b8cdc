//! stride-serve: a page in a browser where a person draws on a canvas or drops a picture and sees,
//! live, what a trained network makes of it: the most probable classes, the feature maps of every
//! layer, the first layer's filters and the table of layer shapes (`stride serve`).
//!
//! ```text
//! lib.rs     Server: the listener, one thread per connection (at most MAX_CONNECTIONS), stop
//! routes.rs  the fixed table of routes: the page's three files and the two API calls
//! http.rs    just enough HTTP/1.1, every read bounded (head, body, time)
//! upload.rs  an uploaded PNG/JPEG: format, byte and pixel limits, then decoding
//! model.rs   the network: the shipped LeNet-5, a checkpoint, or a zoo network's layer table
//! assets/    index.html, app.js, style.css (embedded), the shipped LeNet-5's weights
//! ```
//!
//! Nothing is read from the file system while serving: the page is embedded in the binary and a
//! request's path is only ever compared with the routes. The pictures are `stride-viz`'s.
//!
//! ```no_run
//! use stride_serve::{ServedModel, Server};
//!
//! let server = Server::bind("127.0.0.1:0", ServedModel::shipped()?)?;
//! println!("open {}", server.url());
//! server.run(); // until `server.stopper().stop()` is called from another thread
//! # Ok::<(), stride_serve::Error>(())
//! ```

pub mod http;
pub mod model;
pub mod routes;
pub mod upload;

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub use model::ServedModel;

use crate::http::{IO_TIMEOUT, Response, read_request, write_response};
use crate::upload::MAX_UPLOAD_BYTES;

/// Connections served at once; one more is answered 503 at once (the page makes one request at a
/// time, so only a misbehaving client gets there).
pub const MAX_CONNECTIONS: usize = 32;

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Train(#[from] stride_train::Error),
    #[error(transparent)]
    Viz(#[from] stride_viz::Error),
    #[error(transparent)]
    Tensor(#[from] stride_tensor::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a picture as PNG: {0}")]
    Png(String),
}

/// A listening server and the model it shows.
pub struct Server {
    listener: TcpListener,
    address: SocketAddr,
    model: Arc<ServedModel>,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`Server`] from another thread (a Ctrl-C handler).
#[derive(Clone)]
pub struct Stopper {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Stopper {
    /// Asks the server to stop: it finishes the requests in progress and [`Server::run`] returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks; a connection of our own wakes it to see the flag.
        let mut wake = self.address;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, IO_TIMEOUT);
    }
}

impl Server {
    /// Listens on `address` (port 0: a free port, see [`Server::url`]).
    pub fn bind(
        address: impl ToSocketAddrs + std::fmt::Display,
        model: ServedModel,
    ) -> Result<Server, Error> {
        let bind_error = |source| Error::Bind { address: address.to_string(), source };
        let listener = TcpListener::bind(&address).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        Ok(Server { listener, address, model: Arc::new(model), stop: Arc::new(AtomicBool::new(false)) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT/`: where the page is (for an address that listens everywhere,
    /// the same port on this machine).
    pub fn url(&self) -> String {
        let mut address = self.address;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{address}/")
    }

    pub fn model(&self) -> &ServedModel {
        &self.model
    }

    pub fn stopper(&self) -> Stopper {
        Stopper { address: self.address, stop: self.stop.clone() }
    }

    /// Serves until [`Stopper::stop`], each connection on its own thread; returns once the
    /// connections in progress are answered.
    pub fn run(self) {
        let active = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for stream in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            // A failed accept (the client gave up, too many open files) concerns that client only.
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                let busy = Response::error(503, "the server is busy; try again in a moment");
                let _ = write_response(&mut stream, &busy, true);
                continue;
            }
            let (model, done) = (self.model.clone(), active.clone());
            threads.retain(|t: &std::thread::JoinHandle<()>| !t.is_finished());
            let spawned = std::thread::Builder::new().name("stride-serve".into()).spawn(move || {
                serve_connection(&mut stream, &model);
                done.fetch_sub(1, Ordering::SeqCst);
            });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(_) => {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// One request on one connection: read within the limits, answer, close. A panic while handling
/// it becomes a 500 for this request and leaves the server serving.
fn serve_connection(stream: &mut TcpStream, model: &ServedModel) {
    let (response, body_pending) = match read_request(stream, MAX_UPLOAD_BYTES) {
        Ok(request) => {
            let answer = catch_unwind(AssertUnwindSafe(|| routes::handle(&request, model)));
            let response = answer.unwrap_or_else(|_| {
                Response::error(500, "the server failed on this request; it goes on serving others")
            });
            (response, false)
        }
        Err(rejected) => (rejected.response, rejected.body_pending),
    };
    let _ = write_response(stream, &response, body_pending);
}
