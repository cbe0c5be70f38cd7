//! Controllers: a path prefix and the routes under it, as a module returns
//! them. The worker mounts all of them and keeps the route table that
//! `routes` prints.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, on};

use crate::context::AppContext;

/// One route of a controller.
pub(crate) struct Route {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) router: MethodRouter<AppContext>,
}

/// A path prefix and its routes.
///
/// ```
/// use ringmaster_worker::Controller;
///
/// async fn list() -> &'static str { "[]" }
/// async fn create() -> &'static str { "created" }
///
/// let links = Controller::new("/links").get("/", list).post("/", create);
/// ```
#[must_use]
pub struct Controller {
    prefix: String,
    pub(crate) routes: Vec<Route>,
}

/// One line of a route table: method, full path, module.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteInfo {
    /// The HTTP method.
    pub method: String,
    /// The full path, prefix included (axum syntax: `/l/{code}`).
    pub path: String,
    /// The module that defines it.
    pub module: String,
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $method:ident, $filter:ident) => {
        $(#[$doc])*
        pub fn $name<H, T>(self, path: &str, handler: H) -> Self
        where
            H: Handler<T, AppContext>,
            T: 'static,
        {
            self.add(Method::$method, path, on(axum::routing::MethodFilter::$filter, handler))
        }
    };
}

impl Controller {
    /// A controller whose routes live under `prefix` (`"/"` for none).
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Controller {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
            routes: Vec::new(),
        }
    }

    method!(
        /// Adds a GET route at `path`, relative to the prefix.
        get, GET, GET
    );
    method!(
        /// Adds a POST route.
        post, POST, POST
    );
    method!(
        /// Adds a PUT route.
        put, PUT, PUT
    );
    method!(
        /// Adds a PATCH route.
        patch, PATCH, PATCH
    );
    method!(
        /// Adds a DELETE route.
        delete, DELETE, DELETE
    );

    fn add(mut self, method: Method, path: &str, router: MethodRouter<AppContext>) -> Self {
        let path = match (self.prefix.as_str(), path) {
            ("", "") => "/".to_string(),
            (prefix, "/" | "") if !prefix.is_empty() => prefix.to_string(),
            (prefix, p) if p.starts_with('/') => format!("{prefix}{p}"),
            (prefix, p) => format!("{prefix}/{p}"),
        };
        self.routes.push(Route {
            method,
            path,
            router,
        });
        self
    }

    /// The routes as `(method, full path)` pairs.
    pub fn paths(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .map(|r| (r.method.to_string(), r.path.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok() -> &'static str {
        "ok"
    }

    #[test]
    fn prefixes_join_paths() {
        let c = Controller::new("/links/")
            .get("/", ok)
            .post("/", ok)
            .delete("/{code}", ok)
            .get("x", ok);
        assert_eq!(
            c.paths(),
            [
                ("GET".into(), "/links".into()),
                ("POST".into(), "/links".into()),
                ("DELETE".into(), "/links/{code}".into()),
                ("GET".into(), "/links/x".into()),
            ]
        );
        let root = Controller::new("/").get("/", ok).get("/json", ok);
        assert_eq!(
            root.paths(),
            [("GET".into(), "/".into()), ("GET".into(), "/json".into())]
        );
    }
}
