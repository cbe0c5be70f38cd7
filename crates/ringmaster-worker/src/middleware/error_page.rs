//! Error rendering: every response with status >= 400 becomes JSON for
//! API clients and an HTML page for browsers ([`render_error`]), whoever
//! made it (the app, an extractor's rejection, a layer), keeping its
//! headers.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::error::{ErrorInfo, json_error};

/// Whether the client asks for HTML (a browser).
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The largest error body read to become the message of a rendered error.
const MAX_ERROR_BODY: usize = 4096;

/// Renders an error response (status >= 400) the same way whoever made
/// it: JSON for API clients, an HTML page for browsers. The message is the
/// `AppError`'s, else the body's text (an extractor's rejection says what
/// was wrong), else the status's reason. The response's headers are kept
/// (`WWW-Authenticate`, `Retry-After`, CORS...), but for the body's own; a
/// JSON error body made by the app is left as it is for API clients.
pub(super) async fn render_error(response: Response, wants_html: bool) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let message = match parts.extensions.get::<ErrorInfo>() {
        Some(info) => info.0.clone(),
        None => {
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.contains("json"));
            if json && !wants_html {
                return Response::from_parts(parts, body);
            }
            match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
                Ok(text) if !text.is_empty() => String::from_utf8_lossy(&text).trim().to_string(),
                _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
            }
        }
    };
    let mut rendered = if wants_html {
        let mut page = Response::new(Body::from(error_page(status, &message)));
        *page.status_mut() = status;
        page.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        page
    } else {
        json_error(status, &message)
    };
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_ENCODING
        {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    rendered
}

fn error_page(status: StatusCode, message: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1><p>{message}</p></body></html>\n",
        code = status.as_u16(),
        reason = escape(reason),
        message = escape(message),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
