//! [`SqsEndpoint`]: which SQS to talk to, and how to sign.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{Credentials, Region};

/// Where SQS is: AWS as the environment configures it, or an SQS-compatible server at a URL,
/// with optional static credentials. [`client`](Self::client) builds the SDK client that
/// [`SqsSink`](crate::SqsSink) and [`SqsConsumer`](crate::SqsConsumer) take.
#[derive(Clone)]
pub struct SqsEndpoint {
    url: Option<String>,
    region: Option<String>,
    credentials: Option<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for SqsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsEndpoint")
            .field("url", &self.url)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.credentials.as_ref().map(|(id, _)| id),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SqsEndpoint {
    /// AWS as the environment configures it: the SDK's credential chain (environment
    /// variables, profile files, web identity, container and instance metadata) and region
    /// (`AWS_REGION`, profile).
    #[must_use]
    pub fn aws() -> Self {
        Self {
            url: None,
            region: None,
            credentials: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// An SQS-compatible server at `url` (e.g. `http://127.0.0.1:5000`), in region
    /// `us-east-1` unless [`region`](Self::region) says otherwise.
    #[must_use]
    pub fn url(url: &str) -> Self {
        Self {
            url: Some(url.to_owned()),
            ..Self::aws()
        }
    }

    /// The region.
    #[must_use]
    pub fn region(mut self, region: &str) -> Self {
        self.region = Some(region.to_owned());
        self
    }

    /// Signs with these credentials instead of the environment's (a local server accepts any).
    #[must_use]
    pub fn static_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some((access_key_id.to_owned(), secret_access_key.to_owned()));
        self
    }

    /// The deadline of one request attempt (default 10 s; a consumer's long poll gets its
    /// wait time on top). The SDK retries a failed attempt up to twice.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The SDK client. Loads the environment's configuration for what was not set here.
    pub async fn client(&self) -> aws_sdk_sqs::Client {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.timeout)
                .operation_attempt_timeout(self.timeout)
                .build(),
        );
        if let Some(url) = &self.url {
            loader = loader.endpoint_url(url);
        }
        match (&self.region, &self.url) {
            (Some(region), _) => loader = loader.region(Region::new(region.clone())),
            (None, Some(_)) => loader = loader.region(Region::new("us-east-1")),
            (None, None) => {}
        }
        if let Some((id, secret)) = &self.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "granary-sqs-static",
            ));
        }
        aws_sdk_sqs::Client::new(&loader.load().await)
    }
}
