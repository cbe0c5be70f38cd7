//! Views: minijinja templates of every module.
//!
//! Templates are embedded in the binary by default ([`templates!`] embeds
//! files of the crate's `templates/` directory and remembers where they
//! are). With `server.dev = true` they are read from each module's template
//! directory at every render, so an edit shows on the next request; a
//! module without a directory is named at boot. Templates named `*.html`
//! are HTML-escaped automatically.

use std::sync::Arc;

use axum::response::Html;
use minijinja::Environment;
use serde::Serialize;

use crate::error::AppError;

/// A module's templates: `(name, source)` pairs embedded in the binary and,
/// for development, the directory they come from.
///
/// ```
/// use ringmaster_worker::Templates;
/// let t = Templates::embedded(&[("links/index.html", "<p>{{ count }} links</p>")])
///     .dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Templates {
    embedded: Vec<(&'static str, &'static str)>,
    dir: Option<&'static str>,
}

impl Templates {
    /// No templates.
    pub fn none() -> Self {
        Templates::default()
    }

    /// Templates compiled into the binary (use `include_str!`).
    pub fn embedded(list: &[(&'static str, &'static str)]) -> Self {
        Templates {
            embedded: list.to_vec(),
            dir: None,
        }
    }

    /// The directory that holds the same templates, read in dev mode.
    pub fn dir(mut self, dir: &'static str) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Whether any template is embedded.
    pub(crate) fn has_embedded(&self) -> bool {
        !self.embedded.is_empty()
    }

    /// Whether a directory is known for dev mode.
    pub(crate) fn has_dir(&self) -> bool {
        self.dir.is_some()
    }
}

/// A module's templates from its crate's `templates/` directory: each file
/// named is embedded in the binary (`include_str!`), and with `server.dev =
/// true` read from that directory at every render, so an edit shows on the
/// next request. Names are paths below `templates/`.
///
/// ```
/// use ringmaster_worker::{Controller, Module, Templates};
///
/// struct Hello;
///
/// impl Module for Hello {
///     fn routes(&self) -> Controller {
///         Controller::new("/")
///     }
///     fn templates(&self) -> Templates {
///         // This crate's templates/example/hello.html.
///         ringmaster_worker::templates!["example/hello.html"]
///     }
/// }
/// ```
#[macro_export]
macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        $crate::Templates::embedded(&[$(
            ($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $name))),
        )*])
        .dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
    };
}

/// Every module's templates, ready to render.
#[derive(Clone)]
pub struct Views {
    inner: Arc<ViewsInner>,
}

struct ViewsInner {
    /// The environment with every embedded template (production).
    env: Environment<'static>,
    /// In dev mode: the directories to read templates from at each render.
    dev_dirs: Option<Vec<&'static str>>,
    /// Every embedded template, the fallback of dev mode.
    embedded: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("dev", &self.inner.dev_dirs.is_some())
            .finish()
    }
}

impl Views {
    /// Builds the views from every module's templates. Embedded templates
    /// are compiled now, so a syntax error fails the boot.
    pub fn new(templates: &[Templates], dev: bool) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for t in templates {
            for (name, source) in &t.embedded {
                env.add_template(name, source)?;
            }
        }
        let dev_dirs = dev.then(|| templates.iter().filter_map(|t| t.dir).collect());
        let embedded = templates
            .iter()
            .flat_map(|t| t.embedded.iter().copied())
            .collect();
        Ok(Views {
            inner: Arc::new(ViewsInner {
                env,
                dev_dirs,
                embedded,
            }),
        })
    }

    /// Renders template `name` with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<Html<String>, AppError> {
        let render = |env: &Environment<'_>| {
            env.get_template(name)
                .and_then(|t| t.render(minijinja::value::Serde(&context)))
                .map(Html)
                .map_err(|e| AppError::internal(format!("template {name}: {e:#}")))
        };
        match &self.inner.dev_dirs {
            None => render(&self.inner.env),
            Some(dirs) => {
                let dirs = dirs.clone();
                let embedded = self.inner.embedded.clone();
                let mut env = Environment::new();
                env.set_loader(move |name| {
                    for dir in &dirs {
                        let path = std::path::Path::new(dir).join(name);
                        if let Ok(source) = std::fs::read_to_string(&path) {
                            return Ok(Some(source));
                        }
                    }
                    // A template whose module has no directory: as embedded.
                    Ok(embedded
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, source)| source.to_string()))
                });
                render(&env)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_embedded_templates_with_html_escaping() {
        let views = Views::new(
            &[Templates::embedded(&[("a.html", "<b>{{ x }}</b>")])],
            false,
        )
        .unwrap();
        let html = views
            .render("a.html", minijinja::context! { x => "<script>" })
            .unwrap();
        assert_eq!(html.0, "<b>&lt;script&gt;</b>");
    }

    #[test]
    fn a_syntax_error_fails_at_build() {
        assert!(Views::new(&[Templates::embedded(&[("b.html", "{% if %}")])], false).is_err());
    }

    #[test]
    fn dev_mode_reads_the_directory_at_each_render() {
        let dir = std::env::temp_dir().join(format!("ringmaster-views-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.html"), "one").unwrap();
        let leaked: &'static str = Box::leak(dir.to_string_lossy().into_owned().into_boxed_str());
        let views = Views::new(
            &[Templates::embedded(&[("c.html", "embedded")]).dir(leaked)],
            true,
        )
        .unwrap();
        assert_eq!(views.render("c.html", ()).unwrap().0, "one");
        std::fs::write(dir.join("c.html"), "two").unwrap();
        assert_eq!(views.render("c.html", ()).unwrap().0, "two");
        let _ = std::fs::remove_dir_all(&dir);
        // Embedded templates without a directory still render in dev mode.
        let views = Views::new(&[Templates::embedded(&[("d.html", "embedded")])], true).unwrap();
        assert_eq!(views.render("d.html", ()).unwrap().0, "embedded");
    }
}
