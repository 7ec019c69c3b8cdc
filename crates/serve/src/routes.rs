//! The routes, a fixed table matched on method and path; nothing else is served.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page (`assets/index.html`) |
//! | `GET /app.js`, `GET /style.css` | its script and style |
//! | `GET /api/model` | the network: name, classes, input, layer table, first layer's filters, limits |
//! | `POST /api/predict` | body: a PNG or JPEG; top classes, the input as seen, every layer's feature maps |
//!
//! Failures are JSON `{"error": "..."}`: 400 unreadable, 404 no such route, 405 wrong method,
//! 409 a network without weights asked to predict, 413 too large, 415 not a picture.

use crate::http::{JSON, Request, Response};
use crate::model::ServedModel;
use crate::upload::decode_upload;

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const APP_JS: &str = include_str!("../assets/app.js");
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The paths there are, with the method each takes.
pub const ROUTES: [(&str, &str); 5] = [
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/style.css"),
    ("GET", "/api/model"),
    ("POST", "/api/predict"),
];

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => Response::new(200, JSON, body),
        Err(e) => Response::error(500, &format!("cannot encode the answer: {e}")),
    }
}

/// The answer to one request.
pub fn handle(request: &Request, model: &ServedModel) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/") => Response::new(200, "text/html; charset=utf-8", INDEX_HTML),
        ("GET", "/app.js") => Response::new(200, "text/javascript; charset=utf-8", APP_JS),
        ("GET", "/style.css") => Response::new(200, "text/css; charset=utf-8", STYLE_CSS),
        ("GET", "/api/model") => json(model.info()),
        ("POST", "/api/predict") => predict(request, model),
        (method, path) => match ROUTES.iter().find(|(_, p)| *p == path) {
            Some((allowed, _)) => Response::error(405, &format!("{path} takes {allowed}, not {method}"))
                .with_header("Allow", *allowed),
            None => Response::error(404, &format!("there is nothing at {path}; the page is at /")),
        },
    }
}

fn predict(request: &Request, model: &ServedModel) -> Response {
    if !model.info().predicts {
        return Response::error(
            409,
            &format!(
                "{} has no trained weights here, so it cannot predict; start `stride serve --checkpoint DIR` \
                 with a run of `stride train`",
                model.info().name
            ),
        );
    }
    let picture = match decode_upload(&request.body) {
        Ok(picture) => picture,
        Err(refused) => return Response::error(refused.status, &refused.message),
    };
    match model.predict(&picture) {
        Some(Ok(prediction)) => json(&prediction),
        Some(Err(e)) => Response::error(500, &format!("the network could not process the picture: {e}")),
        None => Response::error(409, "this network has no trained weights"),
    }
}
