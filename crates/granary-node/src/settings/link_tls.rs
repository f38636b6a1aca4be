//! The TLS settings of a silo's links: `GRANARY_TLS_CA`, `GRANARY_TLS_CERT`, `GRANARY_TLS_KEY`,
//! `GRANARY_TLS_MUTUAL`, `GRANARY_TLS_SERVER_NAME`.

use granary::TlsConfig;

use super::Settings;
use crate::NodeError;

/// The TLS of the silo's links, if any `GRANARY_TLS_*` setting is given: the certificates are
/// loaded and checked now, so that a wrong path or PEM stops the process before it starts.
pub(crate) fn resolve(settings: &Settings) -> Result<Option<TlsConfig>, NodeError> {
    let mutual = match settings.tls_mutual.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(NodeError::Setting {
                name: "GRANARY_TLS_MUTUAL",
                problem: format!("{other:?}: use 1 (peers must present a certificate) or 0"),
            });
        }
    };
    let (ca, cert, key) = (
        settings.tls_ca.as_ref(),
        settings.tls_cert.as_ref(),
        settings.tls_key.as_ref(),
    );
    if ca.is_none()
        && cert.is_none()
        && key.is_none()
        && !mutual
        && settings.tls_server_name.is_none()
    {
        return Ok(None);
    }
    // A silo accepts links: it needs a certificate whether or not peers present theirs.
    if cert.is_none() {
        return Err(NodeError::Setting {
            name: "GRANARY_TLS_CERT",
            problem: "not set, but other GRANARY_TLS_* settings are: a silo with TLS needs its \
                      certificate (a PEM file), its key (GRANARY_TLS_KEY) and the CA \
                      (GRANARY_TLS_CA)"
                .into(),
        });
    }
    let mut builder = TlsConfig::builder().mutual(mutual);
    if let Some(ca) = ca {
        builder = builder.ca_file(ca);
    }
    match (cert, key) {
        (Some(cert), Some(key)) => builder = builder.identity_files(cert, key),
        _ => {
            return Err(NodeError::Setting {
                name: "GRANARY_TLS_KEY",
                problem: "not set, but GRANARY_TLS_CERT is: give the certificate's private key \
                          (a PEM file)"
                    .into(),
            });
        }
    }
    if let Some(name) = &settings.tls_server_name {
        builder = builder.server_name(name);
    }
    Ok(Some(builder.build()?))
}

#[cfg(test)]
mod tests {
    use granary_testkit::certs::TestCa;

    use super::*;

    /// The TLS settings `pairs` resolved; files named `@name` are written to a fresh directory
    /// from `files` first.
    fn tls(pairs: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Option<TlsConfig>, NodeError> {
        let dir = std::env::temp_dir().join(granary_testkit::redis_server::unique_name(
            "granary-tls-settings",
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let paths: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| {
                let value = match v.strip_prefix('@') {
                    Some(file) => dir.join(file).display().to_string(),
                    None => (*v).to_owned(),
                };
                ((*k).to_owned(), value)
            })
            .collect();
        let pairs: Vec<(&str, &str)> = paths
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resolved = resolve(&Settings::from_pairs(&pairs));
        std::fs::remove_dir_all(&dir).unwrap();
        resolved
    }

    fn error(pairs: &[(&str, &str)], files: &[(&str, &str)]) -> String {
        let err = tls(pairs, files).expect_err("refused");
        assert_eq!(err.exit_code(), 2, "{err}");
        err.to_string()
    }

    #[test]
    fn tls_is_off_without_settings_and_on_with_valid_files() {
        assert!(tls(&[], &[]).unwrap().is_none());
        let ca = TestCa::new("settings CA");
        let silo = ca.issue(&["127.0.0.1"]);
        let files = [
            ("ca.pem", ca.pem()),
            ("silo.pem", silo.cert_pem.as_str()),
            ("silo.key", silo.key_pem.as_str()),
        ];
        let on = [
            ("GRANARY_TLS_CA", "@ca.pem"),
            ("GRANARY_TLS_CERT", "@silo.pem"),
            ("GRANARY_TLS_KEY", "@silo.key"),
            ("GRANARY_TLS_MUTUAL", "1"),
        ];
        let config = tls(&on, &files).unwrap().expect("TLS on");
        assert!(config.is_mutual());

        // A key that is not the certificate's.
        let other = ca.issue(&["127.0.0.1"]);
        let files = [
            ("ca.pem", ca.pem()),
            ("silo.pem", silo.cert_pem.as_str()),
            ("silo.key", other.key_pem.as_str()),
        ];
        assert!(error(&on, &files).contains("GRANARY_TLS_KEY"));
        // A CA file without a certificate.
        let files = [
            ("ca.pem", "not a certificate"),
            ("silo.pem", silo.cert_pem.as_str()),
            ("silo.key", silo.key_pem.as_str()),
        ];
        let err = error(&on, &files);
        assert!(
            err.contains("GRANARY_TLS_CA") && err.contains("no CERTIFICATE"),
            "{err}"
        );
    }

    #[test]
    fn wrong_tls_settings_name_the_setting_and_the_cause() {
        let err = error(
            &[
                ("GRANARY_TLS_CA", "/nonexistent/ca.pem"),
                ("GRANARY_TLS_CERT", "/nonexistent/silo.pem"),
                ("GRANARY_TLS_KEY", "/nonexistent/silo.key"),
            ],
            &[],
        );
        assert!(
            err.contains("GRANARY_TLS_CA") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let err = error(&[("GRANARY_TLS_CA", "/ca.pem")], &[]);
        assert!(err.contains("GRANARY_TLS_CERT"), "{err}");
        let err = error(
            &[
                ("GRANARY_TLS_CA", "/ca.pem"),
                ("GRANARY_TLS_CERT", "/silo.pem"),
            ],
            &[],
        );
        assert!(err.contains("GRANARY_TLS_KEY"), "{err}");
        let err = error(&[("GRANARY_TLS_MUTUAL", "yes")], &[]);
        assert!(err.contains("GRANARY_TLS_MUTUAL"), "{err}");
    }
}
