//! The AWS Glue Data Catalog, as Iceberg's own GlueCatalog uses it: a Glue database per
//! namespace, a Glue table per Iceberg table with the parameters `table_type=ICEBERG`,
//! `metadata_location` and `previous_metadata_location`. A commit writes a new metadata file
//! under a fresh name, then swaps `metadata_location` with `UpdateTable`, conditional on the
//! table's `VersionId` read together with the expected previous location: of two writers only
//! one wins (Glue answers the other with ConcurrentModificationException).
//!
//! The client is small on purpose: Glue's JSON 1.1 API over object_store's HTTP client, signed
//! with object_store's SigV4 signer and credentials from the same provider chain as S3 (the
//! environment, web identity, ECS/EC2 roles). No AWS SDK.

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AwsAuthorizer};
use object_store::client::HttpClient;
use serde_json::{json, Value};

use crate::IcebergError;

use crate::aws::Credentials;

/// A signed JSON client of one Glue endpoint.
#[derive(Clone)]
pub(crate) struct GlueClient {
    http: HttpClient,
    credentials: Credentials,
    endpoint: String,
    region: String,
    catalog_id: Option<String>,
}

impl std::fmt::Debug for GlueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlueClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish()
    }
}

/// What GetTable says about an Iceberg table.
#[derive(Debug, Clone)]
pub(crate) struct GlueTable {
    pub(crate) metadata_location: Option<String>,
    pub(crate) version_id: Option<String>,
}

