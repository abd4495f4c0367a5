//! Provisioning a deployment: its CA, the certificates of every holder, and revocation.
//!
//! A CA directory holds `ca.pem`, `ca.key` (0600), `crl.pem` (the current revocation list,
//! signed by the CA; empty at first), `revoked.txt` (one revoked serial per line, the CRL's
//! source) and `issued.txt` (serial, identity and expiry of every certificate issued, so
//! that an operator can find what to revoke).
//!
//! A certificate carries exactly one `fedra://` SAN URI: the holder's
//! [`Identity`]. Server certificates (coordinator, regional aggregator, inference) also carry
//! the DNS names and IP addresses their peers dial.

use crate::PkiError;
use crate::files::{IdentityDir, read_text, write_public, write_secret};
use fedra_types::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};

/// Where a CA's files live.
#[derive(Debug, Clone)]
pub struct CaDir {
    pub dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    /// The deployment's checkpoint signing key (see [`crate::signing`]).
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join(crate::signing::SIGNING_KEY_FILE)
    }
    /// The trusted checkpoint signing keys, copied into every identity directory.
    pub fn trust(&self) -> PathBuf {
        self.dir.join(crate::signing::TRUST_FILE)
    }
    fn revoked(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }
    fn issued(&self) -> PathBuf {
        self.dir.join("issued.txt")
    }
}

/// What to put in a new certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub identity: Identity,
    /// DNS names the holder serves under (servers only; e.g. `localhost`).
    pub dns_names: Vec<String>,
    /// IP addresses the holder serves under (servers only; e.g. `127.0.0.1`).
    pub ip_addresses: Vec<IpAddr>,
    /// Validity from now; may be negative in tests to make an already expired certificate.
    pub valid_for: Duration,
}

impl IssueRequest {
    /// A certificate for a holder that only connects (no server names), valid for `valid_for`.
    pub fn holder(identity: Identity, valid_for: Duration) -> Self {
        Self { identity, dns_names: vec![], ip_addresses: vec![], valid_for }
    }
}

/// One issued certificate as `issued.txt` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub serial: String,
    pub identity: Identity,
    pub not_after: OffsetDateTime,
}

