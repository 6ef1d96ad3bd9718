//! The Iceberg REST catalog client: the spec's config, namespace and table endpoints as JSON
//! over object_store's HTTP client (no SDK), authenticated with a bearer token, OAuth2 client
//! credentials (cached, refreshed before expiry and once on a 401) or AWS SigV4. A commit sends
//! the metadata builder's changes as `updates`, with requirements pinning the table version they
//! were built on; the server writes the metadata file and swaps it, so of two writers one wins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use iceberg::spec::{FormatVersion, TableMetadata};
use iceberg::{TableRequirement, TableUpdate};
use object_store::aws::{AmazonS3Builder, AwsAuthorizer};
use object_store::client::{HttpClient, HttpRequestBody};
use serde_json::{json, Value};
use tokio::sync::{Mutex, OnceCell};

use crate::catalog::TableIdent;
use crate::config::CatalogConfig;
use crate::IcebergError;

use crate::aws::Credentials;

/// A client of one REST catalog. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RestClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    /// Base URI without a trailing slash; requests go to `{uri}/v1/...`.
    uri: String,
    warehouse: Option<String>,
    auth: Auth,
    /// The `prefix` of `GET /v1/config` (fetched on first use), without slashes around it.
    prefix: OnceCell<String>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("uri", &self.inner.uri)
            .finish()
    }
}

enum Auth {
    Anonymous,
    Bearer {
        token: String,
        env: String,
    },
    OAuth2(OAuth2),
    SigV4 {
        credentials: Credentials,
        region: String,
        service: String,
    },
}

struct OAuth2 {
    token_uri: String,
    client_id: Option<String>,
    client_secret: String,
    scope: String,
    env: String,
    cached: Mutex<Option<Token>>,
}

struct Token {
    value: String,
    /// When to fetch a new one (`None`: the token does not expire).
    refresh_at: Option<Instant>,
}

/// A table as the catalog answers it.
pub(crate) struct Loaded {
    pub(crate) metadata_location: String,
    pub(crate) metadata: TableMetadata,
}

/// Why a request got no answer.
enum Failure {
    /// Not sent or not answered: connection refused, timeout, broken answer.
    Unreachable(String),
    /// Refused before sending (credentials, signing) or by the token endpoint.
    Auth { message: String, transient: bool },
}

