//! [`StoreSpec`]: one configured place for artifacts, parsed from its URL once (config
//! time), and [`StoreOptions`], the provider settings object stores are built with.

use super::super::CheckpointError;
use object_store::ObjectStore;
use object_store::path::Path as Key;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Environment variable prefixes whose values configure object stores, as `object_store`'s
/// `from_env` builders read them (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, …).
pub const OPTION_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// Provider settings (endpoint, credentials, region) for the object stores, as
/// `(lowercased name, value)` pairs. Values may be secrets: `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreOptions(Vec<(String, String)>);

impl StoreOptions {
    /// The pairs among `vars` whose names start with one of [`OPTION_PREFIXES`] (the
    /// config reads them from the environment; tests pass their own).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut pairs: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| OPTION_PREFIXES.iter().any(|p| k.to_ascii_uppercase().starts_with(p)))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        pairs.sort();
        Self(pairs)
    }

    /// The pairs for one provider's builder (`aws_*` for s3://, …).
    fn for_scheme(&self, scheme: &str) -> impl Iterator<Item = (&str, &str)> {
        let prefix = match scheme {
            "s3" | "s3a" => "aws_",
            "gs" => "google_",
            _ => "azure_",
        };
        self.0.iter().filter(move |(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

/// URL schemes of object stores this build can open.
pub const OBJECT_SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl"];

/// One configured place for artifacts.
#[derive(Clone)]
pub struct StoreSpec(pub(super) Target);

#[derive(Clone)]
pub(super) enum Target {
    /// A directory on this machine (absolute), opened at start-up.
    Dir(PathBuf),
    /// A bucket (or container): its client, the URL its locations start with
    /// (`s3://bucket`), and the key prefix artifacts go under.
    Bucket { store: Arc<dyn ObjectStore>, base: String, prefix: Key },
}

impl StoreSpec {
    /// A directory (relative paths are taken from the working directory now, so that the
    /// locations recorded do not depend on where a later process starts).
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self(Target::Dir(std::path::absolute(&path).unwrap_or(path)))
    }

    /// An object store built elsewhere (tests: `object_store::memory::InMemory`), whose
    /// locations are `<base>/<key>`; `base` is `scheme://name` without a trailing slash.
    pub fn bucket(store: Arc<dyn ObjectStore>, base: &str, prefix: &str) -> Self {
        Self(Target::Bucket { store, base: base.trim_end_matches('/').to_string(), prefix: Key::from(prefix) })
    }

    /// Parses a configured store: `file:///PATH` (a directory), or `s3://BUCKET[/PREFIX]`
    /// (and `gs://`, `az://`…) built with `options`. No request is sent: a bucket that does
    /// not exist is found at the first write.
    ///
    /// # Errors
    /// [`CheckpointError::StoreUrl`]: a malformed URL, an unsupported scheme, credentials in
    /// the URL, or a builder refusing the settings.
    pub fn parse(text: &str, options: &StoreOptions) -> Result<Self, CheckpointError> {
        // Errors show the URL without a password (which is refused below).
        let shown = match url::Url::parse(text) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => text.to_string(),
        };
        let bad = |reason: String| CheckpointError::StoreUrl { url: shown.clone(), reason };
        if !text.contains("://") {
            return Err(bad("is not a URL: use file:///PATH or s3://BUCKET/PREFIX (gs://, az://)".into()));
        }
        let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if url.password().is_some() {
            return Err(bad("carries credentials; give them in the environment (AWS_ACCESS_KEY_ID, …)".into()));
        }
        let scheme = url.scheme();
        if scheme == "file" {
            if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(bad("a file URL names this machine's paths only: file:///PATH".into()));
            }
            let path = url.to_file_path().map_err(|()| bad("is not an absolute path".into()))?;
            return Ok(Self::dir(path));
        }
        if !OBJECT_SCHEMES.contains(&scheme) {
            return Err(bad(format!(
                "unsupported scheme {scheme:?}: use file://, s3://, gs:// or az:// (abfs://, abfss://, adl://)"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("names no bucket".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment".into()));
        }
        let (store, prefix) =
            object_store::parse_url_opts(&url, options.for_scheme(scheme)).map_err(|e| bad(e.to_string()))?;
        Ok(Self(Target::Bucket { store: Arc::from(store), base: base_of(&url), prefix }))
    }

    /// The URL or directory, for logs and errors.
    pub fn describe(&self) -> String {
        match &self.0 {
            Target::Dir(root) => root.display().to_string(),
            Target::Bucket { base, prefix, .. } if prefix.as_ref().is_empty() => base.clone(),
            Target::Bucket { base, prefix, .. } => format!("{base}/{prefix}"),
        }
    }

    /// The directory, for a directory store.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match &self.0 {
            Target::Dir(root) => Some(root),
            Target::Bucket { .. } => None,
        }
    }
}

/// What every location in a bucket starts with: `scheme://[container@]bucket`.
pub(super) fn base_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.username() {
        "" => format!("{}://{host}", url.scheme()),
        user => format!("{}://{user}@{host}", url.scheme()),
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreSpec({})", self.describe())
    }
}

impl PartialEq for StoreSpec {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> StoreOptions {
        StoreOptions::from_vars([
            ("AWS_ENDPOINT_URL".to_string(), "http://127.0.0.1:9".to_string()),
            ("AWS_ACCESS_KEY_ID".to_string(), "id".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "hunter2".to_string()),
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
            ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ])
    }

    #[test]
    fn urls_parse_into_directories_and_buckets() {
        let o = options();
        assert!(!format!("{o:?}").contains("hunter2"), "{o:?}");
        assert!(!format!("{o:?}").contains("home"), "only provider settings are kept: {o:?}");
        assert_eq!(
            StoreSpec::parse("file:///var/lib/fedra/artifacts", &o).unwrap().describe(),
            "/var/lib/fedra/artifacts"
        );
        assert_eq!(StoreSpec::parse("file:///srv/a", &o).unwrap().local_dir(), Some(std::path::Path::new("/srv/a")));
        let s3 = StoreSpec::parse("s3://fedra-eu/checkpoints", &o).unwrap();
        assert_eq!(s3.describe(), "s3://fedra-eu/checkpoints");
        assert_eq!(s3.local_dir(), None);
        assert_eq!(StoreSpec::parse("s3://fedra-us", &o).unwrap().describe(), "s3://fedra-us");
        for (bad, why) in [
            ("ftp://host/x", "unsupported scheme"),
            ("s3://", "names no bucket"),
            ("s3://id:secret@bucket/x", "credentials"),
            ("file://elsewhere/x", "this machine's paths"),
            ("s3://b/x?versionId=1", "query"),
            ("", "is not a URL"),
            ("/srv/a", "is not a URL"),
        ] {
            let e = StoreSpec::parse(bad, &o).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
