//! `fedra pki`: provisioning a deployment's identities on local files (see `fedra_pki`).

use crate::output::{OutputFormat, emit};
use clap::Subcommand;
use fedra_pki::provision::{self, CaDir, IssueRequest};
use fedra_pki::{IdentityDir, PkiError};
use fedra_types::identity::{Identity, Role};
use fedra_types::ids::RegionId;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Create a deployment CA (ca.pem, ca.key with mode 0600, an empty crl.pem).
    Init {
        #[arg(long, env = "FEDRA_CA_DIR", default_value = "fedra-ca")]
        ca: PathBuf,
        /// A name for the deployment, written into the CA's subject.
        #[arg(long, default_value = "fedra")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate: its SAN URI fedra://ROLE[/REGION]/NAME is the holder's identity.
    Issue {
        #[arg(long, env = "FEDRA_CA_DIR", default_value = "fedra-ca")]
        ca: PathBuf,
        /// client, coordinator, regional-aggregator, scientist, compliance, approver,
        /// inference or admin.
        #[arg(long)]
        role: Role,
        /// Required for client, regional-aggregator and inference; refused for the others.
        #[arg(long)]
        region: Option<String>,
        /// Unique per role (a client's client id).
        #[arg(long)]
        name: String,
        /// DNS name or IP address the holder serves under (servers; repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Identity directory to write (ca.pem, cert.pem, key.pem); default ROLE[-REGION]-NAME.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate by serial (see `fedra pki list`); rewrites the CA's crl.pem,
    /// which coordinators re-read without a restart.
    Revoke {
        #[arg(long, env = "FEDRA_CA_DIR", default_value = "fedra-ca")]
        ca: PathBuf,
        serial: String,
    },
    /// List the certificates this CA issued: serial, identity, expiry.
    List {
        #[arg(long, env = "FEDRA_CA_DIR", default_value = "fedra-ca")]
        ca: PathBuf,
    },
}

/// A certificate the CA issued (`fedra pki list`, `issue`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuedCertificate {
    pub serial: String,
    pub identity: String,
    /// RFC 3339.
    pub not_after: String,
    /// The identity directory written (`issue` only).
    pub out: Option<PathBuf>,
}

/// What `init` and `revoke` wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Written {
    ca_dir: PathBuf,
    /// The serial revoked (`revoke` only).
    revoked: Option<String>,
    crl: PathBuf,
}

impl IssuedCertificate {
    fn new(i: &provision::Issued, out: Option<PathBuf>) -> Self {
        let not_after = chrono::DateTime::from_timestamp(i.not_after.unix_timestamp(), 0)
            .map_or_else(|| i.not_after.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        Self { serial: i.serial.clone(), identity: i.identity.to_string(), not_after, out }
    }
}

/// Runs one `fedra pki` command, printing what it wrote in `format`.
///
/// # Errors
/// Invalid identity parts, an existing CA, unreadable files; JSON output that cannot be
/// written ([`PkiError::Invalid`] naming it).
pub fn run(cmd: PkiCommand, format: OutputFormat) -> Result<(), PkiError> {
    let json_failed = |e: serde_json::Error| PkiError::Invalid(format!("cannot write JSON output: {e}"));
    match cmd {
        PkiCommand::Init { ca, name, days } => {
            let ca = CaDir::new(ca);
            provision::init_ca(&ca, &name, time::Duration::days(days))?;
            let written = Written { ca_dir: ca.dir.clone(), revoked: None, crl: ca.crl() };
            emit(format, &written, |w| {
                println!("CA written to {} (keep ca.key secret; distribute ca.pem)", w.ca_dir.display());
            })
            .map_err(json_failed)?;
        }
        PkiCommand::Issue { ca, role, region, name, hosts, days, out } => {
            let region = region.map(RegionId::new).transpose().map_err(fedra_types::identity::IdentityError::from)?;
            let identity = Identity::new(role, region, &name)?;
            let (ips, dns): (Vec<_>, Vec<_>) = hosts.into_iter().partition(|h| h.parse::<IpAddr>().is_ok());
            let req = IssueRequest {
                identity: identity.clone(),
                dns_names: dns,
                ip_addresses: ips.iter().filter_map(|h| h.parse().ok()).collect(),
                valid_for: time::Duration::days(days),
            };
            let out = out.unwrap_or_else(|| default_out(&identity));
            let issued = provision::issue(&CaDir::new(ca), &req, &IdentityDir::new(&out))?;
            emit(format, &IssuedCertificate::new(&issued, Some(out.clone())), |_| {
                println!("{} serial {} written to {}", issued.identity, issued.serial, out.display());
            })
            .map_err(json_failed)?;
        }
        PkiCommand::Revoke { ca, serial } => {
            let ca = CaDir::new(ca);
            provision::revoke(&ca, &serial)?;
            let written = Written { ca_dir: ca.dir.clone(), revoked: Some(serial), crl: ca.crl() };
            emit(format, &written, |w| {
                println!("revoked {}; {} updated", w.revoked.as_deref().unwrap_or_default(), w.crl.display());
            })
            .map_err(json_failed)?;
        }
        PkiCommand::List { ca } => {
            let issued = provision::list_issued(&CaDir::new(ca))?;
            let views: Vec<_> = issued.iter().map(|i| IssuedCertificate::new(i, None)).collect();
            emit(format, &views, |_| {
                for i in &issued {
                    println!("{}  {}  expires {}", i.serial, i.identity, i.not_after);
                }
            })
            .map_err(json_failed)?;
        }
    }
    Ok(())
}

fn default_out(identity: &Identity) -> PathBuf {
    match identity.region() {
        Some(r) => PathBuf::from(format!("{}-{r}-{}", identity.role(), identity.name())),
        None => PathBuf::from(format!("{}-{}", identity.role(), identity.name())),
    }
}