/// The catalog's answer: status and JSON body (`Null` when empty or not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl RestClient {
    /// A client for `[target.catalog] kind = "rest"`; reads the secrets from the environment
    /// variables the config names. SigV4 uses the region and credentials of `s3`.
    pub(crate) fn new(config: &CatalogConfig, s3: &AmazonS3Builder) -> Result<Self, IcebergError> {
        let CatalogConfig::Rest {
            uri,
            warehouse,
            token_env,
            credential_env,
            oauth2_server_uri,
            scope,
            sigv4,
            signing_name,
        } = config
        else {
            return Err(bad("catalog.kind", "expected \"rest\"".into()));
        };
        let base = http_url("catalog.uri", uri)?;
        let base = base.trim_end_matches('/').to_string();
        let chosen = [token_env.is_some(), credential_env.is_some(), *sigv4]
            .iter()
            .filter(|x| **x)
            .count();
        if chosen > 1 {
            return Err(bad(
                "catalog.token_env",
                "set only one of catalog.token_env, catalog.credential_env and catalog.sigv4"
                    .into(),
            ));
        }
        if credential_env.is_none() {
            for (key, set) in [
                ("catalog.oauth2_server_uri", oauth2_server_uri.is_some()),
                ("catalog.scope", scope.is_some()),
            ] {
                if set {
                    return Err(bad(
                        key,
                        "is only used with catalog.credential_env (OAuth2 client credentials)"
                            .into(),
                    ));
                }
            }
        }
        if signing_name.is_some() && !sigv4 {
            return Err(bad(
                "catalog.signing_name",
                "is only used with catalog.sigv4 = true".into(),
            ));
        }
        let mut allow_http = base.starts_with("http://");
        let auth = if let Some(env) = token_env {
            let token = secret_env("catalog.token_env", env, "the catalog's bearer token")?;
            Auth::Bearer {
                token,
                env: env.clone(),
            }
        } else if let Some(env) = credential_env {
            let credential = secret_env(
                "catalog.credential_env",
                env,
                "OAuth2 client credentials as client_id:client_secret",
            )?;
            let (client_id, client_secret) = match credential.split_once(':') {
                Some((id, secret)) => (Some(id.to_string()), secret.to_string()),
                None => (None, credential),
            };
            if client_secret.is_empty() {
                return Err(bad(
                    "catalog.credential_env",
                    format!(
                        "environment variable {env} has an empty client secret; expected \
                         client_id:client_secret"
                    ),
                ));
            }
            let token_uri = match oauth2_server_uri {
                Some(u) => http_url("catalog.oauth2_server_uri", u)?,
                None => format!("{base}/v1/oauth/tokens"),
            };
            allow_http |= token_uri.starts_with("http://");
            let scope = scope.clone().unwrap_or_else(|| "catalog".into());
            if scope.trim().is_empty() {
                return Err(bad(
                    "catalog.scope",
                    "is empty; leave it out for the default \"catalog\"".into(),
                ));
            }
            Auth::OAuth2(OAuth2 {
                token_uri,
                client_id,
                client_secret,
                scope,
                env: env.clone(),
                cached: Mutex::new(None),
            })
        } else if *sigv4 {
            let region = crate::aws::region(s3);
            let credentials = crate::aws::credentials(
                s3,
                &format!("REST catalog {base}"),
                "check AWS_REGION and the other AWS_* environment variables (SigV4 signing, \
                 catalog.sigv4)",
            )?;
            let service = signing_name.clone().unwrap_or_else(|| "glue".into());
            if service.is_empty()
                || !service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad(
                    "catalog.signing_name",
                    format!("{service:?} is not a service name; use e.g. \"glue\" or \"s3tables\""),
                ));
            }
            Auth::SigV4 {
                credentials,
                region,
                service,
            }
        } else {
            Auth::Anonymous
        };
        let http = crate::aws::http_client(allow_http, &format!("REST catalog {base}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                uri: base,
                warehouse: warehouse.clone(),
                auth,
                prefix: OnceCell::new(),
            }),
        })
    }

    /// E.g. `REST catalog https://host/api/catalog` (the URI never has credentials).
    pub(crate) fn describe(&self) -> String {
        format!("REST catalog {}", self.inner.uri)
    }

    /// The `catalog` of errors, e.g. `REST https://host/api/catalog`.
    pub(crate) fn name(&self) -> String {
        format!("REST {}", self.inner.uri)
    }

    /// Fetches the catalog's config: proves the URI and the credentials work.
    pub(crate) async fn check(&self) -> Result<(), IcebergError> {
        self.prefix().await.map(|_| ())
    }

    /// The table, or `None` if it (or its namespace) does not exist.
    pub(crate) async fn load_table(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<Loaded>, IcebergError> {
        let what = format!("loading table {ident}");
        let url = self.table_url(ident, &what).await?;
        let answer = self.call(&what, Method::GET, &url, None).await?;
        match answer.status {
            s if s.is_success() => self.loaded(ident, &what, answer.body).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refused(&what, &answer)),
        }
    }

    /// Creates the namespace (and its parents) unless it exists.
    pub(crate) async fn ensure_namespace(&self, namespace: &str) -> Result<(), IcebergError> {
        let what = format!("reading namespace {namespace}");
        let prefix = self.prefix().await.map_err(|e| within(&what, e))?;
        let levels = levels(namespace);
        let url = self.url(prefix, &format!("namespaces/{}", encode_namespace(&levels)));
        let answer = self.call(&what, Method::GET, &url, None).await?;
        match answer.status {
            s if s.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.refused(&what, &answer)),
        }
        let url = self.url(prefix, "namespaces");
        for n in 1..=levels.len() {
            let what = format!("creating namespace {}", levels[..n].join("."));
            let body = json!({ "namespace": &levels[..n], "properties": {} });
            let answer = self.call(&what, Method::POST, &url, Some(body)).await?;
            if !answer.status.is_success() && answer.status != StatusCode::CONFLICT {
                return Err(self.refused(&what, &answer));
            }
        }
        Ok(())
    }

    /// Creates the table described by `metadata` (schema, spec, sort order, location,
    /// properties; format v2); `None` if it already exists. Fails if the catalog changed the
    /// schema's field ids or identifier fields, or the format version.
    pub(crate) async fn create_table(
        &self,
        ident: &TableIdent,
        metadata: &TableMetadata,
    ) -> Result<Option<Loaded>, IcebergError> {
        let what = format!("creating table {ident}");
        let prefix = self.prefix().await.map_err(|e| within(&what, e))?;
        let url = self.url(
            prefix,
            &format!(
                "namespaces/{}/tables",
                encode_namespace(&levels(&ident.namespace))
            ),
        );
        let mut properties = metadata.properties().clone();
        properties.insert("format-version".into(), "2".into());
        let body = json!({
            "name": ident.name,
            "location": metadata.location(),
            "schema": &**metadata.current_schema(),
            "partition-spec": &**metadata.default_partition_spec(),
            "write-order": &**metadata.default_sort_order(),
            "properties": properties,
            "stage-create": false,
        });
        let answer = self.call(&what, Method::POST, &url, Some(body)).await?;
        let created = match answer.status {
            s if s.is_success() => self.loaded(ident, &what, answer.body)?,
            StatusCode::CONFLICT => return Ok(None),
            _ => return Err(self.refused(&what, &answer)),
        };
        self.check_created(ident, metadata, &created.metadata)?;
        Ok(Some(created))
    }

    /// Commits `updates` on top of `base` (the table as last loaded or committed); `None` if
    /// the table changed since (another writer committed first).
    pub(crate) async fn commit_table(
        &self,
        ident: &TableIdent,
        base: &TableMetadata,
        updates: Vec<TableUpdate>,
    ) -> Result<Option<Loaded>, IcebergError> {
        let what = format!("committing to table {ident}");
        let url = self.table_url(ident, &what).await?;
        let body = json!({
            "identifier": { "namespace": levels(&ident.namespace), "name": ident.name },
            "requirements": requirements(base, &updates),
            "updates": updates,
        });
        let answer = self.call(&what, Method::POST, &url, Some(body)).await?;
        match answer.status {
            s if s.is_success() => self.loaded(ident, &what, answer.body).map(Some),
            StatusCode::CONFLICT => Ok(None),
            StatusCode::NOT_FOUND => Err(IcebergError::catalog(
                self.name(),
                format!(
                    "{what}: the catalog no longer has the table (HTTP 404: {}); it was dropped \
                     or renamed while inlet wrote it. Restart the task to create and reload it",
                    self.server_message(&answer)
                ),
                false,
            )),
            _ => Err(self.refused(&what, &answer)),
        }
    }

    /// The catalog's `prefix` (from `GET /v1/config`, fetched once).
    async fn prefix(&self) -> Result<&str, IcebergError> {
        self.inner
            .prefix
            .get_or_try_init(|| async {
                let what = "reading the catalog's config (GET /v1/config)";
                let mut url = format!("{}/v1/config", self.inner.uri);
                if let Some(w) = &self.inner.warehouse {
                    url.push_str("?warehouse=");
                    url.push_str(&encode(w));
                }
                let answer = self.call(what, Method::GET, &url, None).await?;
                if matches!(answer.status.as_u16(), 400 | 404) {
                    return Err(IcebergError::catalog(
                        self.name(),
                        format!(
                            "{what}: HTTP {}: {}; check catalog.uri (requests go to {}/v1/...) \
                             and catalog.warehouse (the catalog's warehouse name)",
                            answer.status.as_u16(),
                            self.server_message(&answer),
                            self.inner.uri
                        ),
                        false,
                    ));
                }
                if !answer.status.is_success() {
                    return Err(self.refused(what, &answer));
                }
                // Overrides win over defaults; inlet sets no properties of its own.
                let prop = |section: &str| {
                    answer.body[section]
                        .get("prefix")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                let prefix = prop("overrides").or_else(|| prop("defaults"));
                Ok(prefix.unwrap_or_default().trim_matches('/').to_string())
            })
            .await
            .map(String::as_str)
    }

    fn url(&self, prefix: &str, path: &str) -> String {
        if prefix.is_empty() {
            format!("{}/v1/{path}", self.inner.uri)
        } else {
            format!("{}/v1/{prefix}/{path}", self.inner.uri)
        }
    }

    async fn table_url(&self, ident: &TableIdent, what: &str) -> Result<String, IcebergError> {
        let prefix = self.prefix().await.map_err(|e| within(what, e))?;
        Ok(self.url(
            prefix,
            &format!(
                "namespaces/{}/tables/{}",
                encode_namespace(&levels(&ident.namespace)),
                encode(&ident.name)
            ),
        ))
    }

    /// A LoadTableResult / CommitTableResponse.
    fn loaded(&self, ident: &TableIdent, what: &str, body: Value) -> Result<Loaded, IcebergError> {
        let Some(location) = body
            .get("metadata-location")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(IcebergError::catalog(
                self.name(),
                format!(
                    "{what}: the answer has no metadata-location (a staged table?); inlet needs \
                     a committed table"
                ),
                false,
            ));
        };
        let metadata = serde_json::from_value::<TableMetadata>(
            body.get("metadata").cloned().unwrap_or(Value::Null),
        )
        .map_err(|e| {
            IcebergError::metadata(
                ident.to_string(),
                format!("the catalog's answer to {what} has invalid table metadata"),
                e,
            )
        })?;
        Ok(Loaded {
            metadata_location: location,
            metadata,
        })
    }

    fn check_created(
        &self,
        ident: &TableIdent,
        ours: &TableMetadata,
        theirs: &TableMetadata,
    ) -> Result<(), IcebergError> {
        created_as_requested(ours, theirs).map_err(|message| {
            IcebergError::catalog(
                self.name(),
                format!(
                    "creating table {ident}: {message}; inlet cannot write this table. Drop it in \
                     the catalog, and report the catalog's behaviour"
                ),
                false,
            )
        })
    }

    /// Sends a request (with a fresh OAuth2 token once more after a 401).
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Answer, IcebergError> {
        let payload = match body {
            Some(v) => Some(Bytes::from(serde_json::to_vec(&v).map_err(|e| {
                IcebergError::catalog(self.name(), format!("{what}: cannot encode: {e}"), false)
            })?)),
            None => None,
        };
        let mut rejected: Option<String> = None;
        loop {
            let sent = self
                .send(method.clone(), url, payload.clone(), rejected.as_deref())
                .await;
            let (answer, token) = match sent {
                Ok(x) => x,
                Err(Failure::Unreachable(e)) => {
                    return Err(IcebergError::catalog(
                        self.name(),
                        self.redact(format!(
                            "{what}: no answer from {url}: {e}; check that the catalog runs and \
                             that catalog.uri is right (inlet retries)"
                        )),
                        true,
                    ))
                }
                Err(Failure::Auth { message, transient }) => {
                    return Err(IcebergError::catalog(
                        self.name(),
                        self.redact(format!("{what}: {message}")),
                        transient,
                    ))
                }
            };
            match token {
                // The token may have been revoked or expired early: fetch a new one, once.
                Some(t) if answer.status == StatusCode::UNAUTHORIZED && rejected.is_none() => {
                    rejected = Some(t);
                }
                _ => return Ok(answer),
            }
        }
    }

    /// One request; also returns the OAuth2 token it carried.
    async fn send(
        &self,
        method: Method,
        url: &str,
        payload: Option<Bytes>,
        rejected_token: Option<&str>,
    ) -> Result<(Answer, Option<String>), Failure> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(url)
            .header("accept", "application/json");
        if payload.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let mut token = None;
        match &self.inner.auth {
            Auth::Anonymous | Auth::SigV4 { .. } => {}
            Auth::Bearer { token: t, .. } => {
                builder = builder.header("authorization", format!("Bearer {t}"));
            }
            Auth::OAuth2(o) => {
                let t = self.oauth_token(o, rejected_token).await?;
                builder = builder.header("authorization", format!("Bearer {t}"));
                token = Some(t);
            }
        }
        let mut request = builder
            .body(HttpRequestBody::from(payload.unwrap_or_default()))
            .map_err(|e| Failure::Auth {
                message: format!("cannot build the request: {e}"),
                transient: false,
            })?;
        if let Auth::SigV4 {
            credentials,
            region,
            service,
        } = &self.inner.auth
        {
            let credential = credentials
                .get_credential()
                .await
                .map_err(|e| Failure::Auth {
                    message: format!(
                    "no AWS credentials to sign with (catalog.sigv4): {e}; set AWS_ACCESS_KEY_ID \
                     and AWS_SECRET_ACCESS_KEY, or run with an instance/task role"
                ),
                    transient: false,
                })?;
            AwsAuthorizer::new(&credential, service, region)
                .try_authorize(&mut request, None)
                .map_err(|e| Failure::Auth {
                    message: format!("cannot sign the request: {e}"),
                    transient: false,
                })?;
        }
        let response = self
            .inner
            .http
            .execute(request)
            .await
            .map_err(|e| Failure::Unreachable(causes(&e)))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| Failure::Unreachable(format!("reading the answer: {}", causes(&e))))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((Answer { status, body }, token))
    }

    /// A valid OAuth2 access token: the cached one unless it is due for refresh or is
    /// `rejected` (answered 401), else a new one from the token endpoint.
    async fn oauth_token(&self, o: &OAuth2, rejected: Option<&str>) -> Result<String, Failure> {
        let mut cached = o.cached.lock().await;
        if let Some(t) = cached.as_ref() {
            let fresh = t.refresh_at.is_none_or(|at| Instant::now() < at);
            if fresh && rejected != Some(t.value.as_str()) {
                return Ok(t.value.clone());
            }
        }
        let hint = format!(
            "check the client id and secret in ${} (catalog.credential_env), catalog.scope and \
             catalog.oauth2_server_uri",
            o.env
        );
        // The serializer is not Send: it must be gone before the request is awaited.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(id) = &o.client_id {
                form.append_pair("client_id", id);
            }
            form.append_pair("client_secret", &o.client_secret);
            form.append_pair("scope", &o.scope);
            form.finish()
        };
        let request = http::Request::builder()
            .method(Method::POST)
            .uri(&o.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(HttpRequestBody::from(body))
            .map_err(|e| Failure::Auth {
                message: format!("cannot build the OAuth2 token request: {e}"),
                transient: false,
            })?;
        let started = Instant::now();
        let response = self.inner.http.execute(request).await.map_err(|e| {
            Failure::Unreachable(format!(
                "OAuth2 token endpoint {}: {}",
                o.token_uri,
                causes(&e)
            ))
        })?;
        let status = response.status();
        let bytes = response.into_body().bytes().await.map_err(|e| {
            Failure::Unreachable(format!(
                "OAuth2 token endpoint {}: {}",
                o.token_uri,
                causes(&e)
            ))
        })?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let access = body.get("access_token").and_then(Value::as_str);
        let Some(access) = access.filter(|_| status.is_success()) else {
            // RFC 6749 5.2 errors: {"error": "invalid_client", "error_description": "..."}.
            let error = match &body["error"] {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
            let description = body
                .get("error_description")
                .or_else(|| body["error"].get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(Failure::Auth {
                message: format!(
                    "the OAuth2 token endpoint {} answered HTTP {} {error}: {description}; {hint}",
                    o.token_uri,
                    status.as_u16()
                ),
                transient: is_transient(status),
            });
        };
        // Refresh ahead of expiry: a fifth of the lifetime early, at most a minute.
        let refresh_at = body
            .get("expires_in")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| {
                let life = Duration::from_secs_f64(s.min(1e9));
                started + life - (life / 5).min(Duration::from_secs(60))
            });
        *cached = Some(Token {
            value: access.to_string(),
            refresh_at,
        });
        Ok(access.to_string())
    }

    /// The server's `error.message` (and `error.type`), without secrets.
    fn server_message(&self, answer: &Answer) -> String {
        let error = &answer.body["error"];
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        let text = match error.get("type").and_then(Value::as_str) {
            Some(kind) => format!("{kind}: {message}"),
            None => message.to_string(),
        };
        self.redact(text)
    }

    /// An error for a refusal: what failed, the server's message, and what to fix.
    fn refused(&self, what: &str, answer: &Answer) -> IcebergError {
        let status = answer.status;
        let hint = match status.as_u16() {
            401 | 419 => self.credentials_hint(),
            403 if matches!(self.inner.auth, Auth::SigV4 { .. }) => format!(
                "the signature was refused, or the credentials may not do this; {}, and that \
                 they may create namespaces and tables and update table metadata",
                self.credentials_hint()
            ),
            403 => format!(
                "the credentials are valid but may not do this: grant them the catalog's \
                 privileges to create namespaces and tables and to update table metadata ({})",
                self.credentials_hint()
            ),
            404 => format!(
                "check catalog.uri (requests go to {}/v1/...) and catalog.warehouse",
                self.inner.uri
            ),
            400 | 406 | 422 => "the catalog rejected inlet's request; report this with the \
                                catalog's name and version"
                .into(),
            _ if is_transient(status) => "the catalog failed or is overloaded; inlet retries, and \
                                          a restarted task resumes from the table's committed \
                                          position"
                .into(),
            _ => "check the catalog's logs".into(),
        };
        IcebergError::catalog(
            self.name(),
            format!(
                "{what}: HTTP {}: {}; {hint}",
                status.as_u16(),
                self.server_message(answer)
            ),
            is_transient(status),
        )
    }

    fn credentials_hint(&self) -> String {
        match &self.inner.auth {
            Auth::Anonymous => "the catalog wants credentials: set catalog.token_env, \
                                catalog.credential_env or catalog.sigv4"
                .into(),
            Auth::Bearer { env, .. } => {
                format!("check the token in ${env} (catalog.token_env)")
            }
            Auth::OAuth2(o) => format!(
                "check the client id and secret in ${} (catalog.credential_env) and catalog.scope",
                o.env
            ),
            Auth::SigV4 {
                region, service, ..
            } => format!(
                "check the AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
                 AWS_SESSION_TOKEN), the region ({region}, AWS_REGION) and catalog.signing_name \
                 ({service})"
            ),
        }
    }

    /// `text` with every secret this client holds replaced by `***`.
    fn redact(&self, mut text: String) -> String {
        let secrets: Vec<&str> = match &self.inner.auth {
            Auth::Bearer { token, .. } => vec![token],
            Auth::OAuth2(o) => vec![&o.client_secret],
            Auth::Anonymous | Auth::SigV4 { .. } => Vec::new(),
        };
        for s in secrets {
            if s.len() >= 4 {
                text = text.replace(s, "***");
            }
        }
        text
    }
}