impl GlueClient {
    /// A client with the region and credentials of `s3` (the S3 settings of the task) and the
    /// endpoint `endpoint`, else `AWS_ENDPOINT_URL_GLUE`, else Glue's regional endpoint.
    pub(crate) fn new(
        s3: &AmazonS3Builder,
        endpoint: Option<&str>,
        catalog_id: Option<String>,
    ) -> Result<Self, IcebergError> {
        let bad = |key: &str, message: String| IcebergError::Config {
            key: key.into(),
            message,
        };
        let region = crate::aws::region(s3);
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_GLUE").ok())
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| format!("https://glue.{region}.amazonaws.com"));
        let parsed = url::Url::parse(&endpoint).map_err(|e| {
            bad(
                "catalog.endpoint",
                format!("{endpoint:?} is not a URL ({e}); use e.g. https://glue.eu-west-1.amazonaws.com"),
            )
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "catalog.endpoint",
                "credentials in the URL are not supported; use the AWS_* environment".into(),
            ));
        }
        let credentials = crate::aws::credentials(
            s3,
            "glue catalog",
            "check AWS_REGION and the other AWS_* environment variables",
        )?;
        let http = crate::aws::http_client(parsed.scheme() == "http", "glue catalog")?;
        Ok(Self {
            http,
            credentials,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region,
            catalog_id,
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!("glue {}", self.endpoint)
    }

    /// Calls one Glue action; `Err((type, message, transient))` for an error answer.
    async fn call(&self, action: &str, mut body: Value) -> Result<Value, GlueFailure> {
        if let (Some(id), Some(obj)) = (&self.catalog_id, body.as_object_mut()) {
            obj.insert("CatalogId".into(), Value::String(id.clone()));
        }
        let payload = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("AWSGlue.{action}"))
            .body(object_store::client::HttpRequestBody::from(payload))
            .map_err(|e| GlueFailure::local(format!("cannot build the {action} request: {e}")))?;
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| GlueFailure {
                kind: "Credentials".into(),
                message: format!(
                    "no AWS credentials: {e}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 run with an instance/task role"
                ),
                transient: false,
            })?;
        AwsAuthorizer::new(&credential, "glue", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| GlueFailure::local(format!("cannot sign the {action} request: {e}")))?;
        let response = self.http.execute(request).await.map_err(|e| GlueFailure {
            kind: "Unreachable".into(),
            message: format!("{action}: {e}"),
            transient: true,
        })?;
        let status = response.status();
        let header_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| GlueFailure {
                kind: "Unreachable".into(),
                message: format!("{action}: reading the answer: {e}"),
                transient: true,
            })?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(value);
        }
        let kind = value
            .get("__type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(header_type)
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        // "com.amazonaws.glue#EntityNotFoundException" or "EntityNotFoundException:..."
        let kind = kind
            .rsplit('#')
            .next()
            .unwrap_or(&kind)
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let message = value
            .get("Message")
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let transient = status.is_server_error()
            || status.as_u16() == 429
            || matches!(
                kind.as_str(),
                "ThrottlingException"
                    | "InternalServiceException"
                    | "OperationTimeoutException"
                    | "ServiceUnavailableException"
            );
        Err(GlueFailure {
            kind,
            message: format!("{action} answered HTTP {}: {message}", status.as_u16()),
            transient,
        })
    }

    fn error(&self, what: &str, f: GlueFailure) -> IcebergError {
        let hint = match f.kind.as_str() {
            "AccessDeniedException" | "UnrecognizedClientException" | "Credentials" => {
                "; the credentials need glue:GetDatabase, glue:CreateDatabase, glue:GetTable, \
                 glue:CreateTable and glue:UpdateTable"
            }
            "Unreachable" => {
                "; check the endpoint (catalog.endpoint, AWS_ENDPOINT_URL_GLUE) and AWS_REGION"
            }
            _ => "",
        };
        IcebergError::catalog(
            self.describe(),
            format!("{what}: {} ({}){hint}", f.message, f.kind),
            f.transient,
        )
    }

    /// A quick call proving the endpoint and credentials work.
    pub(crate) async fn check(&self) -> Result<(), IcebergError> {
        self.call("GetDatabases", json!({ "MaxResults": 1 }))
            .await
            .map(|_| ())
            .map_err(|f| self.error("listing databases", f))
    }

    /// The Glue table, or `None` if it (or its database) does not exist.
    pub(crate) async fn get_table(
        &self,
        database: &str,
        name: &str,
    ) -> Result<Option<GlueTable>, IcebergError> {
        match self
            .call(
                "GetTable",
                json!({ "DatabaseName": database, "Name": name }),
            )
            .await
        {
            Ok(v) => {
                let table = &v["Table"];
                let params = &table["Parameters"];
                let kind = params
                    .get("table_type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !kind.eq_ignore_ascii_case("iceberg") {
                    return Err(IcebergError::catalog(
                        self.describe(),
                        format!(
                            "table {database}.{name} exists in Glue but is not an Iceberg table \
                             (table_type={kind:?}); drop it or set `namespace` to another \
                             database"
                        ),
                        false,
                    ));
                }
                Ok(Some(GlueTable {
                    metadata_location: params
                        .get("metadata_location")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    version_id: table
                        .get("VersionId")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }))
            }
            Err(f) if f.kind == "EntityNotFoundException" => Ok(None),
            Err(f) => Err(self.error(&format!("reading table {database}.{name}"), f)),
        }
    }

    /// Creates the database if it does not exist.
    pub(crate) async fn ensure_database(&self, database: &str) -> Result<(), IcebergError> {
        match self.call("GetDatabase", json!({ "Name": database })).await {
            Ok(_) => return Ok(()),
            Err(f) if f.kind == "EntityNotFoundException" => {}
            Err(f) => return Err(self.error(&format!("reading database {database}"), f)),
        }
        match self
            .call(
                "CreateDatabase",
                json!({ "DatabaseInput": {
                    "Name": database,
                    "Description": "Created by inlet",
                }}),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.kind == "AlreadyExistsException" => Ok(()),
            Err(f) => Err(self.error(&format!("creating database {database}"), f)),
        }
    }

    /// Creates the table pointing at `metadata_location`; `Ok(false)` if it already exists.
    pub(crate) async fn create_table(
        &self,
        database: &str,
        name: &str,
        input: TableInput<'_>,
    ) -> Result<bool, IcebergError> {
        match self
            .call(
                "CreateTable",
                json!({ "DatabaseName": database, "TableInput": input.to_json(name) }),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(f) if f.kind == "AlreadyExistsException" => Ok(false),
            Err(f) => Err(self.error(&format!("creating table {database}.{name}"), f)),
        }
    }

    /// Points the table at a new metadata file if its version is still `version_id`;
    /// `Ok(false)` if another writer changed it first.
    pub(crate) async fn update_table(
        &self,
        database: &str,
        name: &str,
        version_id: Option<&str>,
        input: TableInput<'_>,
    ) -> Result<bool, IcebergError> {
        let mut body = json!({ "DatabaseName": database, "TableInput": input.to_json(name) });
        if let (Some(v), Some(obj)) = (version_id, body.as_object_mut()) {
            obj.insert("VersionId".into(), Value::String(v.to_string()));
        }
        match self.call("UpdateTable", body).await {
            Ok(_) => Ok(true),
            Err(f) if f.kind == "ConcurrentModificationException" => Ok(false),
            Err(f) => Err(self.error(&format!("updating table {database}.{name}"), f)),
        }
    }
}

