//! The `[web]` table: the read-only dashboard (`crate::web`). Off unless `listen` is set.
//!
//! Who may look is decided like the gRPC API decides it: with mutual TLS on the API, a
//! dashboard visitor needs the bearer token of `token_file` and is treated as a caller of
//! role `token_role` (default `compliance`); with `--insecure` (loopback only) and no token
//! the dashboard is open, as the API is. The dashboard serves plain HTTP, so it listens only
//! on a loopback address (put a TLS-terminating proxy in front of it to reach it from
//! elsewhere), mirroring how `--insecure` is restricted.

use super::ConfigError;
use fedra_types::identity::Role;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The `[web]` table as written; unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    /// Address the dashboard listens on, e.g. `127.0.0.1:9464` (flag `--web-listen`).
    pub listen: Option<String>,
    /// A file holding the bearer token (one line, at least [`MIN_TOKEN_LEN`] printable
    /// characters without spaces). Required when the API serves mutual TLS.
    pub token_file: Option<PathBuf>,
    /// The role a token holder is checked as: `scientist`, `compliance` (default),
    /// `approver` or `admin`.
    pub token_role: Option<String>,
}

impl RawWeb {
    /// `other`'s fields where set, else these.
    pub fn merge(self, other: RawWeb) -> Self {
        Self {
            listen: other.listen.or(self.listen),
            token_file: other.token_file.or(self.token_file),
            token_role: other.token_role.or(self.token_role),
        }
    }
}

/// Merges two optional `[web]` tables, `theirs` over `mine`.
pub fn merge(mine: Option<RawWeb>, theirs: Option<RawWeb>) -> Option<RawWeb> {
    match (mine, theirs) {
        (Some(m), Some(t)) => Some(m.merge(t)),
        (m, t) => t.or(m),
    }
}

/// The shortest bearer token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 24;

/// A bearer token. Never printed: `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from its text.
    ///
    /// # Errors
    /// Fewer than [`MIN_TOKEN_LEN`] characters, or characters outside visible ASCII.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.len() < MIN_TOKEN_LEN {
            return Err(format!("the token must have at least {MIN_TOKEN_LEN} characters, it has {}", text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token may hold only visible ASCII characters (no spaces)".into());
        }
        Ok(Self(text.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} characters)", self.0.len())
    }
}

/// The validated `[web]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// A loopback address.
    pub listen: SocketAddr,
    /// `None`: no token; only with an `--insecure` API, where the dashboard is open.
    pub token: Option<Token>,
    /// The role a token holder is checked as.
    pub token_role: Role,
}

/// Validates `[web]`; `None` when the dashboard is off (no `listen`).
///
/// # Errors
/// A bad or non-loopback `web.listen`, an unreadable or malformed token file, a role that
/// cannot hold a token, a missing token with mutual TLS, or token settings without `listen`.
pub fn validate(raw: Option<RawWeb>, insecure_api: bool) -> Result<Option<WebConfig>, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid { key: key.into(), message };
    let Some(raw) = raw else { return Ok(None) };
    let Some(listen) = raw.listen else {
        if raw.token_file.is_some() || raw.token_role.is_some() {
            return Err(invalid(
                "web.listen",
                "is required with the other [web] keys: the dashboard is off without it".into(),
            ));
        }
        return Ok(None);
    };
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| invalid("web.listen", format!("{listen:?} is not an address like 127.0.0.1:9464")))?;
    if !listen.ip().is_loopback() {
        return Err(invalid(
            "web.listen",
            format!(
                "the dashboard serves plain HTTP, so only on a loopback address, not on {listen} (put a TLS proxy in front of it)"
            ),
        ));
    }
    let token_role = match raw.token_role.as_deref() {
        None => Role::Compliance,
        Some(text) => match text.parse::<Role>() {
            Ok(role @ (Role::Scientist | Role::Compliance | Role::Approver | Role::Admin)) => role,
            _ => {
                return Err(invalid(
                    "web.token_role",
                    format!("{text:?} is not one of scientist, compliance, approver, admin"),
                ));
            }
        },
    };
    let token = match raw.token_file {
        None if insecure_api => None,
        None => {
            return Err(invalid(
                "web.token_file",
                "is required: the API serves mutual TLS, and the dashboard admits only holders of this token".into(),
            ));
        }
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("web.token_file", format!("cannot read {}: {e}", path.display())))?;
            Some(Token::new(text.trim()).map_err(|e| invalid("web.token_file", format!("{}: {e}", path.display())))?)
        }
    };
    Ok(Some(WebConfig { listen, token, token_role }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Option<RawWeb> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            web: Option<RawWeb>,
        }
        toml::from_str::<File>(text).expect("parses").web
    }

    #[test]
    fn web_is_off_without_listen_and_loopback_only() {
        assert_eq!(validate(None, true).unwrap(), None);
        assert_eq!(validate(raw("[web]\n"), true).unwrap(), None);
        let e = validate(raw("[web]\ntoken_role = \"admin\"\n"), true).unwrap_err().to_string();
        assert!(e.starts_with("web.listen: is required"), "{e}");
        let e = validate(raw("[web]\nlisten = \"0.0.0.0:9464\"\n"), true).unwrap_err().to_string();
        assert!(e.contains("only on a loopback address, not on 0.0.0.0:9464"), "{e}");
        let c = validate(raw("[web]\nlisten = \"127.0.0.1:9464\"\n"), true).unwrap().unwrap();
        assert_eq!((c.listen.port(), c.token, c.token_role), (9464, None, Role::Compliance));
    }

    #[test]
    fn token_is_required_with_mutual_tls_and_checked() {
        let e = validate(raw("[web]\nlisten = \"127.0.0.1:1\"\n"), false).unwrap_err().to_string();
        assert!(e.starts_with("web.token_file: is required"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "short\n").unwrap();
        let text = format!("[web]\nlisten = \"127.0.0.1:1\"\ntoken_file = {:?}\n", file.display().to_string());
        let e = validate(raw(&text), false).unwrap_err().to_string();
        assert!(e.contains("at least 24 characters, it has 5"), "{e}");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let c = validate(raw(&text), false).unwrap().unwrap();
        assert_eq!(c.token.as_ref().map(Token::expose), Some("0123456789abcdef0123456789abcdef"));
        assert!(!format!("{c:?}").contains("0123456789"), "the token is never printed");
        let e = validate(raw(&format!("{text}token_role = \"client\"\n")), false).unwrap_err().to_string();
        assert!(e.starts_with("web.token_role: \"client\" is not one of"), "{e}");
    }

    #[test]
    fn unknown_web_key_is_rejected() {
        let e = toml::from_str::<RawWeb>("listen = \"127.0.0.1:1\"\nport = 3\n").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
    }
}