/// Whether the catalog created the table as asked: format v2, the same field ids (a catalog
/// may assign fresh ids; inlet's are assigned in order, so they match, and the files inlet
/// writes carry them) and the same identifier fields (the upsert key).
fn created_as_requested(ours: &TableMetadata, theirs: &TableMetadata) -> Result<(), String> {
    use iceberg::spec::Type;
    if theirs.format_version() != FormatVersion::V2 {
        return Err(format!(
            "the catalog created a format {} table instead of the requested v2",
            theirs.format_version()
        ));
    }
    let (a, b) = (ours.current_schema(), theirs.current_schema());
    for (id, field) in a.field_id_to_fields() {
        let same = b.field_by_id(*id).is_some_and(|f| {
            f.name == field.name
                && f.required == field.required
                && match (&*f.field_type, &*field.field_type) {
                    (Type::Primitive(x), Type::Primitive(y)) => x == y,
                    (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y),
                }
        });
        if !same {
            return Err(format!(
                "the catalog renumbered the schema's fields (field id {id}, {:?}, differs)",
                field.name
            ));
        }
    }
    if a.field_id_to_fields().len() != b.field_id_to_fields().len() {
        return Err("the catalog's schema has other fields than requested".into());
    }
    let ids = |s: &iceberg::spec::Schema| {
        let mut v: Vec<i32> = s.identifier_field_ids().collect();
        v.sort_unstable();
        v
    };
    if ids(a) != ids(b) {
        return Err(format!(
            "the catalog changed the identifier fields (primary key) from {:?} to {:?}",
            ids(a),
            ids(b)
        ));
    }
    Ok(())
}

