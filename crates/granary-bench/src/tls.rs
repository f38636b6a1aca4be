//! The certificates of P3-tls and P4-tls: a CA made for the run and one certificate for
//! 127.0.0.1, written to a directory of their own for the silo process's `GRANARY_TLS_*`
//! settings (removed when the run ends).

use std::path::PathBuf;

use granary::TlsConfig;
use granary_testkit::certs::TestCa;

/// PEM files of a CA and of a silo certificate it signed, in a temporary directory.
#[derive(Debug)]
pub(crate) struct BenchTls {
    dir: PathBuf,
}

impl BenchTls {
    /// Makes the CA and the certificate, and writes them.
    pub(crate) fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "granary-bench-tls-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let ca = TestCa::new("granary-bench CA");
        let silo = ca.issue(&["127.0.0.1"]);
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("silo.pem"), &silo.cert_pem)?;
        std::fs::write(dir.join("silo.key"), &silo.key_pem)?;
        Ok(Self { dir })
    }

    /// The `GRANARY_TLS_*` settings of a silo process: mutual TLS with these files.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let path = |file: &str| self.dir.join(file).display().to_string();
        vec![
            ("GRANARY_TLS_CA", path("ca.pem")),
            ("GRANARY_TLS_CERT", path("silo.pem")),
            ("GRANARY_TLS_KEY", path("silo.key")),
            ("GRANARY_TLS_MUTUAL", "1".to_owned()),
        ]
    }

    /// The same settings for an in-process silo.
    pub(crate) fn config(&self) -> TlsConfig {
        TlsConfig::builder()
            .ca_file(self.dir.join("ca.pem"))
            .identity_files(self.dir.join("silo.pem"), self.dir.join("silo.key"))
            .mutual(true)
            .build()
            .expect("the bench's certificates load")
    }
}

impl Drop for BenchTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
