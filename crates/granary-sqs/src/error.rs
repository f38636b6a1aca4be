//! [`SqsError`]: why a call to SQS failed.

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Why talking to SQS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqsError {
    /// SQS did not answer in time, could not be reached, or refused the request (the source
    /// says which: a missing queue, bad credentials, a throttled call, …). Check the endpoint
    /// and credentials; the sink and consumer retry on their own.
    #[error("SQS {operation} failed: {context}")]
    Request {
        /// The API operation, e.g. `CreateQueue`.
        operation: &'static str,
        /// The error with its causes, for logs.
        context: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_sqs::Error>,
    },
    /// A queue name that SQS does not accept (too long once sanitized); choose a shorter prefix
    /// or topic.
    #[error("invalid SQS queue name {name}: {reason}")]
    QueueName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// SQS answered without a field it always sends (e.g. the URL of a created queue): the
    /// server is not SQS-compatible enough.
    #[error("SQS {operation} answered without {field}")]
    Response {
        /// The API operation.
        operation: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

impl SqsError {
    /// The error of `operation` from the SDK's error.
    pub(crate) fn request<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        aws_sdk_sqs::Error: From<SdkError<E, R>>,
    {
        move |err| Self::Request {
            operation,
            context: DisplayErrorContext(&err).to_string(),
            source: Box::new(err.into()),
        }
    }

    /// Whether the error says the queue does not exist (deleted, or an in-memory server that
    /// restarted): the queue must be created again.
    #[must_use]
    pub fn is_missing_queue(&self) -> bool {
        match self {
            Self::Request { source, .. } => {
                matches!(source.as_ref(), aws_sdk_sqs::Error::QueueDoesNotExist(_))
                    || matches!(
                        source.code(),
                        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
                    )
            }
            Self::QueueName { .. } | Self::Response { .. } => false,
        }
    }
}