/// `e` as part of `what` (a table operation that failed in an earlier step, such as reading
/// the catalog's config).
fn within(what: &str, e: IcebergError) -> IcebergError {
    match e {
        IcebergError::Catalog {
            catalog,
            message,
            transient,
        } => IcebergError::Catalog {
            catalog,
            message: format!("{what}: {message}"),
            transient,
        },
        other => other,
    }
}

/// An error and its causes, e.g. `error sending request: ... Connection refused`.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn bad(key: &str, message: String) -> IcebergError {
    IcebergError::Config {
        key: key.into(),
        message,
    }
}

/// An http(s) URL without credentials, query or fragment.
fn http_url(key: &str, text: &str) -> Result<String, IcebergError> {
    let parsed = url::Url::parse(text.trim()).map_err(|e| {
        bad(
            key,
            format!(
                "{text:?} is not a URL ({e}); use e.g. https://catalog.example.com/api/catalog"
            ),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(
            key,
            format!("{text:?} is not an http:// or https:// URL"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            key,
            "credentials in the URL are not supported; use catalog.token_env or \
             catalog.credential_env"
                .into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(
            key,
            "the URL must not have a query (?...) or fragment (#...)".into(),
        ));
    }
    Ok(parsed.as_str().to_string())
}

/// The value of environment variable `env`, which must hold a secret.
fn secret_env(key: &str, env: &str, holds: &str) -> Result<String, IcebergError> {
    if env.is_empty() {
        return Err(bad(
            key,
            format!("name the environment variable that holds {holds}"),
        ));
    }
    match std::env::var(env) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Err(bad(key, format!("environment variable {env} is empty"))),
        Err(std::env::VarError::NotPresent) => Err(bad(
            key,
            format!("environment variable {env} is not set (it must hold {holds})"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(bad(
            key,
            format!("environment variable {env} is not valid UTF-8"),
        )),
    }
}

/// 500/502/503/504 (the commit may or may not have applied: a restarted task reloads the
/// table and resumes from what it holds), 408 and 429.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// A namespace's levels: `a.b` is the nested namespace `a` → `b`.
fn levels(namespace: &str) -> Vec<&str> {
    namespace.split('.').collect()
}

/// A multi-level namespace as one path segment: levels joined by the unit separator (0x1F),
/// percent-encoded (REST spec).
fn encode_namespace(levels: &[&str]) -> String {
    levels
        .iter()
        .map(|l| encode(l))
        .collect::<Vec<_>>()
        .join("%1F")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the server must check before applying `updates` to the table: that it is still the
/// table (uuid) and version (`main`'s snapshot) they were built on, plus the schema and spec
/// ids the updates assume, as Iceberg's own UpdateRequirements derives them.
pub(crate) fn requirements(base: &TableMetadata, updates: &[TableUpdate]) -> Vec<TableRequirement> {
    let mut out = vec![
        TableRequirement::UuidMatch { uuid: base.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: "main".into(),
            snapshot_id: base.snapshot_for_ref("main").map(|s| s.snapshot_id()),
        },
    ];
    let any = |f: fn(&TableUpdate) -> bool| updates.iter().any(f);
    if any(|u| {
        matches!(
            u,
            TableUpdate::AddSchema { .. } | TableUpdate::SetCurrentSchema { .. }
        )
    }) {
        out.push(TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: base.current_schema_id(),
        });
    }
    if any(|u| matches!(u, TableUpdate::AddSchema { .. })) {
        out.push(TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: base.last_column_id(),
        });
    }
    if any(|u| matches!(u, TableUpdate::AddSpec { .. })) {
        out.push(TableRequirement::LastAssignedPartitionIdMatch {
            last_assigned_partition_id: base.last_partition_id(),
        });
    }
    if any(|u| {
        matches!(
            u,
            TableUpdate::AddSpec { .. } | TableUpdate::SetDefaultSpec { .. }
        )
    }) {
        out.push(TableRequirement::DefaultSpecIdMatch {
            default_spec_id: base.default_partition_spec_id(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_and_namespaces() {
        assert_eq!(encode("orders"), "orders");
        assert_eq!(encode("a b/c%é"), "a%20b%2Fc%25%C3%A9");
        assert_eq!(encode_namespace(&levels("public")), "public");
        assert_eq!(encode_namespace(&levels("a.b c")), "a%1Fb%20c");
    }

    #[test]
    fn classifies_statuses() {
        for s in [500, 502, 503, 504, 429] {
            assert!(is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    fn metadata(fields: &[(i32, &str)], key: &[i32]) -> TableMetadata {
        use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
        let schema = Schema::builder()
            .with_fields(fields.iter().map(|(id, name)| {
                NestedField::required(*id, *name, Type::Primitive(PrimitiveType::Long)).into()
            }))
            .with_identifier_field_ids(key.iter().copied())
            .build()
            .unwrap();
        iceberg::spec::TableMetadataBuilder::new(
            schema,
            iceberg::spec::PartitionSpec::unpartition_spec(),
            iceberg::spec::SortOrder::unsorted_order(),
            "file:///wh/ns/t".into(),
            FormatVersion::V2,
            Default::default(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    #[test]
    fn a_created_table_must_keep_field_ids_and_key() {
        let ours = metadata(&[(1, "id"), (2, "v")], &[1]);
        assert!(created_as_requested(&ours, &ours).is_ok());
        let swapped = metadata(&[(1, "v"), (2, "id")], &[2]);
        let err = created_as_requested(&ours, &swapped).unwrap_err();
        assert!(err.contains("renumbered"), "{err}");
        let other_key = metadata(&[(1, "id"), (2, "v")], &[1, 2]);
        let err = created_as_requested(&ours, &other_key).unwrap_err();
        assert!(err.contains("identifier fields"), "{err}");
        let more = metadata(&[(1, "id"), (2, "v"), (3, "w")], &[1]);
        assert!(created_as_requested(&ours, &more).is_err());
    }

    #[test]
    fn requirements_pin_the_version_and_what_the_updates_assume() {
        let base = metadata(&[(1, "id"), (2, "v")], &[1]);
        let kinds = |updates: &[TableUpdate]| -> Vec<String> {
            requirements(&base, updates)
                .iter()
                .map(|r| serde_json::to_value(r).unwrap()["type"].to_string())
                .collect()
        };
        let plain = kinds(&[TableUpdate::RemoveSnapshots {
            snapshot_ids: vec![1],
        }]);
        assert_eq!(
            plain,
            ["\"assert-table-uuid\"", "\"assert-ref-snapshot-id\""]
        );
        let r = requirements(&base, &[]);
        assert_eq!(
            serde_json::to_value(&r[1]).unwrap(),
            json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null})
        );
        let schema = kinds(&[
            TableUpdate::AddSchema {
                schema: (**base.current_schema()).clone(),
            },
            TableUpdate::SetCurrentSchema { schema_id: -1 },
        ]);
        assert_eq!(
            schema[2..],
            [
                "\"assert-current-schema-id\"",
                "\"assert-last-assigned-field-id\""
            ]
        );
        let spec = kinds(&[TableUpdate::SetDefaultSpec { spec_id: 0 }]);
        assert_eq!(spec[2..], ["\"assert-default-spec-id\""]);
    }

    #[test]
    fn validates_urls() {
        assert!(http_url("k", "https://h/api").is_ok());
        assert!(http_url("k", "ftp://h").is_err());
        let err = http_url("k", "https://u:secret@h/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret@"), "{err}");
        assert!(http_url("k", "https://h/?token=x").is_err());
    }
}
