//! [`ArtifactLocation`]: where one stored artifact lies, as the store records it
//! (`checkpoint_locations.path`). A directory store's artifacts are named by their
//! filesystem path, exactly as before object storage existed (so rows written by older
//! versions still resolve); an object store's by a URL, `s3://bucket/key`. The store never
//! interprets the text; [`super::ArtifactStore::resolve`] does.

use std::fmt;
use std::path::{Path, PathBuf};

/// A filesystem path or an object URL naming one artifact (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactLocation(String);

impl ArtifactLocation {
    /// Wraps a location as recorded; nothing is checked until it is resolved.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL scheme (`s3`, `file`, …) when the location is a URL, `None` for a path.
    pub fn scheme(&self) -> Option<&str> {
        let (scheme, _) = self.0.split_once("://")?;
        let mut chars = scheme.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        valid.then_some(scheme)
    }

    /// The filesystem path this location names: a path, or a `file://` URL's path; `None`
    /// for an object URL.
    pub fn file_path(&self) -> Option<PathBuf> {
        match self.scheme() {
            None => Some(PathBuf::from(&self.0)),
            Some("file") => url::Url::parse(&self.0).ok()?.to_file_path().ok(),
            Some(_) => None,
        }
    }

    /// The artifact named `name` beside this one (the manifest beside the weights).
    pub fn with_file_name(&self, name: &str) -> Self {
        match self.scheme() {
            None => Self(Path::new(&self.0).with_file_name(name).display().to_string()),
            Some(_) => match self.0.rsplit_once('/') {
                Some((dir, _)) => Self(format!("{dir}/{name}")),
                None => Self(name.to_string()),
            },
        }
    }
}

impl fmt::Display for ArtifactLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PathBuf> for ArtifactLocation {
    fn from(path: PathBuf) -> Self {
        Self(path.display().to_string())
    }
}

impl From<&Path> for ArtifactLocation {
    fn from(path: &Path) -> Self {
        Self(path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_told_apart_and_siblings_named() {
        let path = ArtifactLocation::new("/var/fedra/eu/m/r/round-0001/model.safetensors");
        assert_eq!(path.scheme(), None);
        assert_eq!(path.file_path(), Some(PathBuf::from("/var/fedra/eu/m/r/round-0001/model.safetensors")));
        assert_eq!(path.with_file_name("manifest.json").as_str(), "/var/fedra/eu/m/r/round-0001/manifest.json");
        let relative = ArtifactLocation::new("fedra-data/artifacts/eu/model.safetensors");
        assert_eq!(relative.scheme(), None);
        let s3 = ArtifactLocation::new("s3://fedra-eu/checkpoints/eu/m/r/round-0001/model.safetensors");
        assert_eq!(s3.scheme(), Some("s3"));
        assert_eq!(s3.file_path(), None);
        assert_eq!(
            s3.with_file_name("manifest.sig").as_str(),
            "s3://fedra-eu/checkpoints/eu/m/r/round-0001/manifest.sig"
        );
        let file = ArtifactLocation::new("file:///var/fedra/eu/model.safetensors");
        assert_eq!(file.file_path(), Some(PathBuf::from("/var/fedra/eu/model.safetensors")));
        // A colon in a path is not a scheme.
        assert_eq!(ArtifactLocation::new("/tmp/a://b").scheme(), None);
    }
}
