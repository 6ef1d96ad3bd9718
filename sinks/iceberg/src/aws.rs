//! What the Glue and REST catalog clients share: object_store's HTTP client for a catalog
//! endpoint, and the region and credentials of the task's S3 settings (object_store's AWS
//! provider chain: the environment, web identity, ECS/EC2 roles) for SigV4 signing.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::client::{ClientOptions, HttpClient, HttpConnector, ReqwestConnector};
use object_store::CredentialProvider;

use crate::IcebergError;

pub(crate) type Credentials = Arc<dyn CredentialProvider<Credential = AwsCredential>>;

/// The region of the S3 settings, `us-east-1` when none is set.
pub(crate) fn region(s3: &AmazonS3Builder) -> String {
    s3.get_config_value(&AmazonS3ConfigKey::Region)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "us-east-1".into())
}

/// Credentials as the S3 warehouse gets them. `subject` names the catalog in errors, `hint`
/// says what to check.
pub(crate) fn credentials(
    s3: &AmazonS3Builder,
    subject: &str,
    hint: &str,
) -> Result<Credentials, IcebergError> {
    // The bucket name only satisfies the builder; nothing is read from it.
    let store = s3
        .clone()
        .with_bucket_name("inlet-catalog-credentials")
        .build()
        .map_err(|e| IcebergError::OpenStore {
            warehouse: subject.to_string(),
            message: e.to_string(),
            hint: hint.to_string(),
        })?;
    Ok(store.credentials().clone())
}

/// An HTTP client for one catalog endpoint (`allow_http` for a plain-http one).
pub(crate) fn http_client(allow_http: bool, subject: &str) -> Result<HttpClient, IcebergError> {
    let options = ClientOptions::new().with_allow_http(allow_http);
    ReqwestConnector::default()
        .connect(&options)
        .map_err(|e| IcebergError::OpenStore {
            warehouse: subject.to_string(),
            message: e.to_string(),
            hint: "cannot set up an HTTP client".into(),
        })
}
