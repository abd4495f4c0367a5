//! Who may look at what: the dashboard's authentication and the same authorization table
//! as the gRPC API ([`crate::grpc::auth::access`], narrowed by the policy set's `[roles]`).
//!
//! A visitor proves itself with the bearer token of `[web] token_file`, sent as
//! `Authorization: Bearer <token>`, in the `fedra_dashboard` cookie, or once as
//! `?token=<token>` (which sets the cookie). It is then checked as a caller of role
//! `[web] token_role`. Tokens are compared through their SHA-256 digests in constant time,
//! so neither the content nor the length of the real token leaks through timing. Without a
//! token configured (only allowed with an `--insecure` API on loopback) everyone is
//! [`Viewer::Open`], as every gRPC caller is then.
//!
//! Every refusal is a [`Refusal`] with a status (401: who are you; 403: not for your role)
//! and a one-line reason naming what to change.

use crate::config::web::WebConfig;
use crate::governance::Snapshot;
use crate::grpc::auth::{Access, Rpc, access};
use fedra_policy::Action;
use fedra_types::identity::Identity;
use sha2::{Digest, Sha256};

/// The cookie a `?token=` visit sets.
pub const COOKIE: &str = "fedra_dashboard";

/// The name a token holder acts under, with the configured role.
pub const TOKEN_HOLDER: &str = "dashboard";

/// Who is looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No token is configured (`--insecure` API on loopback): everything is visible.
    Open,
    /// A token holder, checked as `identity`'s role.
    Holder(Identity),
}

/// What the dashboard shows, each guarded by the RPC that reads the same data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Runs, rounds, charts, costs (`ListRuns`/`GetRun`); also the policy's data flows, which
    /// say where the runs' data may go.
    Runs,
    /// Budgets per scope (`PrivacyStatus`).
    Privacy,
    /// The regional registry and provenance (`ListModels`).
    Checkpoints,
    /// The audit log (`ListAudit`, and the policy's `read_audit` grant).
    Audit,
    /// Prometheus metrics: any admitted viewer.
    Metrics,
}

impl Section {
    fn rpc(self) -> Option<Rpc> {
        match self {
            Self::Runs => Some(Rpc::ListRuns),
            Self::Privacy => Some(Rpc::PrivacyStatus),
            Self::Checkpoints => Some(Rpc::ListModels),
            Self::Audit => Some(Rpc::ListAudit),
            Self::Metrics => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::Privacy => "privacy budgets",
            Self::Checkpoints => "checkpoints",
            Self::Audit => "the audit log",
            Self::Metrics => "metrics",
        }
    }
}

/// A refused request: the HTTP status (401 or 403) and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn unauthenticated(reason: impl Into<String>) -> Self {
        Self { status: 401, reason: reason.into() }
    }

    fn forbidden(reason: impl Into<String>) -> Self {
        Self { status: 403, reason: reason.into() }
    }
}

/// What a request presented: the raw header and query values, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub query: Option<&'a str>,
}

/// How a request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub viewer: Viewer,
    /// The token came as `?token=`: set the cookie and drop the token from the address.
    pub set_cookie: bool,
}

/// Authenticates dashboard requests against `[web]`.
#[derive(Debug, Clone)]
pub struct Doorman {
    /// The token's digest and the identity its holder acts as; `None`: open dashboard.
    token: Option<([u8; 32], Identity)>,
}

impl Doorman {
    /// The doorman of `config`: its token holders act as [`TOKEN_HOLDER`] with the
    /// configured role (validated as one without a region).
    pub fn new(config: &WebConfig) -> Self {
        let token = config.token.as_ref().map(|t| {
            let identity = Identity::new(config.token_role, None, TOKEN_HOLDER).expect("a non-regional role");
            (digest(t.expose()), identity)
        });
        Self { token }
    }

    /// Who sent a request, from its bearer header, cookie or `?token=` (first found wins).
    ///
    /// # Errors
    /// 401 without a token or with a wrong one, naming how to send it.
    pub fn admit(&self, presented: Presented<'_>) -> Result<Admitted, Refusal> {
        let Some((expected, identity)) = &self.token else {
            return Ok(Admitted { viewer: Viewer::Open, set_cookie: false });
        };
        let bearer = match presented.authorization {
            None => None,
            Some(value) => Some(value.strip_prefix("Bearer ").ok_or_else(|| {
                Refusal::unauthenticated(
                    "the Authorization header must be \"Bearer <token>\" (the token of [web] token_file)",
                )
            })?),
        };
        let from_query = query_token(presented.query);
        let (sent, set_cookie) = match (bearer, from_query, cookie_token(presented.cookie)) {
            (Some(t), _, _) => (t, false),
            (None, Some(t), _) => (t, true),
            (None, None, Some(t)) => (t, false),
            (None, None, None) => {
                return Err(Refusal::unauthenticated(
                    "no token: send \"Authorization: Bearer <token>\" or open this page once with ?token=<token> (the token of [web] token_file)",
                ));
            }
        };
        if !same(&digest(sent), expected) {
            return Err(Refusal::unauthenticated("the token does not match the coordinator's [web] token_file"));
        }
        Ok(Admitted { viewer: Viewer::Holder(identity.clone()), set_cookie })
    }
}