/// Creates a deployment CA in `ca`, valid for `valid_for`. Refuses to overwrite an existing
/// CA (its key signs every certificate in the deployment).
///
/// # Errors
/// An existing CA, I/O or generation failure.
pub fn init_ca(ca: &CaDir, name: &str, valid_for: Duration) -> Result<(), PkiError> {
    if ca.key().exists() {
        return Err(PkiError::Invalid(format!("{} already exists: refusing to replace a CA key", ca.key().display())));
    }
    std::fs::create_dir_all(&ca.dir).map_err(|e| PkiError::io(&ca.dir, e))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("fedra deployment CA {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + valid_for;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    write_secret(&ca.key(), &key.serialize_pem())?;
    write_public(&ca.cert(), &cert.pem())?;
    write_public(&ca.revoked(), "")?;
    write_public(&ca.issued(), "")?;
    crate::signing::ManifestSigner::load_or_create(&ca.signing_key(), &ca.trust())?;
    write_crl(ca, &[])
}

/// A freshly issued certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct IssuedPem {
    pub issued: Issued,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Issues a certificate for `req.identity` into the identity directory `out` (`cert.pem`,
/// `key.pem` with mode 0600, and a copy of the CA certificate as `ca.pem`), with the
/// deployment's trusted checkpoint signing keys (`checkpoint-signing.pub`) and, for a
/// coordinator, the signing key itself (mode 0600). A CA created before checkpoints were
/// signed gets its signing key on the first issue.
///
/// # Errors
/// Missing CA, I/O or generation failure.
pub fn issue(ca: &CaDir, req: &IssueRequest, out: &IdentityDir) -> Result<Issued, PkiError> {
    let pem = issue_pem(ca, req)?;
    std::fs::create_dir_all(&out.dir).map_err(|e| PkiError::io(&out.dir, e))?;
    write_secret(&out.key(), &pem.key_pem)?;
    write_public(&out.cert(), &pem.cert_pem)?;
    write_public(&out.ca(), &pem.ca_pem)?;
    crate::signing::ManifestSigner::load_or_create(&ca.signing_key(), &ca.trust())?;
    write_public(&out.dir.join(crate::signing::TRUST_FILE), &read_text(&ca.trust())?)?;
    if req.identity.role() == fedra_types::identity::Role::Coordinator {
        write_secret(&out.dir.join(crate::signing::SIGNING_KEY_FILE), &read_text(&ca.signing_key())?)?;
    }
    Ok(pem.issued)
}

/// Issues a certificate and returns it with its key in memory (simulations issuing thousands
/// of client identities); still recorded in the CA's `issued.txt`.
///
/// # Errors
/// Missing CA or generation failure.
pub fn issue_pem(ca: &CaDir, req: &IssueRequest) -> Result<IssuedPem, PkiError> {
    issue_many(ca, std::slice::from_ref(req)).map(|mut v| v.remove(0))
}

/// [`issue_pem`] for many requests, loading the CA and appending to `issued.txt` once.
///
/// # Errors
/// As [`issue_pem`].
pub fn issue_many(ca: &CaDir, reqs: &[IssueRequest]) -> Result<Vec<IssuedPem>, PkiError> {
    let issuer = load_issuer(ca)?;
    let ca_pem = read_text(&ca.cert())?;
    let mut out = Vec::with_capacity(reqs.len());
    let mut log = read_text(&ca.issued()).unwrap_or_default();
    for req in reqs {
        let (issued, cert_pem, key_pem) = sign(&issuer, req)?;
        log.push_str(&format!("{} {} {}\n", issued.serial, issued.identity, issued.not_after.unix_timestamp()));
        out.push(IssuedPem { issued, cert_pem, key_pem, ca_pem: ca_pem.clone() });
    }
    write_public(&ca.issued(), &log)?;
    Ok(out)
}

fn sign(issuer: &Issuer<'static, KeyPair>, req: &IssueRequest) -> Result<(Issued, String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, req.identity.name().as_str());
    params.distinguished_name.push(DnType::OrganizationalUnitName, req.identity.role().as_str());
    params.subject_alt_names.push(SanType::URI(req.identity.uri().try_into()?));
    for dns in &req.dns_names {
        params.subject_alt_names.push(SanType::DnsName(dns.as_str().try_into()?));
    }
    for ip in &req.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if !req.dns_names.is_empty() || !req.ip_addresses.is_empty() {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    // Whole seconds: what the certificate can encode, so issued.txt matches it exactly.
    let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).expect("now is in range");
    // An already-expired certificate (negative validity) must still have not_before < not_after.
    params.not_before = (now - Duration::minutes(5)).min(now + req.valid_for - Duration::minutes(5));
    params.not_after = now + req.valid_for;
    let serial = random_serial();
    params.serial_number = Some(serial.clone());
    let cert = params.signed_by(&key, issuer)?;
    let issued =
        Issued { serial: serial_hex(&serial.to_bytes()), identity: req.identity.clone(), not_after: params.not_after };
    Ok((issued, cert.pem(), key.serialize_pem()))
}

/// Every certificate this CA issued, oldest first.
///
/// # Errors
/// A missing or corrupt `issued.txt`.
pub fn list_issued(ca: &CaDir) -> Result<Vec<Issued>, PkiError> {
    let text = read_text(&ca.issued())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || PkiError::Invalid(format!("{}: malformed line {line:?}", ca.issued().display()));
            let mut parts = line.split_whitespace();
            let (Some(serial), Some(identity), Some(not_after)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad());
            };
            let not_after = not_after.parse::<i64>().ok().and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
            Ok(Issued {
                serial: serial.to_string(),
                identity: identity.parse()?,
                not_after: not_after.ok_or_else(bad)?,
            })
        })
        .collect()
}

/// Revokes the certificate with serial `serial` (hex, as `issued.txt` lists it) and rewrites
/// the CA's `crl.pem`. Coordinators watching that file refuse the certificate from then on.
/// Revoking twice is a no-op.
///
/// # Errors
/// A malformed serial, a missing CA, I/O or signing failure.
pub fn revoke(ca: &CaDir, serial: &str) -> Result<(), PkiError> {
    let serial = normalize_serial(serial)?;
    let mut revoked: Vec<String> = read_text(&ca.revoked())?.lines().map(str::to_string).collect();
    if !revoked.contains(&serial) {
        revoked.push(serial);
    }
    write_public(&ca.revoked(), &(revoked.join("\n") + "\n"))?;
    write_crl(ca, &revoked)
}

