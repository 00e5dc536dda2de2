//! Making the cluster CA and the certificates it signs (`geonfs cert`,
//! `geonfs demo`, test clusters): ECDSA P-256 keys, a CA constrained to
//! sign end-entity certificates only, and one certificate per node whose
//! DNS name is the node's name.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::RpcError;

/// The CA's private key inside the TLS directory; it belongs on the host
/// that issues certificates, not on the nodes.
pub const CA_KEY_FILE: &str = "ca.key";

/// The CA certificate's common name. The CA is rebuilt from it (and its
/// key) to sign later certificates, so it never changes.
const CA_COMMON_NAME: &str = "geonfs cluster CA";

/// How long the CA certificate is valid, in years.
const CA_YEARS: i32 = 20;

/// How long a node certificate is valid, in years (re-issue to rotate).
const NODE_YEARS: i32 = 5;

/// Where a name's certificate lives in `dir`.
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.crt"))
}

/// Where a name's private key lives in `dir`.
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// Makes a new cluster CA in `dir` (created if needed): `ca.crt` and
/// `ca.key` (mode 0600). Refuses to replace an existing CA: every node
/// certificate it signed would stop being trusted.
pub fn init_ca(dir: &Path) -> Result<(), RpcError> {
    std::fs::create_dir_all(dir).map_err(|err| file_error(dir, err))?;
    let cert_file = dir.join(geonfs_site_config::TLS_CA_CERT_FILE);
    let key_file = dir.join(CA_KEY_FILE);
    for path in [&cert_file, &key_file] {
        if path.exists() {
            return Err(RpcError::TlsFile {
                path: path.clone(),
                reason: "already exists: a new CA would invalidate every certificate the old \
                         one signed (remove it first if that is what you want)"
                    .into(),
            });
        }
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(making)?;
    let cert = ca_params().self_signed(&key).map_err(making)?;
    write_file(&key_file, key.serialize_pem().as_bytes(), true, false)?;
    write_file(&cert_file, cert.pem().as_bytes(), false, false)
}

/// Issues `<name>.crt` and `<name>.key` in `dir`, signed by the CA in the
/// same directory. An existing pair is replaced only with `replace`.
pub fn issue(dir: &Path, name: &str, replace: bool) -> Result<(), RpcError> {
    let ca_key_file = dir.join(CA_KEY_FILE);
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_file).map_err(|err| file_error(&ca_key_file, err))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|err| RpcError::TlsFile {
        path: ca_key_file.clone(),
        reason: format!("not a usable private key: {err}"),
    })?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|err| {
        RpcError::TlsSetup(format!("{name:?} cannot be a certificate's name: {err}"))
    })?;
    params.distinguished_name = common_name(name);
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_YEARS);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(making)?;
    let cert = params.signed_by(&key, &issuer).map_err(making)?;
    write_file(
        &key_path(dir, name),
        key.serialize_pem().as_bytes(),
        true,
        replace,
    )?;
    write_file(&cert_path(dir, name), cert.pem().as_bytes(), false, replace)
}

/// The CA's parameters; also what [`Issuer`] needs to sign with its key.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_YEARS);
    params
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// Valid from January 1st of this year for `years` years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs() / 86_400)
        .unwrap_or(0);
    // 146 097 days in 400 Gregorian years; rounding down can only give an
    // earlier year, which is still in the past.
    let year = 1970 + i32::try_from(days * 400 / 146_097).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

fn making(err: rcgen::Error) -> RpcError {
    RpcError::TlsSetup(format!("cannot make a certificate: {err}"))
}

fn file_error(path: &Path, err: std::io::Error) -> RpcError {
    RpcError::TlsFile {
        path: path.to_path_buf(),
        reason: err.to_string(),
    }
}

/// Writes `bytes` to a new file (mode 0600 when `private`); an existing
/// file is an error unless `replace`.
fn write_file(path: &Path, bytes: &[u8], private: bool, replace: bool) -> Result<(), RpcError> {
    if replace {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(file_error(path, err)),
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            RpcError::TlsFile {
                path: path.to_path_buf(),
                reason: "already exists (re-issue with --replace)".into(),
            }
        } else {
            file_error(path, err)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| file_error(path, err))
}