/// The parts of a Glue TableInput inlet sets.
pub(crate) struct TableInput<'a> {
    pub(crate) location: &'a str,
    pub(crate) metadata_location: &'a str,
    pub(crate) previous_metadata_location: Option<&'a str>,
    pub(crate) schema: &'a iceberg::spec::Schema,
    /// The table's `comment` property (the source table, when the names differ).
    pub(crate) description: Option<&'a str>,
}

impl TableInput<'_> {
    fn to_json(&self, name: &str) -> Value {
        let mut params = serde_json::Map::new();
        params.insert("table_type".into(), "ICEBERG".into());
        params.insert("metadata_location".into(), self.metadata_location.into());
        if let Some(p) = self.previous_metadata_location {
            params.insert("previous_metadata_location".into(), p.into());
        }
        // Columns let Athena and the Glue console show the schema without reading metadata.
        let columns: Vec<Value> = self
            .schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| {
                let mut c = json!({
                    "Name": f.name,
                    "Type": glue_type(&f.field_type),
                    "Parameters": {
                        "iceberg.field.id": f.id.to_string(),
                        "iceberg.field.optional": (!f.required).to_string(),
                        "iceberg.field.current": "true",
                    },
                });
                if let (Some(doc), Some(obj)) = (&f.doc, c.as_object_mut()) {
                    obj.insert("Comment".into(), doc.clone().into());
                }
                c
            })
            .collect();
        let mut input = json!({
            "Name": name,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": params,
            "StorageDescriptor": {
                "Location": self.location,
                "Columns": columns,
            },
        });
        if let (Some(d), Some(obj)) = (self.description, input.as_object_mut()) {
            obj.insert("Description".into(), d.into());
        }
        input
    }
}

/// The Hive type name Glue shows for an Iceberg type.
fn glue_type(t: &iceberg::spec::Type) -> String {
    use iceberg::spec::{PrimitiveType as P, Type};
    match t {
        Type::Primitive(p) => match p {
            P::Boolean => "boolean".into(),
            P::Int => "int".into(),
            P::Long => "bigint".into(),
            P::Float => "float".into(),
            P::Double => "double".into(),
            P::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            P::Date => "date".into(),
            P::Timestamp | P::Timestamptz | P::TimestampNs | P::TimestamptzNs => "timestamp".into(),
            P::Binary | P::Fixed(_) => "binary".into(),
            P::String | P::Uuid | P::Time => "string".into(),
        },
        Type::List(l) => format!("array<{}>", glue_type(&l.element_field.field_type)),
        Type::Map(m) => format!(
            "map<{},{}>",
            glue_type(&m.key_field.field_type),
            glue_type(&m.value_field.field_type)
        ),
        Type::Struct(s) => format!(
            "struct<{}>",
            s.fields()
                .iter()
                .map(|f| format!("{}:{}", f.name, glue_type(&f.field_type)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// A failed Glue call: the error type Glue named, its message, and whether to retry.
#[derive(Debug)]
struct GlueFailure {
    kind: String,
    message: String,
    transient: bool,
}

impl GlueFailure {
    fn local(message: String) -> Self {
        Self {
            kind: "Client".into(),
            message,
            transient: false,
        }
    }
}
