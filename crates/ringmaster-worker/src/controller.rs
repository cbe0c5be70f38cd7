//! Controllers: a path prefix and the routes under it, as a module returns
//! them. Routes are plain axum handlers or [`MethodRouter`]s; controllers
//! nest and merge, and a layer wraps the routes added before it. The
//! worker mounts every module's controller and keeps the route table that
//! `routes` prints.

use std::convert::Infallible;

use axum::extract::Request;
use axum::handler::Handler;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, Route as AxumRoute, on};
use tower::{Layer, Service};

use crate::context::AppContext;

/// One path of a controller and what answers it.
pub(crate) struct Route {
    /// The methods it answers (`*`: any, or not known).
    pub(crate) methods: Vec<String>,
    pub(crate) path: String,
    pub(crate) router: MethodRouter<AppContext>,
}

/// A path prefix and its routes.
///
/// ```
/// use axum::routing::get;
/// use ringmaster_worker::Controller;
///
/// async fn list() -> &'static str { "[]" }
/// async fn create() -> &'static str { "created" }
/// async fn show() -> &'static str { "{}" }
///
/// let links = Controller::new("/")
///     .get("/", list)
///     .nest("/links", Controller::new("/").post("/", create).route("/{code}", get(show)));
/// assert_eq!(links.paths()[2], ("GET".to_string(), "/links/{code}".to_string()));
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
    /// The HTTP method (`*` for a [`Controller::route`] whose methods are
    /// not known, such as `any`).
    pub method: String,
    /// The full path, prefix included (axum syntax: `/l/{code}`).
    pub path: String,
    /// The module that defines it.
    pub module: String,
}

macro_rules! method {
    ($(#[$doc:meta])* $name:ident, $method:literal, $filter:ident) => {
        $(#[$doc])*
        pub fn $name<H, T>(self, path: &str, handler: H) -> Self
        where
            H: Handler<T, AppContext>,
            T: 'static,
        {
            self.add(vec![$method.to_string()], path, on(MethodFilter::$filter, handler))
        }
    };
}

impl Controller {
    /// A controller whose routes live under `prefix` (`"/"` for none).
    pub fn new(prefix: &str) -> Self {
        Controller {
            prefix: normalize_prefix(prefix),
            routes: Vec::new(),
        }
    }

    method!(
        /// Adds a GET route at `path`, relative to the prefix.
        get, "GET", GET
    );
    method!(
        /// Adds a POST route.
        post, "POST", POST
    );
    method!(
        /// Adds a PUT route.
        put, "PUT", PUT
    );
    method!(
        /// Adds a PATCH route.
        patch, "PATCH", PATCH
    );
    method!(
        /// Adds a DELETE route.
        delete, "DELETE", DELETE
    );

    /// Adds an axum [`MethodRouter`] at `path` (`get(a).post(b)`, `any(c)`,
    /// a service with `get_service`).
    pub fn route(self, path: &str, router: MethodRouter<AppContext>) -> Self {
        let methods = methods_of(&router);
        self.add(methods, path, router)
    }

    /// Adds every route of `other` under `prefix`, itself under this
    /// controller's prefix.
    pub fn nest(mut self, prefix: &str, other: Controller) -> Self {
        let prefix = join(&self.prefix, &normalize_prefix(prefix));
        for mut route in other.routes {
            route.path = join(&prefix, &route.path);
            self.routes.push(route);
        }
        self
    }

    /// Adds every route of `other` as it is (its own prefix, not this one).
    pub fn merge(mut self, other: Controller) -> Self {
        self.routes.extend(other.routes);
        self
    }

    /// Wraps every route added so far in a tower layer (an auth check, a
    /// timeout); routes added afterwards are not wrapped.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<AxumRoute> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        for route in &mut self.routes {
            let router = std::mem::take(&mut route.router);
            route.router = router.layer(layer.clone());
        }
        self
    }

    fn add(mut self, methods: Vec<String>, path: &str, router: MethodRouter<AppContext>) -> Self {
        let path = join(&self.prefix, path);
        self.routes.push(Route {
            methods,
            path,
            router,
        });
        self
    }

    /// The routes as `(method, full path)` pairs.
    pub fn paths(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .flat_map(|r| r.methods.iter().map(|m| (m.clone(), r.path.clone())))
            .collect()
    }
}

/// `"/links/"` and `"links"` are `"/links"`; `"/"` and `""` are `""`.
fn normalize_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        String::new()
    } else {
        format!("/{prefix}")
    }
}

/// A path under a prefix: `("/links", "/")` is `/links`, `("", "")` is `/`.
fn join(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        ("", "") => "/".to_string(),
        (prefix, "/" | "") if !prefix.is_empty() => prefix.to_string(),
        ("", p) if p.starts_with('/') => p.to_string(),
        (prefix, p) if p.starts_with('/') => format!("{prefix}{p}"),
        (prefix, p) => format!("{prefix}/{p}"),
    }
}

/// The methods a [`MethodRouter`] answers, read from its `Debug` output
/// (axum has no accessor); `["*"]` when none is named (`any`, or a
/// future axum that prints it otherwise: a unit test pins the format).
fn methods_of(router: &MethodRouter<AppContext>) -> Vec<String> {
    const FIELDS: [(&str, &str); 9] = [
        ("get: ", "GET"),
        ("head: ", "HEAD"),
        ("delete: ", "DELETE"),
        ("options: ", "OPTIONS"),
        ("patch: ", "PATCH"),
        ("post: ", "POST"),
        ("put: ", "PUT"),
        ("trace: ", "TRACE"),
        ("connect: ", "CONNECT"),
    ];
    let text = format!("{router:?}");
    let methods: Vec<String> = FIELDS
        .iter()
        .filter(|(field, _)| {
            text.find(field)
                .is_some_and(|at| !text[at + field.len()..].starts_with("None"))
        })
        .map(|(_, method)| method.to_string())
        .collect();
    if methods.is_empty() {
        vec!["*".to_string()]
    } else {
        methods
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{any, get, post};

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

    #[test]
    fn nest_merge_and_route_keep_the_table_exact() {
        let c = Controller::new("/api")
            .route("/a", get(ok).post(ok))
            .nest("v1/", Controller::new("/x").get("/", ok).get("/y", ok))
            .merge(Controller::new("/other").route("/any", any(ok)))
            .route("/p", post(ok));
        assert_eq!(
            c.paths(),
            [
                ("GET".into(), "/api/a".into()),
                ("POST".into(), "/api/a".into()),
                ("GET".into(), "/api/v1/x".into()),
                ("GET".into(), "/api/v1/x/y".into()),
                ("*".into(), "/other/any".into()),
                ("POST".into(), "/api/p".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_layer_wraps_the_routes_before_it_only() {
        use tower::ServiceExt;
        let header = axum::http::HeaderName::from_static("x-layered");
        let tag = axum::middleware::map_response(|mut r: axum::response::Response| async move {
            r.headers_mut()
                .insert("x-layered", axum::http::HeaderValue::from_static("1"));
            r
        });
        let c = Controller::new("/")
            .get("/in", ok)
            .layer(tag)
            .get("/out", ok);
        let mut app = axum::Router::new();
        for r in c.routes {
            app = app.route(&r.path, r.router);
        }
        let ctx = crate::context::AppContext::for_tests();
        let app = app.with_state(ctx);
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
            }
        };
        assert!(call("/in").await.headers().contains_key(&header));
        assert!(!call("/out").await.headers().contains_key(&header));
    }
}