/// What `viewer` may see of `section`, as the API's table and the policy's `[roles]` decide.
///
/// # Errors
/// 403 naming the role and what it may not see.
pub fn authorize(viewer: &Viewer, section: Section, policy: Option<&Snapshot>) -> Result<Access, Refusal> {
    let Viewer::Holder(identity) = viewer else { return Ok(Access::Full) };
    let role = identity.role();
    let granted = match section.rpc() {
        None => Access::Full,
        Some(rpc) => access(role, rpc),
    };
    if granted == Access::Denied {
        return Err(Refusal::forbidden(format!(
            "role {role} may not see {} (the API refuses it {:?}); set [web] token_role to a role that may",
            section.describe(),
            section.rpc().expect("only sections with an RPC are denied")
        )));
    }
    if section == Section::Audit
        && let Some(policy) = policy
    {
        policy.set.role_may(role, Action::ReadAudit).map_err(|refusal| Refusal::forbidden(refusal.to_string()))?;
    }
    Ok(granted)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Equal digests, in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

fn cookie_token(cookie: Option<&str>) -> Option<&str> {
    cookie?.split(';').map(str::trim).find_map(|c| c.strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value that keeps `token` for this dashboard (never sent to scripts or
/// other sites).
pub fn cookie_for(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

/// The query string without its `token=` pair (`None` when nothing is left).
pub fn without_token(query: &str) -> Option<String> {
    let rest: Vec<&str> = query.split('&').filter(|p| !p.starts_with("token=") && !p.is_empty()).collect();
    (!rest.is_empty()).then(|| rest.join("&"))
}

/// The token a `?token=` request carried (to put it in the cookie).
pub fn token_in_query(query: Option<&str>) -> Option<&str> {
    query_token(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::web::Token;
    use fedra_types::identity::Role;

    /// A loopback `[web]` with this token and role.
    pub(crate) fn config(token: Option<&str>, role: Role) -> WebConfig {
        WebConfig {
            listen: "127.0.0.1:0".parse().expect("valid"),
            token: token.map(|t| Token::new(t).expect("valid token")),
            token_role: role,
        }
    }

    const TOKEN: &str = "s3cret-s3cret-s3cret-s3cret";

    fn doorman(role: Role) -> Doorman {
        Doorman::new(&config(Some(TOKEN), role))
    }

    #[test]
    fn a_missing_or_wrong_token_is_refused_with_401_saying_how_to_send_one() {
        let d = doorman(Role::Compliance);
        let e = d.admit(Presented::default()).unwrap_err();
        assert_eq!(e.status, 401);
        assert!(e.reason.starts_with("no token: send \"Authorization: Bearer <token>\""), "{}", e.reason);
        let wrong = Presented { authorization: Some("Bearer s3cret-s3cret-s3cret-s3creT"), ..Default::default() };
        let e = d.admit(wrong).unwrap_err();
        assert_eq!((e.status, e.reason.as_str()), (401, "the token does not match the coordinator's [web] token_file"));
        let basic = Presented { authorization: Some("Basic YTpi"), ..Default::default() };
        assert!(d.admit(basic).unwrap_err().reason.contains("must be \"Bearer <token>\""));
        // A wrong header is not rescued by a right cookie: the header was meant.
        let both = Presented { authorization: Some("Bearer nope"), cookie: Some(&cookie_for(TOKEN)), query: None };
        assert_eq!(d.admit(both).unwrap_err().status, 401);
    }

    #[test]
    fn the_token_is_accepted_from_header_cookie_or_query_and_the_query_sets_the_cookie() {
        let d = doorman(Role::Compliance);
        let holder = Viewer::Holder(Identity::new(Role::Compliance, None, TOKEN_HOLDER).unwrap());
        let header = format!("Bearer {TOKEN}");
        let ok = d.admit(Presented { authorization: Some(&header), ..Default::default() }).unwrap();
        assert_eq!(ok, Admitted { viewer: holder.clone(), set_cookie: false });
        let cookie = format!("theme=dark; {}", cookie_for(TOKEN));
        let ok = d.admit(Presented { cookie: Some(&cookie), ..Default::default() }).unwrap();
        assert_eq!(ok, Admitted { viewer: holder.clone(), set_cookie: false });
        let query = format!("page=2&token={TOKEN}");
        let ok = d.admit(Presented { query: Some(&query), ..Default::default() }).unwrap();
        assert_eq!(ok, Admitted { viewer: holder, set_cookie: true });
        assert_eq!(without_token(&query).as_deref(), Some("page=2"));
        assert_eq!(without_token(&format!("token={TOKEN}")), None);
    }

    #[test]
    fn without_a_token_configured_the_dashboard_is_open() {
        let d = Doorman::new(&config(None, Role::Compliance));
        assert_eq!(d.admit(Presented::default()).unwrap().viewer, Viewer::Open);
        assert_eq!(authorize(&Viewer::Open, Section::Audit, None), Ok(Access::Full));
    }

    #[test]
    fn roles_see_what_the_api_lets_them_see() {
        let viewer = |role| Viewer::Holder(Identity::new(role, None, TOKEN_HOLDER).unwrap());
        let e = authorize(&viewer(Role::Scientist), Section::Audit, None).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.reason.starts_with("role scientist may not see the audit log"), "{}", e.reason);
        assert_eq!(authorize(&viewer(Role::Scientist), Section::Runs, None), Ok(Access::Own));
        assert_eq!(authorize(&viewer(Role::Scientist), Section::Privacy, None), Ok(Access::Summary));
        assert_eq!(authorize(&viewer(Role::Compliance), Section::Audit, None), Ok(Access::Full));
        assert_eq!(authorize(&viewer(Role::Approver), Section::Checkpoints, None), Ok(Access::Full));
        let e = authorize(&viewer(Role::Approver), Section::Privacy, None).map(drop);
        assert_eq!(e, Ok(()), "approvers see budgets as a summary");
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        assert!(same(&digest("a"), &digest("a")));
        assert!(!same(&digest("a"), &digest("b")));
    }
}
