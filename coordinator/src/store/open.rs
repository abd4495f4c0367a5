//! Which store a coordinator opens: the `store_url` setting, parsed once (at config
//! validation) into a [`StoreLocation`], and opened as an [`OpenStore`] that `launch`
//! shares as `Arc<dyn Store>` and closes on shutdown.

use super::{PgStore, SqliteStore, Store, StoreError};
use sqlx::postgres::PgConnectOptions;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Where the store lives, as `store_url` names it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StoreLocation {
    /// A SQLite file (`sqlite://PATH`), created on first start. The default is
    /// `<data_dir>/fedra.db`.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`).
    Postgres(PgUrl),
}

/// A PostgreSQL connection URL that sqlx parses. Its password never shows in `Debug` or
/// `Display` (logs, errors).
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

/// `url` with the password of its user info (`user:password@`) replaced by `***`.
pub(super) fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

impl StoreLocation {
    /// The default: `fedra.db` in the data directory (what every coordinator used before
    /// `store_url` existed).
    pub fn default_in(data_dir: &Path) -> Self {
        Self::Sqlite(data_dir.join("fedra.db"))
    }

    /// Parses a `store_url` value: `sqlite://PATH` (relative to the working directory, or
    /// absolute as `sqlite:///var/lib/fedra/fedra.db`) or a PostgreSQL URL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]`, as libpq and sqlx read it).
    ///
    /// # Errors
    /// Another scheme, an empty path, or a PostgreSQL URL that does not parse; the message
    /// names the value (without its password) and what is accepted.
    pub fn parse(url: &str) -> Result<Self, String> {
        const ACCEPTED: &str = "use sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE";
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path.contains('?') {
                return Err(format!("{url:?} names no SQLite file (parameters are not accepted): {ACCEPTED}"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        let shown = redacted(url);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return match PgConnectOptions::from_str(url) {
                Ok(_) => Ok(Self::Postgres(PgUrl(url.to_string()))),
                Err(e) => Err(format!("{shown:?} is not a PostgreSQL URL ({e}): {ACCEPTED}")),
            };
        }
        Err(format!("{shown:?} is not a store URL: {ACCEPTED}"))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => url.fmt(f),
        }
    }
}

/// An opened store of either backend.
#[derive(Clone, Debug)]
pub enum OpenStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl OpenStore {
    /// Opens the store at `location`, bringing its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Open`] when it cannot be reached or opened, [`StoreError::Migration`]
    /// when its schema cannot be migrated.
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Ok(match location {
            StoreLocation::Sqlite(path) => Self::Sqlite(SqliteStore::open(path).await?),
            StoreLocation::Postgres(url) => Self::Postgres(PgStore::open(url).await?),
        })
    }

    /// The store, to share with the engine and the services.
    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// Closes its connections (on shutdown).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_into_a_backend_or_say_what_is_accepted() {
        assert_eq!(StoreLocation::parse("sqlite://data/f.db").unwrap(), StoreLocation::Sqlite("data/f.db".into()));
        assert_eq!(StoreLocation::parse("sqlite:///var/f.db").unwrap(), StoreLocation::Sqlite("/var/f.db".into()));
        let pg = StoreLocation::parse("postgres://fedra:s3cret@db.example:5433/fedra").unwrap();
        let StoreLocation::Postgres(url) = &pg else { panic!("{pg:?}") };
        assert_eq!(url.expose(), "postgres://fedra:s3cret@db.example:5433/fedra");
        assert_eq!(pg.to_string(), "postgres://fedra:***@db.example:5433/fedra");
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(matches!(StoreLocation::parse("postgresql://db/fedra"), Ok(StoreLocation::Postgres(_))));
        for bad in
            ["mysql://u:pw@h/db", "fedra.db", "", "sqlite://", "sqlite://f.db?mode=ro", "postgres://u:pw@h:port/db"]
        {
            let e = StoreLocation::parse(bad).unwrap_err();
            assert!(e.contains("use sqlite://PATH or postgres://"), "{bad}: {e}");
            assert!(!e.contains("pw@"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_the_password_is_redacted() {
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redacted("postgres://u:p@ss@h/db?x=1"), "postgres://u:***@h/db?x=1");
        assert_eq!(redacted("postgres://h/db"), "postgres://h/db");
    }
}
