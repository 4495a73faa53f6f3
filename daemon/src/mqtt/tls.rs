//! rustls client configuration for `mqtts://`, with the ring provider (rustls' default, aws-lc,
//! needs cmake to build, which embedded cross builds rarely have). Roots come from `mqtt.ca`, or
//! from the system bundle when it is unset.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

pub fn client_config(mqtt: &MqttConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let (ca_path, key_name) = match &mqtt.ca {
        Some(p) => (p.clone(), "mqtt.ca"),
        None => (
            SYSTEM_BUNDLES
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.exists())
                .ok_or_else(|| anyhow!("mqtt.ca: not set and no system CA bundle found"))?,
            "system CA bundle",
        ),
    };
    let certs = CertificateDer::pem_file_iter(&ca_path)
        .with_context(|| format!("{key_name}: cannot read {}", ca_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{key_name}: {} is not PEM", ca_path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(anyhow!(
            "{key_name}: no certificate in {}",
            ca_path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&mqtt.cert, &mqtt.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("mqtt.cert: cannot read {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("mqtt.cert: {} is not PEM", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!("mqtt.key: cannot read a private key from {}", key.display())
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .context("mqtt.cert / mqtt.key")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
