//! `wharf dev certs`: a small PKI for trying TLS out and for tests. One CA, and a certificate for
//! the listed hosts usable both as a server and as a client certificate (so the same pair serves
//! HTTPS on a gateway and mTLS between members). Production clusters should use their own CA.
//!
//! ```text
//! <out>/ca.pem     the CA certificate: the `ca` of [cluster_tls], a client's trust root
//! <out>/ca.key     the CA's key (kept to issue more node certificates with --reuse-ca)
//! <out>/node.pem   the node certificate (SANs: --hosts; EKUs: serverAuth, clientAuth)
//! <out>/node.key   its key (mode 0600)
//! ```

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA's subject; fixed so `--reuse-ca` can issue under a CA from its key alone.
const CA_NAME: &str = "Wharf development CA";

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca.key, node.pem and node.key into (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Host names and IP addresses the node certificate is valid for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
    /// Common name of the node certificate [default: the first host].
    #[arg(long)]
    pub name: Option<String>,
    /// Issue the node certificate under the CA already in --out (ca.pem, ca.key) instead of
    /// making a new CA.
    #[arg(long)]
    pub reuse_ca: bool,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Writes the files (see the module comment) and prints their paths.
pub fn run(args: &CertsArgs) -> Result<(), CertsError> {
    let written = generate(args)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes the CA (unless `reuse_ca`) and the node pair into `args.out`; returns the paths written.
pub fn generate(args: &CertsArgs) -> Result<Vec<PathBuf>, CertsError> {
    let hosts: Vec<String> = args
        .hosts
        .iter()
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .collect();
    let Some(first) = hosts.first() else {
        return Err(CertsError::Invalid("--hosts is empty".into()));
    };
    std::fs::create_dir_all(&args.out).map_err(|source| CertsError::Write {
        path: args.out.clone(),
        source,
    })?;
    let ca_key_path = args.out.join("ca.key");
    let mut written = Vec::new();
    let ca_key = if args.reuse_ca {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|source| CertsError::Read {
            path: ca_key_path.clone(),
            source,
        })?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = ca_key_usages();
        ca.distinguished_name.push(DnType::CommonName, CA_NAME);
        set_validity(&mut ca, args.days);
        let ca_cert = ca.self_signed(&key)?;
        written.push(write(&args.out, "ca.pem", &ca_cert.pem(), false)?);
        written.push(write(&args.out, "ca.key", &key.serialize_pem(), true)?);
        key
    };
    let mut issuer_params = CertificateParams::new(Vec::<String>::new())?;
    issuer_params
        .distinguished_name
        .push(DnType::CommonName, CA_NAME);
    issuer_params.key_usages = ca_key_usages();
    let issuer = Issuer::new(issuer_params, ca_key);

    let mut node = CertificateParams::new(hosts.clone())?;
    node.distinguished_name.push(
        DnType::CommonName,
        args.name.clone().unwrap_or_else(|| first.clone()),
    );
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    set_validity(&mut node, args.days);
    node.use_authority_key_identifier_extension = true;
    let node_key = KeyPair::generate()?;
    let node_cert = node.signed_by(&node_key, &issuer)?;
    // The key first: a reloading gateway that sees the new certificate finds its key in place.
    written.push(write(
        &args.out,
        "node.key",
        &node_key.serialize_pem(),
        true,
    )?);
    written.push(write(&args.out, "node.pem", &node_cert.pem(), false)?);
    Ok(written)
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// Writes `text` to `dir/name` through a temporary file and a rename, so a reader (a gateway
/// reloading its certificate) never sees half a file; keys are readable by the owner only.
fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<PathBuf, CertsError> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let failed = |source| CertsError::Write {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&temp).map_err(failed)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temp, &path).map_err(failed)?;
    Ok(path)
}

/// From yesterday (clock skew between machines) to `days` after today, at midnight UTC.
fn set_validity(params: &mut CertificateParams, days: u32) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| (since.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    let date = |days_since_epoch: i64| {
        let (year, month, day) = civil_from_days(days_since_epoch);
        rcgen::date_time_ymd(year, month, day)
    };
    params.not_before = date(today - 1);
    params.not_after = date(today + i64::from(days.max(1)));
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn a_node_pair_loads_and_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            out: dir.path().to_owned(),
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
            name: None,
            reuse_ca: false,
            days: 30,
        };
        generate(&args).unwrap();
        let path = |name: &str| dir.path().join(name);
        let first =
            wharf_tls::ClusterTls::load(&path("ca.pem"), &path("node.pem"), &path("node.key"))
                .expect("the node pair is a valid member under the CA");
        assert_eq!(first.summary().subject, "127.0.0.1");

        let again = CertsArgs {
            name: Some("second".into()),
            reuse_ca: true,
            ..args
        };
        generate(&again).unwrap();
        let second =
            wharf_tls::ClusterTls::load(&path("ca.pem"), &path("node.pem"), &path("node.key"))
                .expect("a node issued under the reused CA chains to it");
        assert_eq!(second.summary().subject, "second");
        assert_ne!(first.summary().serial, second.summary().serial);
    }
}
