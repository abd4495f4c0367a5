//! A throw-away deployment CA for simulations and tests, so that they run the same mutual-TLS
//! path as production: the coordinator serves TLS 1.3 with a `coordinator` certificate for
//! `localhost`/`127.0.0.1`, each sidecar presents a `client` certificate naming its id and
//! region, and control-plane callers present the role they act as.

use anyhow::{Context, Result};
use fedra_pki::provision::{self, CaDir, IssueRequest};
use fedra_pki::{ClientTls, IdentityDir};
use fedra_types::identity::{Identity, Role};
use fedra_types::ids::RegionId;
use std::path::{Path, PathBuf};

/// A CA on disk under `root` and the coordinator's identity directory.
#[derive(Debug, Clone)]
pub struct SimPki {
    root: PathBuf,
    ca: CaDir,
}

impl SimPki {
    /// Creates the CA and the coordinator's identity under `root` (reusing them if `root`
    /// already holds a CA, e.g. after a coordinator restart on the same data directory).
    ///
    /// # Errors
    /// I/O or generation failure.
    pub fn create(root: &Path) -> Result<Self> {
        let ca = CaDir::new(root.join("ca"));
        let me = Self { root: root.to_path_buf(), ca };
        if !me.ca.key().exists() {
            provision::init_ca(&me.ca, "sim", time::Duration::days(2)).context("creating the sim CA")?;
            let coordinator = Identity::new(Role::Coordinator, None, "coordinator")?;
            let req = IssueRequest {
                identity: coordinator,
                dns_names: vec!["localhost".into()],
                ip_addresses: vec!["127.0.0.1".parse().expect("literal")],
                valid_for: time::Duration::days(2),
            };
            provision::issue(&me.ca, &req, &me.coordinator()).context("issuing the coordinator's certificate")?;
        }
        Ok(me)
    }

    pub fn ca(&self) -> &CaDir {
        &self.ca
    }

    /// The coordinator's identity directory.
    pub fn coordinator(&self) -> IdentityDir {
        IdentityDir::new(self.root.join("coordinator"))
    }

    /// The deployment's trusted checkpoint signing keys (what verifiers check manifests with).
    ///
    /// # Errors
    /// A missing or malformed trust file.
    pub fn trust(&self) -> Result<fedra_pki::signing::TrustedKeys> {
        Ok(fedra_pki::signing::TrustedKeys::load(&self.ca.trust())?)
    }

    /// The CA's revocation list, as the coordinator is configured to watch it.
    pub fn crl(&self) -> PathBuf {
        self.ca.crl()
    }

    /// A new certificate for `identity`, valid for `valid_for`, in memory.
    ///
    /// # Errors
    /// Generation failure.
    pub fn issue(&self, identity: &Identity, valid_for: time::Duration) -> Result<(ClientTls, String)> {
        let req = IssueRequest::holder(identity.clone(), valid_for);
        let pem = provision::issue_pem(&self.ca, &req)?;
        Ok((ClientTls::from_pem(&pem.ca_pem, &pem.cert_pem, &pem.key_pem), pem.issued.serial))
    }

    /// A day-long certificate for `identity`.
    ///
    /// # Errors
    /// Generation failure.
    pub fn tls(&self, identity: &Identity) -> Result<ClientTls> {
        Ok(self.issue(identity, time::Duration::days(1))?.0)
    }

    /// Client certificates for many sidecars at once (one CA load, one `issued.txt` write).
    ///
    /// # Errors
    /// Invalid ids or regions, generation failure.
    pub fn clients(&self, clients: &[(String, String)]) -> Result<Vec<ClientTls>> {
        let reqs = clients
            .iter()
            .map(|(id, region)| {
                Ok(IssueRequest::holder(
                    Identity::new(Role::Client, Some(RegionId::new(region.as_str())?), id)?,
                    time::Duration::days(1),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(provision::issue_many(&self.ca, &reqs)?
            .into_iter()
            .map(|p| ClientTls::from_pem(&p.ca_pem, &p.cert_pem, &p.key_pem))
            .collect())
    }

    /// Writes an identity directory for `identity` (for CLI subprocesses) under the root.
    ///
    /// # Errors
    /// I/O or generation failure.
    pub fn identity_dir(&self, identity: &Identity) -> Result<IdentityDir> {
        let dir = IdentityDir::new(self.root.join(identity.uri().replace("fedra://", "").replace('/', "-")));
        let req = IssueRequest::holder(identity.clone(), time::Duration::days(1));
        provision::issue(&self.ca, &req, &dir)?;
        Ok(dir)
    }

    /// Revokes a serial; the coordinator refuses it from its next handshake or request on.
    ///
    /// # Errors
    /// I/O or signing failure.
    pub fn revoke(&self, serial: &str) -> Result<()> {
        Ok(provision::revoke(&self.ca, serial)?)
    }
}
