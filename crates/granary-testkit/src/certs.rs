//! Throwaway certificates for tests of TLS links: a [`TestCa`] made in the test (no key is
//! ever committed) and the silo and client certificates it signs, with
//! [rcgen](https://docs.rs/rcgen).
//!
//! ```
//! use granary_testkit::certs::TestCa;
//!
//! let ca = TestCa::new("test CA");
//! let silo = ca.issue(&["127.0.0.1"]);
//! let tls = ca.tls(Some(&silo)).mutual(true).build().expect("valid certificates");
//! assert!(tls.is_mutual());
//! ```

use granary::TlsBuilder;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority made for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl TestCa {
    /// A new CA whose certificate has the common name `name`.
    ///
    /// # Panics
    /// If rcgen cannot make a key or a certificate (it always can).
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("rcgen makes a key pair");
        let cert = params.self_signed(&key).expect("rcgen signs a CA");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's certificate (PEM): what peers trust.
    #[must_use]
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `names` (IP addresses or DNS names), valid from a day ago for a
    /// year, for both ends of a link (server and client authentication).
    #[must_use]
    pub fn issue(&self, names: &[&str]) -> TestCert {
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        self.issue_valid(names, now - day, now + 365 * day)
    }

    /// A certificate for `names` that expired yesterday (valid for the ten days before).
    #[must_use]
    pub fn issue_expired(&self, names: &[&str]) -> TestCert {
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        self.issue_valid(names, now - 11 * day, now - day)
    }

    /// A certificate for `names`, valid from `not_before` until `not_after`.
    ///
    /// # Panics
    /// If a name is neither an IP address nor a DNS name.
    #[must_use]
    pub fn issue_valid(
        &self,
        names: &[&str],
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> TestCert {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("granary"),
        );
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
            })
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().expect("rcgen makes a key pair");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("rcgen signs a certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A TLS builder that trusts this CA and presents `identity`, if any.
    #[must_use]
    pub fn tls(&self, identity: Option<&TestCert>) -> TlsBuilder {
        let builder = granary::TlsConfig::builder().ca_pem(self.pem.clone());
        match identity {
            Some(cert) => builder.identity_pem(cert.cert_pem.clone(), cert.key_pem.clone()),
            None => builder,
        }
    }
}
