//! The typed names of backends, declared once as constants by the modules
//! that use them: [`SqlBackend`], [`RedisBackend`], and [`Backend`], either
//! one, as a module's `backends()` lists them. The worker checks at boot
//! that each configured URL is of the declared kind.

use ringmaster_config::BackendKind;

/// The name of an SQL backend (SQLite or PostgreSQL), declared once as a
/// constant and used everywhere else: in [`Module::backends`] and in
/// [`AppContext::db`].
///
/// ```
/// use ringmaster_worker::SqlBackend;
/// pub const MAIN: SqlBackend = SqlBackend::new("main");
/// ```
///
/// [`Module::backends`]: crate::Module::backends
/// [`AppContext::db`]: crate::AppContext::db
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlBackend(&'static str);

impl SqlBackend {
    /// The backend `[backends.NAME]` (or, with no such section, the
    /// embedded SQLite file `NAME.db`).
    pub const fn new(name: &'static str) -> Self {
        SqlBackend(name)
    }

    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.0
    }
}

/// The name of a Redis backend, declared once as a constant.
///
/// ```
/// use ringmaster_worker::RedisBackend;
/// pub const CACHE: RedisBackend = RedisBackend::new("cache");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RedisBackend(&'static str);

impl RedisBackend {
    /// The backend `[backends.NAME]`, whose URL is `redis://...`.
    pub const fn new(name: &'static str) -> Self {
        RedisBackend(name)
    }

    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.0
    }
}

/// A backend a module declares: `MAIN.into()` from a [`SqlBackend`] or a
/// [`RedisBackend`]. The worker checks at boot that the configured URL is
/// of the declared kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// An SQL backend.
    Sql(SqlBackend),
    /// A Redis backend.
    Redis(RedisBackend),
}

impl Backend {
    /// The backend's name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sql(b) => b.name(),
            Backend::Redis(b) => b.name(),
        }
    }

    /// Whether `kind` (from the configured URL) is what this declares.
    pub(crate) fn accepts(&self, kind: BackendKind) -> bool {
        match self {
            Backend::Sql(_) => matches!(kind, BackendKind::Sqlite | BackendKind::Postgres),
            Backend::Redis(_) => kind == BackendKind::Redis,
        }
    }

    /// `"an SQL"` or `"a Redis"`, for messages.
    pub(crate) fn kind_phrase(&self) -> &'static str {
        match self {
            Backend::Sql(_) => "an SQL (SqlBackend)",
            Backend::Redis(_) => "a Redis (RedisBackend)",
        }
    }
}

impl From<SqlBackend> for Backend {
    fn from(b: SqlBackend) -> Self {
        Backend::Sql(b)
    }
}

impl From<RedisBackend> for Backend {
    fn from(b: RedisBackend) -> Self {
        Backend::Redis(b)
    }
}