fn write_crl(ca: &CaDir, revoked: &[String]) -> Result<(), PkiError> {
    let issuer = load_issuer(ca)?;
    let now = OffsetDateTime::now_utc();
    let revoked_certs = revoked
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex_decode(s)?),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(3650),
        crl_number: SerialNumber::from_slice(&(revoked_certs.len() as u64 + 1).to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    write_public(&ca.crl(), &crl.pem()?)
}

fn load_issuer(ca: &CaDir) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&read_text(&ca.key())?)?;
    Ok(Issuer::from_ca_cert_pem(&read_text(&ca.cert())?, key)?)
}

/// 16 random bytes (ChaCha from the OS seed), top bit clear: a positive DER integer that
/// no two certificates of a deployment share.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Lower-case hex without leading zero bytes: the one spelling of a serial that CRL entries,
/// `issued.txt` and peer certificates are compared in.
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn normalize_serial(s: &str) -> Result<String, PkiError> {
    let mut cleaned: String = s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if cleaned.len() % 2 == 1 {
        cleaned.insert(0, '0');
    }
    Ok(serial_hex(&hex_decode(&cleaned)?))
}

fn hex_decode(s: &str) -> Result<Vec<u8>, PkiError> {
    let bad = || PkiError::Invalid(format!("serial {:?} is not hex", fedra_types::identity::truncated(s)));
    if s.is_empty() || s.len() > 64 || s.len() % 2 == 1 {
        return Err(bad());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::read_certs;
    use crate::peer::PeerCert;

    fn request(uri: &str, valid_for: Duration) -> IssueRequest {
        IssueRequest::holder(uri.parse().unwrap(), valid_for)
    }

    #[test]
    fn issued_certificates_carry_the_identity_and_private_keys_are_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = CaDir::new(tmp.path().join("ca"));
        init_ca(&ca, "test", Duration::days(30)).unwrap();
        assert!(init_ca(&ca, "test", Duration::days(30)).unwrap_err().to_string().contains("refusing to replace"));
        let out = IdentityDir::new(tmp.path().join("h7"));
        let issued = issue(&ca, &request("fedra://client/eu-west/hospital-7", Duration::days(1)), &out).unwrap();
        let der = read_certs(&out.cert()).unwrap().remove(0);
        let peer = PeerCert::from_der(&der).unwrap();
        assert_eq!(peer.identity.to_string(), "fedra://client/eu-west/hospital-7");
        assert_eq!(peer.serial, issued.serial);
        assert_eq!(list_issued(&ca).unwrap(), vec![issued]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [out.key(), ca.key()] {
                assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
            }
        }
    }

    #[test]
    fn revoked_serials_appear_in_the_crl() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = CaDir::new(tmp.path().join("ca"));
        init_ca(&ca, "test", Duration::days(30)).unwrap();
        let a =
            issue(&ca, &request("fedra://scientist/alice", Duration::days(1)), &IdentityDir::new(tmp.path().join("a")))
                .unwrap();
        let revocations = crate::Revocations::load(&ca.cert(), Some(&ca.crl())).unwrap();
        let alice = PeerCert { identity: a.identity.clone(), serial: a.serial.clone(), not_after: i64::MAX };
        revocations.check(&alice).unwrap();
        revoke(&ca, &a.serial.to_uppercase()).unwrap();
        revoke(&ca, &a.serial).unwrap();
        assert_eq!(std::fs::read_to_string(ca.dir.join("revoked.txt")).unwrap().lines().count(), 1);
        assert!(matches!(revocations.check(&alice), Err(crate::PeerError::Revoked { .. })));
        assert_eq!(revocations.generation(), 1);
        assert!(revoke(&ca, "not-hex").unwrap_err().to_string().contains("is not hex"));
    }

    #[test]
    fn expiry_is_checked_after_the_handshake_too() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = CaDir::new(tmp.path().join("ca"));
        init_ca(&ca, "test", Duration::days(30)).unwrap();
        let out = IdentityDir::new(tmp.path().join("old"));
        issue(&ca, &request("fedra://admin/root", Duration::hours(-1)), &out).unwrap();
        let peer = PeerCert::from_der(&read_certs(&out.cert()).unwrap()[0]).unwrap();
        let revocations = crate::Revocations::load(&ca.cert(), None).unwrap();
        assert!(matches!(revocations.check(&peer), Err(crate::PeerError::Expired { .. })));
    }
}
