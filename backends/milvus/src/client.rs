use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::MilvusError;
use crate::expr::{self, Cond, Filter, Scope};
use crate::proto::common::{
    ConsistencyLevel, DslType, KeyValuePair, PlaceholderGroup, PlaceholderType, PlaceholderValue,
    Status,
};
use crate::proto::milvus::milvus_service_client::MilvusServiceClient;
use crate::proto::milvus::search_request::SearchInput;
use crate::proto::milvus::{
    CreateCollectionRequest, CreateIndexRequest, DeleteRequest, DescribeCollectionRequest,
    DescribeIndexRequest, FlushRequest, GetLoadingProgressRequest, HasCollectionRequest,
    LoadCollectionRequest, QueryRequest, SearchRequest, UpsertRequest,
};
use crate::proto::schema::{
    ArrayArray, CollectionSchema, DataType, FieldData, FloatArray, JsonArray, LongArray,
    ScalarField, SearchResultData, StringArray, VectorField, field_data, i_ds, scalar_field,
    vector_field,
};
use crate::schema::{self, IndexSpec};

/// Most hits one search may ask for (Milvus's `topk` limit).
const MAX_TOP_K: usize = 16_384;
/// Rows per `Upsert` request (~1.6 MB with 384-d vectors; docs/milvus.md §4).
const UPSERT_BATCH: usize = 1_000;
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach the server beyond its URI.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `user:password` or an API key; sent base64-encoded in `authorization`, as pymilvus does.
    pub token: Option<String>,
    /// PEM CA bundle that signs an `https://` server's certificate (required for https: this
    /// client carries no built-in roots).
    pub ca_file: Option<PathBuf>,
    /// TLS server name, when it differs from the URI's host.
    pub server_name: Option<String>,
    /// Database (`db_name` on each request); empty = the server's default.
    pub db_name: String,
    /// Deadline of each call.
    pub timeout: Duration,
}

/// The token redacted (a review: it was printed whole by `{:?}`).
impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .field("db_name", &self.db_name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            token: None,
            ca_file: None,
            server_name: None,
            db_name: String::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Adds the `authorization` header to every call.
#[derive(Clone)]
pub struct Auth(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Grpc = MilvusServiceClient<InterceptedService<Channel, Auth>>;

/// A connection to a Milvus server (Lite or a cluster). Cheap to clone.
#[derive(Clone)]
pub struct MilvusClient {
    grpc: Grpc,
    db_name: String,
}

/// One chunk as stored in the chunk collection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkRow {
    pub chunk_id: String,
    pub doc_key: String,
    pub source: String,
    pub uri: String,
    pub title: String,
    pub heading: String,
    pub text: String,
    pub dense: Vec<f32>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub ordinal: i64,
    pub span: Range<i64>,
    /// What the caller keeps per chunk beyond the searchable fields (Docent: the document's
    /// version, content hash, chunk count, ACL, modification time; the chunk's hash, page and
    /// heading path). Stored as JSON, returned as is.
    pub meta: serde_json::Value,
}

/// Whether `row` fits the chunk collection's field limits; else why not. Milvus refuses a
/// whole upsert for one row that does not fit, so a writer checks each document first (a row
/// it could never write would fail every commit).
pub fn fits(row: &ChunkRow) -> Result<(), String> {
    let fields = [
        ("chunk id", row.chunk_id.len(), schema::CHUNK_ID_MAX_BYTES),
        ("document key", row.doc_key.len(), schema::DOC_KEY_MAX_BYTES),
        ("source", row.source.len(), schema::SOURCE_MAX_BYTES),
        ("uri", row.uri.len(), schema::URI_MAX_BYTES),
        ("title", row.title.len(), schema::TITLE_MAX_BYTES),
        ("heading", row.heading.len(), schema::HEADING_MAX_BYTES),
        ("text", row.text.len(), schema::TEXT_MAX_BYTES),
    ];
    for (what, len, max) in fields {
        if len > max {
            return Err(format!(
                "its {what} is {len} bytes; the Milvus collection holds at most {max}"
            ));
        }
    }
    // The JSON fields as they are written (a document with many or long attributes, or a
    // long heading path in `meta`, would otherwise fail every commit it is in).
    for (what, len) in [
        (
            "attributes",
            expr::attributes_json(&row.attributes).to_string().len(),
        ),
        ("metadata", row.meta.to_string().len()),
    ] {
        if len > schema::JSON_MAX_BYTES {
            return Err(format!(
                "its {what} are {len} bytes of JSON; the Milvus collection holds at most {}",
                schema::JSON_MAX_BYTES
            ));
        }
    }
    // Deletes and trims name these in filter expressions: one that no expression can carry
    // could be written but never deleted again.
    for (what, value) in [
        ("document key", &row.doc_key),
        ("source", &row.source),
        ("chunk id", &row.chunk_id),
    ] {
        if let Err(e) = crate::expr::quote(what, value) {
            return Err(format!("{e}; Milvus filter expressions cannot name it"));
        }
    }
    for (what, list) in [("allow", &row.allow), ("deny", &row.deny)] {
        if list.len() > schema::PRINCIPALS_MAX {
            return Err(format!(
                "its ACL {what}s {} principals; the Milvus collection holds at most {}",
                list.len(),
                schema::PRINCIPALS_MAX
            ));
        }
        if let Some(p) = list.iter().find(|p| p.len() > schema::PRINCIPAL_MAX_BYTES) {
            return Err(format!(
                "an ACL {what} principal is {} bytes; the Milvus collection holds at most {}",
                p.len(),
                schema::PRINCIPAL_MAX_BYTES
            ));
        }
    }
    Ok(())
}

/// One search hit, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub chunk_id: String,
    pub doc_key: String,
    /// Dense: cosine similarity. BM25: the (positive) BM25 score.
    pub score: f32,
}

/// The chunk collection (and its `<name>_state` companion), created or checked and loaded.
#[derive(Clone)]
pub struct ChunkCollection {
    client: MilvusClient,
    name: String,
    state: String,
    dim: usize,
}

/// One search request: which field, how scored, the query value, and what comes back.
struct Search<'a> {
    anns_field: &'static str,
    metric: &'static str,
    placeholder_type: PlaceholderType,
    value: Vec<u8>,
    scope: &'a Scope,
    filter: Option<&'a Filter>,
    k: usize,
    output_fields: Vec<String>,
}

/// Turns a response's `status` into an error: Milvus answers gRPC OK and reports failures there.
fn check(method: &'static str, status: Option<&Status>) -> Result<(), MilvusError> {
    let Some(s) = status else { return Ok(()) };
    // `code` is the current field; `error_code` only on old servers (0 = Success).
    #[allow(deprecated)]
    let code = if s.code != 0 { s.code } else { s.error_code };
    if code == 0 {
        return Ok(());
    }
    Err(MilvusError::Server {
        method,
        code,
        reason: s.reason.clone(),
    })
}

fn rpc(method: &'static str) -> impl FnOnce(tonic::Status) -> MilvusError {
    move |status| MilvusError::Rpc { method, status }
}

fn protocol(method: &'static str, reason: impl Into<String>) -> MilvusError {
    MilvusError::Protocol {
        method,
        reason: reason.into(),
    }
}

fn kv(key: &str, value: impl Into<String>) -> KeyValuePair {
    KeyValuePair {
        key: key.to_string(),
        value: value.into(),
    }
}

impl MilvusClient {
    /// Connects to `uri` (`http://host:port`: plaintext h2c, as for Lite; `https://`: TLS, which
    /// needs [`ConnectOptions::ca_file`]).
    pub async fn connect(uri: &str, token: Option<String>) -> Result<Self, MilvusError> {
        Self::connect_with(
            uri,
            ConnectOptions {
                token,
                ..ConnectOptions::default()
            },
        )
        .await
    }

    pub async fn connect_with(uri: &str, options: ConnectOptions) -> Result<Self, MilvusError> {
        let invalid = |reason: &str| MilvusError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let https = if uri.starts_with("https://") {
            true
        } else if uri.starts_with("http://") {
            false
        } else {
            return Err(invalid("expected http://host:port or https://host:port"));
        };
        let mut endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|e| invalid(&e.to_string()))?
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true);
        if https {
            let Some(ca_file) = &options.ca_file else {
                return Err(invalid("https needs a CA file (ConnectOptions::ca_file)"));
            };
            let pem = std::fs::read(ca_file).map_err(|source| MilvusError::CaFile {
                path: ca_file.display().to_string(),
                source,
            })?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(name) = &options.server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid(&e.to_string()))?;
        }
        let auth = match &options.token {
            Some(token) => Some(
                MetadataValue::try_from(BASE64.encode(token))
                    .map_err(|_| invalid("the token cannot be sent as a header"))?,
            ),
            None => None,
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| MilvusError::Connect {
                uri: uri.to_string(),
                source,
            })?;
        let grpc = MilvusServiceClient::with_interceptor(channel, Auth(auth))
            // Search results with text output and 1,000-row upserts exceed the 4 MB default.
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        Ok(Self {
            grpc,
            db_name: options.db_name,
        })
    }

    /// Opens the chunk collection `name` with `dim`-dimensional dense vectors and its
    /// `<name>_state` companion: created with their indexes when missing, checked when present
    /// (another dimension or a foreign schema is [`MilvusError::IncompatibleCollection`]), and
    /// loaded. Idempotent.
    pub async fn ensure_collection(
        &self,
        name: &str,
        dim: usize,
    ) -> Result<ChunkCollection, MilvusError> {
        if dim == 0 {
            return Err(MilvusError::IncompatibleCollection {
                collection: name.to_string(),
                reason: "dimension 0".to_string(),
            });
        }
        let state = format!("{name}{}", schema::STATE_SUFFIX);
        self.ensure(&schema::chunk_schema(name, dim), &schema::chunk_indexes())
            .await?;
        self.ensure(&schema::state_schema(&state), &schema::state_indexes())
            .await?;
        Ok(ChunkCollection {
            client: self.clone(),
            name: name.to_string(),
            state,
            dim,
        })
    }

    /// The schema of the collection `name`; `None` when there is none.
    async fn schema_of(&self, name: &str) -> Result<Option<CollectionSchema>, MilvusError> {
        let mut grpc = self.grpc.clone();
        let has = grpc
            .has_collection(HasCollectionRequest {
                db_name: self.db_name.clone(),
                collection_name: name.to_string(),
                ..Default::default()
            })
            .await
            .map_err(rpc("HasCollection"))?
            .into_inner();
        check("HasCollection", has.status.as_ref())?;
        if !has.value {
            return Ok(None);
        }
        let desc = grpc
            .describe_collection(DescribeCollectionRequest {
                db_name: self.db_name.clone(),
                collection_name: name.to_string(),
                ..Default::default()
            })
            .await
            .map_err(rpc("DescribeCollection"))?
            .into_inner();
        check("DescribeCollection", desc.status.as_ref())?;
        desc.schema
            .map(Some)
            .ok_or_else(|| protocol("DescribeCollection", "no schema"))
    }

    /// The chunk collection `name` as it is, its dimension read from its schema; `None` when
    /// there is none. Creates nothing: for reading a collection another model wrote.
    pub async fn existing_collection(
        &self,
        name: &str,
    ) -> Result<Option<ChunkCollection>, MilvusError> {
        let Some(existing) = self.schema_of(name).await? else {
            return Ok(None);
        };
        let dim = existing
            .fields
            .iter()
            .find(|f| f.name == "dense")
            .and_then(|f| f.type_params.iter().find(|p| p.key == "dim"))
            .and_then(|p| p.value.parse::<usize>().ok())
            .ok_or_else(|| MilvusError::IncompatibleCollection {
                collection: name.to_string(),
                reason: "no dense vector field with a dimension".to_string(),
            })?;
        if let Some(reason) = schema::incompatibility(&schema::chunk_schema(name, dim), &existing) {
            return Err(MilvusError::IncompatibleCollection {
                collection: name.to_string(),
                reason,
            });
        }
        Ok(Some(ChunkCollection {
            client: self.clone(),
            name: name.to_string(),
            state: format!("{name}{}", schema::STATE_SUFFIX),
            dim,
        }))
    }

    async fn ensure(
        &self,
        wanted: &CollectionSchema,
        indexes: &[IndexSpec],
    ) -> Result<(), MilvusError> {
        let name = wanted.name.as_str();
        let mut grpc = self.grpc.clone();
        if let Some(existing) = self.schema_of(name).await? {
            if let Some(reason) = schema::incompatibility(wanted, &existing) {
                return Err(MilvusError::IncompatibleCollection {
                    collection: name.to_string(),
                    reason,
                });
            }
        } else {
            let resp = grpc
                .create_collection(CreateCollectionRequest {
                    db_name: self.db_name.clone(),
                    collection_name: name.to_string(),
                    schema: wanted.encode_to_vec(),
                    consistency_level: ConsistencyLevel::Strong as i32,
                    ..Default::default()
                })
                .await
                .map_err(rpc("CreateCollection"))?
                .into_inner();
            check("CreateCollection", Some(&resp))?;
        }
        // Also when the collection existed: a crash between create and index leaves it without.
        for index in indexes {
            let desc = grpc
                .describe_index(DescribeIndexRequest {
                    db_name: self.db_name.clone(),
                    collection_name: name.to_string(),
                    field_name: index.field.to_string(),
                    ..Default::default()
                })
                .await
                .map_err(rpc("DescribeIndex"))?
                .into_inner();
            // "index not found" is an error status; any existing index on the field is kept (a
            // cluster deployment may have chosen HNSW).
            let present = check("DescribeIndex", desc.status.as_ref()).is_ok()
                && desc
                    .index_descriptions
                    .iter()
                    .any(|d| d.field_name == index.field);
            if present {
                continue;
            }
            let resp = grpc
                .create_index(CreateIndexRequest {
                    db_name: self.db_name.clone(),
                    collection_name: name.to_string(),
                    field_name: index.field.to_string(),
                    index_name: format!("{}_idx", index.field),
                    extra_params: index.params.clone(),
                    ..Default::default()
                })
                .await
                .map_err(rpc("CreateIndex"))?
                .into_inner();
            check("CreateIndex", Some(&resp))?;
        }
        self.load(name).await
    }

    /// `LoadCollection` (idempotent; needed after a Lite restart) and wait until loaded.
    async fn load(&self, name: &str) -> Result<(), MilvusError> {
        let mut grpc = self.grpc.clone();
        let resp = grpc
            .load_collection(LoadCollectionRequest {
                db_name: self.db_name.clone(),
                collection_name: name.to_string(),
                ..Default::default()
            })
            .await
            .map_err(rpc("LoadCollection"))?
            .into_inner();
        check("LoadCollection", Some(&resp))?;
        let start = Instant::now();
        loop {
            let progress = grpc
                .get_loading_progress(GetLoadingProgressRequest {
                    db_name: self.db_name.clone(),
                    collection_name: name.to_string(),
                    ..Default::default()
                })
                .await
                .map_err(rpc("GetLoadingProgress"))?
                .into_inner();
            check("GetLoadingProgress", progress.status.as_ref())?;
            if progress.progress >= 100 {
                return Ok(());
            }
            if start.elapsed() > LOAD_TIMEOUT {
                return Err(MilvusError::LoadTimeout {
                    collection: name.to_string(),
                    secs: LOAD_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn strings(name: &str, data: Vec<String>) -> FieldData {
    scalars(
        name,
        DataType::VarChar,
        scalar_field::Data::StringData(StringArray { data }),
    )
}

fn longs(name: &str, data: Vec<i64>) -> FieldData {
    scalars(
        name,
        DataType::Int64,
        scalar_field::Data::LongData(LongArray { data }),
    )
}

fn scalars(name: &str, ty: DataType, data: scalar_field::Data) -> FieldData {
    FieldData {
        r#type: ty as i32,
        field_name: name.to_string(),
        field: Some(field_data::Field::Scalars(ScalarField { data: Some(data) })),
        ..Default::default()
    }
}

fn string_arrays(name: &str, rows: Vec<Vec<String>>) -> FieldData {
    let data = rows
        .into_iter()
        .map(|data| ScalarField {
            data: Some(scalar_field::Data::StringData(StringArray { data })),
        })
        .collect();
    scalars(
        name,
        DataType::Array,
        scalar_field::Data::ArrayData(ArrayArray {
            data,
            element_type: DataType::VarChar as i32,
        }),
    )
}

fn float_vectors(name: &str, dim: usize, data: Vec<f32>) -> FieldData {
    FieldData {
        r#type: DataType::FloatVector as i32,
        field_name: name.to_string(),
        field: Some(field_data::Field::Vectors(VectorField {
            dim: dim as i64,
            data: Some(vector_field::Data::FloatVector(FloatArray { data })),
        })),
        ..Default::default()
    }
}

fn string_column<'a>(fields: &'a [FieldData], name: &str) -> Option<&'a [String]> {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| match f.field.as_ref()? {
            field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::StringData(s)),
            }) => Some(s.data.as_slice()),
            _ => None,
        })
}

impl ChunkCollection {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn grpc(&self) -> Grpc {
        self.client.grpc.clone()
    }

    fn db(&self) -> String {
        self.client.db_name.clone()
    }

    fn validate(&self, row: &ChunkRow) -> Result<(), MilvusError> {
        let invalid = |reason: String| MilvusError::InvalidRow {
            chunk_id: row.chunk_id.clone(),
            reason,
        };
        if row.dense.len() != self.dim {
            return Err(invalid(format!(
                "dense vector has dimension {}, collection {} has {}",
                row.dense.len(),
                self.name,
                self.dim
            )));
        }
        if row.text.len() > schema::TEXT_MAX_BYTES {
            return Err(invalid(format!(
                "text is {} bytes; the collection holds at most {}",
                row.text.len(),
                schema::TEXT_MAX_BYTES
            )));
        }
        if row.chunk_id.is_empty() {
            return Err(invalid("empty chunk id".to_string()));
        }
        // The other limits are the server's to enforce here; writers check documents first
        // ([`fits`]).
        Ok(())
    }

    /// Upserts the rows by chunk id (same chunk twice → one row), in batches. The BM25 field is
    /// computed by the server from `text`.
    pub async fn upsert(&self, rows: &[ChunkRow]) -> Result<(), MilvusError> {
        for row in rows {
            self.validate(row)?;
        }
        for batch in rows.chunks(UPSERT_BATCH) {
            let col = |f: fn(&ChunkRow) -> &String| batch.iter().map(|r| f(r).clone()).collect();
            let fields_data = vec![
                strings("chunk_id", col(|r| &r.chunk_id)),
                strings("doc_key", col(|r| &r.doc_key)),
                strings("source", col(|r| &r.source)),
                strings("uri", col(|r| &r.uri)),
                strings("title", col(|r| &r.title)),
                strings("heading", col(|r| &r.heading)),
                strings("text", col(|r| &r.text)),
                float_vectors(
                    "dense",
                    self.dim,
                    batch.iter().flat_map(|r| r.dense.iter().copied()).collect(),
                ),
                string_arrays("allow", batch.iter().map(|r| r.allow.clone()).collect()),
                string_arrays("deny", batch.iter().map(|r| r.deny.clone()).collect()),
                scalars(
                    "attributes",
                    DataType::Json,
                    scalar_field::Data::JsonData(JsonArray {
                        data: batch
                            .iter()
                            .map(|r| {
                                expr::attributes_json(&r.attributes)
                                    .to_string()
                                    .into_bytes()
                            })
                            .collect(),
                    }),
                ),
                longs("ordinal", batch.iter().map(|r| r.ordinal).collect()),
                longs("span_start", batch.iter().map(|r| r.span.start).collect()),
                longs("span_end", batch.iter().map(|r| r.span.end).collect()),
                scalars(
                    "meta",
                    DataType::Json,
                    scalar_field::Data::JsonData(JsonArray {
                        data: batch
                            .iter()
                            .map(|r| r.meta.to_string().into_bytes())
                            .collect(),
                    }),
                ),
            ];
            let resp = self
                .grpc()
                .upsert(UpsertRequest {
                    db_name: self.db(),
                    collection_name: self.name.clone(),
                    fields_data,
                    num_rows: batch.len() as u32,
                    ..Default::default()
                })
                .await
                .map_err(rpc("Upsert"))?
                .into_inner();
            check("Upsert", resp.status.as_ref())?;
            if !resp.err_index.is_empty() {
                return Err(protocol(
                    "Upsert",
                    format!("{} rows not written", resp.err_index.len()),
                ));
            }
        }
        Ok(())
    }

    /// Deletes every chunk of the document; returns how many the server reports deleted.
    pub async fn delete_document(&self, doc_key: &str) -> Result<u64, MilvusError> {
        self.delete_where(format!("doc_key == {}", expr::quote("doc key", doc_key)?))
            .await
    }

    async fn delete_where(&self, expr: String) -> Result<u64, MilvusError> {
        let resp = self
            .grpc()
            .delete(DeleteRequest {
                db_name: self.db(),
                collection_name: self.name.clone(),
                expr,
                ..Default::default()
            })
            .await
            .map_err(rpc("Delete"))?
            .into_inner();
        check("Delete", resp.status.as_ref())?;
        Ok(resp.delete_cnt.max(0) as u64)
    }

    /// Seals what was written into segments and builds their indexes. Not needed for durability
    /// or visibility; Lite brute-forces unflushed rows, so tests flush after loading fixtures.
    pub async fn flush(&self) -> Result<(), MilvusError> {
        let resp = self
            .grpc()
            .flush(FlushRequest {
                db_name: self.db(),
                collection_names: vec![self.name.clone()],
                ..Default::default()
            })
            .await
            .map_err(rpc("Flush"))?
            .into_inner();
        check("Flush", resp.status.as_ref())
    }

    /// The `k` chunks nearest to `vector` (cosine) among those the scope admits and the filter
    /// keeps.
    pub async fn dense_search(
        &self,
        vector: &[f32],
        scope: &Scope,
        filter: Option<&Filter>,
        k: usize,
    ) -> Result<Vec<SearchHit>, MilvusError> {
        let bytes = self.vector_bytes(vector)?;
        self.search(Search {
            anns_field: "dense",
            metric: "COSINE",
            placeholder_type: PlaceholderType::FloatVector,
            value: bytes,
            scope,
            filter,
            k,
            output_fields: schema::OUTPUT_FIELDS.map(String::from).to_vec(),
        })
        .await
    }

    /// The `k` best chunks for `text` by BM25 (the server runs the field's analyzer) among those
    /// the scope admits and the filter keeps. Scores are positive (Lite returns them negated).
    pub async fn bm25_search(
        &self,
        text: &str,
        scope: &Scope,
        filter: Option<&Filter>,
        k: usize,
    ) -> Result<Vec<SearchHit>, MilvusError> {
        let mut hits = self
            .search(Search {
                anns_field: "sparse",
                metric: "BM25",
                placeholder_type: PlaceholderType::VarChar,
                value: text.as_bytes().to_vec(),
                scope,
                filter,
                k,
                output_fields: schema::OUTPUT_FIELDS.map(String::from).to_vec(),
            })
            .await?;
        for h in &mut hits {
            h.score = h.score.abs();
        }
        Ok(hits)
    }

    async fn search(&self, search: Search<'_>) -> Result<Vec<SearchHit>, MilvusError> {
        match self.search_data(&search).await? {
            Some(r) => hits(r),
            None => Ok(Vec::new()),
        }
    }

    /// Like [`Self::dense_search`], with each hit's whole row (vector included).
    pub async fn dense_search_rows(
        &self,
        vector: &[f32],
        scope: &Scope,
        filter: Option<&Filter>,
        k: usize,
    ) -> Result<Vec<(f32, ChunkRow)>, MilvusError> {
        let bytes = self.vector_bytes(vector)?;
        let r = self
            .search_data(&Search {
                anns_field: "dense",
                metric: "COSINE",
                placeholder_type: PlaceholderType::FloatVector,
                value: bytes,
                scope,
                filter,
                k,
                output_fields: row_fields(true),
            })
            .await?;
        r.map_or(Ok(Vec::new()), |r| self.scored_rows("Search", r))
    }

    /// Like [`Self::bm25_search`], with each hit's whole row (vector included).
    pub async fn bm25_search_rows(
        &self,
        text: &str,
        scope: &Scope,
        filter: Option<&Filter>,
        k: usize,
    ) -> Result<Vec<(f32, ChunkRow)>, MilvusError> {
        let r = self
            .search_data(&Search {
                anns_field: "sparse",
                metric: "BM25",
                placeholder_type: PlaceholderType::VarChar,
                value: text.as_bytes().to_vec(),
                scope,
                filter,
                k,
                output_fields: row_fields(true),
            })
            .await?;
        let mut rows = r.map_or(Ok(Vec::new()), |r| self.scored_rows("Search", r))?;
        for (score, _) in &mut rows {
            *score = score.abs();
        }
        Ok(rows)
    }

    fn vector_bytes(&self, vector: &[f32]) -> Result<Vec<u8>, MilvusError> {
        if vector.len() != self.dim {
            return Err(MilvusError::Dimension {
                collection: self.name.clone(),
                expected: self.dim,
                got: vector.len(),
            });
        }
        Ok(vector.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn scored_rows(
        &self,
        method: &'static str,
        r: SearchResultData,
    ) -> Result<Vec<(f32, ChunkRow)>, MilvusError> {
        let ids = match r.ids.and_then(|ids| ids.id_field) {
            Some(i_ds::IdField::StrId(s)) => s.data,
            Some(i_ds::IdField::IntId(_)) => return Err(protocol(method, "integer primary keys")),
            None => Vec::new(),
        };
        let rows = rows(method, &r.fields_data, Some(ids), self.dim)?;
        if rows.len() != r.scores.len() {
            return Err(protocol(
                method,
                format!("{} rows, {} scores", rows.len(), r.scores.len()),
            ));
        }
        Ok(r.scores.into_iter().zip(rows).collect())
    }

    /// Runs `f`, and once more after `LoadCollection` when the collection was not loaded (a
    /// Milvus Lite restarted under a running Docent releases every collection).
    async fn loaded<T, F, Fut>(&self, f: F) -> Result<T, MilvusError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, MilvusError>>,
    {
        match f().await {
            Err(e) if e.is_not_loaded() => {
                self.client.load(&self.name).await?;
                f().await
            }
            r => r,
        }
    }

    async fn search_data(
        &self,
        search: &Search<'_>,
    ) -> Result<Option<SearchResultData>, MilvusError> {
        self.loaded(|| self.search_data_once(search)).await
    }

    async fn search_data_once(
        &self,
        search: &Search<'_>,
    ) -> Result<Option<SearchResultData>, MilvusError> {
        let Search {
            anns_field,
            metric,
            placeholder_type,
            value,
            scope,
            filter,
            k,
            output_fields,
        } = search;
        let dsl = match expr::search_cond(scope, *filter)? {
            Cond::False => return Ok(None),
            // An empty expression is a search of every row: a scope always states one, and one
            // that does not is refused, never sent (a review: a later scope that admits
            // everything, or a folding of its terms, would have dropped the ACL filter).
            Cond::True => {
                return Err(MilvusError::Protocol {
                    method: "Search",
                    reason: "a search without an ACL condition is refused".into(),
                });
            }
            Cond::Expr(e) => e,
        };
        let k = (*k).min(MAX_TOP_K);
        if k == 0 {
            return Ok(None);
        }
        let placeholder_group = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".to_string(),
                r#type: *placeholder_type as i32,
                values: vec![value.clone()],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let resp = self
            .grpc()
            .search(SearchRequest {
                db_name: self.db(),
                collection_name: self.name.clone(),
                dsl,
                dsl_type: DslType::BoolExprV1 as i32,
                search_input: Some(SearchInput::PlaceholderGroup(placeholder_group)),
                nq: 1,
                output_fields: output_fields.clone(),
                search_params: vec![
                    kv("anns_field", *anns_field),
                    kv("topk", k.to_string()),
                    kv("metric_type", *metric),
                    kv("params", "{}"),
                ],
                consistency_level: ConsistencyLevel::Strong as i32,
                ..Default::default()
            })
            .await
            .map_err(rpc("Search"))?
            .into_inner();
        check("Search", resp.status.as_ref())?;
        Ok(resp.results)
    }

    /// Stores `bytes` as the checkpoint of `source` in `<collection>_state`, replacing the last
    /// one at once: one row, upserted, when it fits one (`CHECKPOINT_MAX_BYTES`); else its
    /// parts first, in whichever of two slots the current checkpoint does not use, then the row
    /// naming them (a crash in between leaves the current checkpoint whole). At most
    /// `CHECKPOINT_MAX_TOTAL` bytes. Call it only after every write the checkpoint covers has
    /// been acknowledged.
    pub async fn put_checkpoint(&self, source: &str, bytes: &[u8]) -> Result<(), MilvusError> {
        self.put_stored(CHECKPOINT, source, bytes).await
    }

    /// [`Self::put_checkpoint`] for any [`Stored`] kind.
    async fn put_stored(&self, kind: Stored, name: &str, bytes: &[u8]) -> Result<(), MilvusError> {
        if bytes.len() <= schema::CHECKPOINT_MAX_BYTES && !bytes.starts_with(PARTS_MAGIC) {
            return self.put_state(kind.kind, name, bytes).await;
        }
        if bytes.len() > kind.max {
            return Err(MilvusError::CheckpointTooLarge {
                source_id: name.to_string(),
                len: bytes.len(),
                max: kind.max,
            });
        }
        let current = self.get_state(kind.kind, name).await?;
        let slot = match current.first().and_then(|(_, b)| Parts::read(b, kind.max)) {
            Some(Ok(p)) if p.slot == 0 => 1,
            _ => 0,
        };
        let chunks: Vec<&[u8]> = bytes.chunks(schema::CHECKPOINT_MAX_BYTES).collect();
        // Several parts per upsert (each a round trip), within a request of a few MB.
        let rows: Vec<(String, &[u8])> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| (part_name(name, slot, i), *chunk))
            .collect();
        for batch in rows.chunks(PARTS_PER_UPSERT) {
            self.put_states(kind.parts, batch).await?;
        }
        let head = Parts {
            slot,
            parts: chunks.len(),
            len: bytes.len(),
            sha256: sha256_hex(bytes),
        };
        self.put_state(kind.kind, name, &head.write()).await
    }

    /// Stores `bytes` under `name` in `<collection>_state` (kind `meta`: what the caller records
    /// about the collection, such as the model that wrote its vectors).
    pub async fn put_meta(&self, name: &str, bytes: &[u8]) -> Result<(), MilvusError> {
        self.put_state("meta", name, bytes).await
    }

    /// The bytes last stored under `name` with [`Self::put_meta`].
    pub async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, MilvusError> {
        Ok(self
            .get_state("meta", name)
            .await?
            .into_iter()
            .next()
            .map(|(_, b)| b))
    }

    /// Forgets what was stored under `name` with [`Self::put_meta`].
    pub async fn delete_meta(&self, name: &str) -> Result<(), MilvusError> {
        self.delete_state(format!(
            "key == {}",
            expr::quote("state key", &state_key("meta", name))?
        ))
        .await
    }

    /// Deletes the rows of `<collection>_state` that `expr` selects (loading the collection
    /// first when a restarted server released it, as [`Self::get_state`]).
    async fn delete_state(&self, expr: String) -> Result<(), MilvusError> {
        match self.delete_state_once(expr.clone()).await {
            Err(e) if e.is_not_loaded() => {
                self.client.load(&self.state).await?;
                self.delete_state_once(expr).await
            }
            r => r,
        }
    }

    async fn delete_state_once(&self, expr: String) -> Result<(), MilvusError> {
        let resp = self
            .grpc()
            .delete(DeleteRequest {
                db_name: self.db(),
                collection_name: self.state.clone(),
                expr,
                ..Default::default()
            })
            .await
            .map_err(rpc("Delete"))?
            .into_inner();
        check("Delete", resp.status.as_ref())
    }

    /// A checkpoint row as stored: the checkpoint, or the parts it names put together; `None`
    /// when the parts cannot be put together (a part missing or altered by hand): the source
    /// then starts from no checkpoint (a full crawl, which loses nothing) rather than keeping
    /// the whole collection from opening.
    async fn whole_checkpoint(
        &self,
        source: &str,
        row: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, MilvusError> {
        self.whole_stored(CHECKPOINT, source, row).await
    }

    /// [`Self::whole_checkpoint`] for any [`Stored`] kind.
    async fn whole_stored(
        &self,
        kind: Stored,
        name: &str,
        row: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, MilvusError> {
        let unusable = |why: String| {
            tracing::warn!(name = %name, reason = %why, "{}", kind.unusable);
            Ok(None)
        };
        let head = match Parts::read(&row, kind.max) {
            None => return Ok(Some(row)),
            Some(Ok(head)) => head,
            Some(Err(why)) => return unusable(why),
        };
        let mut out = Vec::with_capacity(head.len);
        for i in 0..head.parts {
            let Some((_, part)) = self
                .get_state(kind.parts, &part_name(name, head.slot, i))
                .await?
                .into_iter()
                .next()
            else {
                return unusable(format!("part {i} is missing"));
            };
            out.extend_from_slice(&part);
        }
        if out.len() != head.len || sha256_hex(&out) != head.sha256 {
            return unusable("its parts do not match their record".into());
        }
        Ok(Some(out))
    }

    /// Every stored checkpoint, by source.
    pub async fn checkpoints(&self) -> Result<Vec<(String, Vec<u8>)>, MilvusError> {
        let mut out = Vec::new();
        for (source, row) in self.get_state("checkpoint", "").await? {
            if let Some(whole) = self.whole_checkpoint(&source, row).await? {
                out.push((source, whole));
            }
        }
        Ok(out)
    }

    async fn put_state(&self, kind: &str, source: &str, bytes: &[u8]) -> Result<(), MilvusError> {
        self.put_states(kind, &[(source.to_string(), bytes)]).await
    }

    /// Rows of one `kind` (name, payload) in one upsert.
    async fn put_states(&self, kind: &str, rows: &[(String, &[u8])]) -> Result<(), MilvusError> {
        if let Some((name, bytes)) = rows
            .iter()
            .find(|(_, b)| b.len() > schema::CHECKPOINT_MAX_BYTES)
        {
            return Err(MilvusError::CheckpointTooLarge {
                source_id: name.clone(),
                len: bytes.len(),
                max: schema::CHECKPOINT_MAX_BYTES,
            });
        }
        let updated_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let n = rows.len();
        let fields_data = vec![
            strings(
                "key",
                rows.iter().map(|(name, _)| state_key(kind, name)).collect(),
            ),
            strings("kind", vec![kind.to_string(); n]),
            strings(
                "payload",
                rows.iter().map(|(_, b)| BASE64.encode(b)).collect(),
            ),
            longs("updated_at", vec![updated_at; n]),
            float_vectors("_v", schema::STATE_DIM, [1.0, 0.0].repeat(n)),
        ];
        let resp = self
            .grpc()
            .upsert(UpsertRequest {
                db_name: self.db(),
                collection_name: self.state.clone(),
                fields_data,
                num_rows: n as u32,
                ..Default::default()
            })
            .await
            .map_err(rpc("Upsert"))?
            .into_inner();
        check("Upsert", resp.status.as_ref())
    }

    /// Records the documents a commit is about to write (`<collection>_state`, kind `intent`,
    /// in rows no larger than a state payload): a commit cut off before [`Self::clear_intents`]
    /// leaves them for the next open to repair.
    pub async fn put_intents(&self, keys: &[String]) -> Result<(), MilvusError> {
        self.put_intents_of("", keys).await
    }

    /// [`Self::put_intents`] under the name of one commit (`commit`, no `/`), which
    /// [`Self::intent_commits`] tells: a record of the commit's plan
    /// ([`Self::put_commit_log`]) pairs with these intents, not with another commit's.
    pub async fn put_intents_of(&self, commit: &str, keys: &[String]) -> Result<(), MilvusError> {
        let mut parts: Vec<Vec<&String>> = vec![Vec::new()];
        let mut size = 2;
        for k in keys {
            // A key's JSON form: quotes, escapes at most doubling it, a comma.
            let add = k.len() * 2 + 3;
            if size + add > schema::CHECKPOINT_MAX_BYTES && !parts.last().is_some_and(Vec::is_empty)
            {
                parts.push(Vec::new());
                size = 2;
            }
            parts.last_mut().expect("one part at least").push(k);
            size += add;
        }
        for (i, part) in parts.iter().enumerate() {
            let bytes = serde_json::to_vec(part).unwrap_or_default();
            let name = match commit {
                "" => i.to_string(),
                c => format!("{c}/{i}"),
            };
            self.put_state("intent", &name, &bytes).await?;
        }
        Ok(())
    }

    /// The commits named by the intents recorded with [`Self::put_intents_of`] and not yet
    /// cleared.
    pub async fn intent_commits(&self) -> Result<std::collections::BTreeSet<String>, MilvusError> {
        Ok(self
            .get_state("intent", "")
            .await?
            .into_iter()
            .filter_map(|(name, _)| Some(name.rsplit_once('/')?.0.to_string()))
            .collect())
    }

    /// The documents of commits that were cut off (see [`Self::put_intents`]).
    pub async fn intents(&self) -> Result<Vec<String>, MilvusError> {
        let mut out = Vec::new();
        for (key, bytes) in self.get_state("intent", "").await? {
            let keys: Vec<String> =
                serde_json::from_slice(&bytes).map_err(|e| MilvusError::Protocol {
                    method: "Query",
                    reason: format!("state row {key}: {e}"),
                })?;
            out.extend(keys);
        }
        Ok(out)
    }

    /// Forgets the documents recorded by [`Self::put_intents`]: the commit is whole.
    pub async fn clear_intents(&self) -> Result<(), MilvusError> {
        self.delete_state(format!("kind == {}", expr::quote("state kind", "intent")?))
            .await
    }

    /// Stores the whole of a commit about to be applied (`<collection>_state`, kind `commit`,
    /// in parts as a large checkpoint, at most `COMMIT_LOG_MAX_TOTAL` bytes), before
    /// [`Self::put_intents`]: a commit cut off after its record of intents can then be applied
    /// again whole at the next open, instead of torn documents being removed. One at a time:
    /// the next replaces it.
    pub async fn put_commit_log(&self, bytes: &[u8]) -> Result<(), MilvusError> {
        self.put_stored(COMMIT_LOG, "", bytes).await
    }

    /// The commit stored by [`Self::put_commit_log`] and not yet cleared, if it can be read
    /// whole (its parts all there and matching their record).
    pub async fn commit_log(&self) -> Result<Option<Vec<u8>>, MilvusError> {
        match self
            .get_state(COMMIT_LOG.kind, "")
            .await?
            .into_iter()
            .next()
        {
            Some((_, row)) => self.whole_stored(COMMIT_LOG, "", row).await,
            None => Ok(None),
        }
    }

    /// Forgets the commit stored by [`Self::put_commit_log`] (its record and its parts): call
    /// it after [`Self::clear_intents`].
    pub async fn clear_commit_log(&self) -> Result<(), MilvusError> {
        self.delete_state(format!(
            "kind in [{}, {}]",
            expr::quote("state kind", COMMIT_LOG.kind)?,
            expr::quote("state kind", COMMIT_LOG.parts)?
        ))
        .await
    }

    /// The checkpoint last stored for `source`, if any.
    pub async fn get_checkpoint(&self, source: &str) -> Result<Option<Vec<u8>>, MilvusError> {
        match self
            .get_state("checkpoint", source)
            .await?
            .into_iter()
            .next()
        {
            Some((_, row)) => self.whole_checkpoint(source, row).await,
            None => Ok(None),
        }
    }

    /// State rows of `kind`: the one named `name`, or every one when `name` is empty. Once
    /// more after loading the state collection when it was not loaded: a Milvus Lite restarted
    /// under a running Docent releases it too, and only the chunk collection was loaded again
    /// (a review: every commit then failed until the daemon restarted).
    async fn get_state(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, MilvusError> {
        match self.get_state_once(kind, name).await {
            Err(e) if e.is_not_loaded() => {
                self.client.load(&self.state).await?;
                self.get_state_once(kind, name).await
            }
            r => r,
        }
    }

    async fn get_state_once(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, MilvusError> {
        let expr = if name.is_empty() {
            format!("kind == {}", expr::quote("state kind", kind)?)
        } else {
            format!(
                "key == {}",
                expr::quote("state key", &state_key(kind, name))?
            )
        };
        let resp = self
            .grpc()
            .query(QueryRequest {
                db_name: self.db(),
                collection_name: self.state.clone(),
                expr,
                output_fields: vec!["key".to_string(), "payload".to_string()],
                query_params: vec![kv("limit", "16384")],
                consistency_level: ConsistencyLevel::Strong as i32,
                ..Default::default()
            })
            .await
            .map_err(rpc("Query"))?
            .into_inner();
        check("Query", resp.status.as_ref())?;
        let keys = string_column(&resp.fields_data, "key").unwrap_or(&[]);
        let payloads = string_column(&resp.fields_data, "payload").unwrap_or(&[]);
        if keys.len() != payloads.len() {
            return Err(protocol(
                "Query",
                "state keys and payloads differ in length",
            ));
        }
        let prefix = format!("{kind}:");
        keys.iter()
            .zip(payloads)
            .filter_map(|(k, b64)| Some((k.strip_prefix(&prefix)?.to_string(), b64)))
            .map(|(k, b64)| {
                BASE64
                    .decode(b64)
                    .map(|b| (k, b))
                    .map_err(|e| protocol("Query", format!("state payload: {e}")))
            })
            .collect()
    }

    /// Deletes the chunks of `doc_key` whose ordinal is `first` or more (what is left of a
    /// longer earlier version after its first chunks were overwritten in place).
    pub async fn delete_chunks_from(&self, doc_key: &str, first: i64) -> Result<(), MilvusError> {
        let expr = format!(
            "doc_key == {} and ordinal >= {first}",
            expr::quote("doc key", doc_key)?
        );
        self.delete_where(expr).await.map(|_| ())
    }

    /// Rows matching `cond` (a condition built from [`expr`]'s quoting; empty: every row) with
    /// a chunk id after `after`, at most `limit`, in chunk id order: one page of a scan.
    /// `vectors`: include the dense vectors.
    pub async fn query_rows(
        &self,
        cond: &str,
        after: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> Result<Vec<ChunkRow>, MilvusError> {
        let fields = match vectors {
            true => Fields::WithVectors,
            false => Fields::Rows,
        };
        self.loaded(|| self.query_rows_once(cond, after, limit, fields))
            .await
    }

    /// [`Self::query_rows`] without the text a caller could read (`text`, `title`, `uri`,
    /// `heading` and `attributes` come back empty): for what needs a row's key, ACL and
    /// `meta` only, such as the table of documents every node keeps and the recheck of a
    /// hit's document (a review: those read every document's first chunk whole, text
    /// included).
    pub async fn query_entries(
        &self,
        cond: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChunkRow>, MilvusError> {
        self.loaded(|| self.query_rows_once(cond, after, limit, Fields::Entries))
            .await
    }

    async fn query_rows_once(
        &self,
        cond: &str,
        after: Option<&str>,
        limit: usize,
        fields: Fields,
    ) -> Result<Vec<ChunkRow>, MilvusError> {
        let vectors = fields == Fields::WithVectors;
        let mut parts = Vec::new();
        if !cond.is_empty() {
            parts.push(format!("({cond})"));
        }
        if let Some(after) = after {
            parts.push(format!("chunk_id > {}", expr::quote("chunk id", after)?));
        }
        if parts.is_empty() {
            parts.push("chunk_id != \"\"".to_string());
        }
        let resp = self
            .grpc()
            .query(QueryRequest {
                db_name: self.db(),
                collection_name: self.name.clone(),
                expr: parts.join(" and "),
                output_fields: match fields {
                    Fields::Entries => ENTRY_FIELDS.map(String::from).to_vec(),
                    _ => row_fields(vectors),
                },
                // As pymilvus's query iterator: primary-key order, so `after` pages.
                query_params: vec![
                    kv("limit", limit.min(MAX_TOP_K).to_string()),
                    kv("iterator", "True"),
                    kv("reduce_stop_for_best", "True"),
                ],
                consistency_level: ConsistencyLevel::Strong as i32,
                ..Default::default()
            })
            .await
            .map_err(rpc("Query"))?
            .into_inner();
        check("Query", resp.status.as_ref())?;
        let mut rows = match fields {
            Fields::Entries => entries("Query", &resp.fields_data)?,
            _ => rows(
                "Query",
                &resp.fields_data,
                None,
                if vectors { self.dim } else { 0 },
            )?,
        };
        rows.sort_by(|a, b| a.chunk_id.cmp(&b.chunk_id));
        Ok(rows)
    }
}

fn state_key(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

/// Parts of a state row stored in one upsert: 64 of at most 48 KiB (64 KiB in base64), about
/// 4 MiB per request.
const PARTS_PER_UPSERT: usize = 64;

/// How a checkpoint row that names its parts begins (a checkpoint itself is JSON; one that
/// begins so is stored in parts too, so a row is never misread).
const PARTS_MAGIC: &[u8] = b"\0docent checkpoint parts\0";

/// What a checkpoint row stored in parts says of them.
#[derive(Debug, PartialEq)]
struct Parts {
    slot: u8,
    parts: usize,
    len: usize,
    sha256: String,
}

impl Parts {
    fn write(&self) -> Vec<u8> {
        let mut out = PARTS_MAGIC.to_vec();
        let record = serde_json::json!({
            "slot": self.slot,
            "parts": self.parts,
            "len": self.len,
            "sha256": self.sha256,
        });
        out.extend(serde_json::to_vec(&record).unwrap_or_default());
        out
    }

    /// `None` for a row that holds the checkpoint itself. `max`: the most its kind may store.
    fn read(row: &[u8], max: usize) -> Option<Result<Self, String>> {
        let rest = row.strip_prefix(PARTS_MAGIC)?;
        Some((|| {
            let v: serde_json::Value =
                serde_json::from_slice(rest).map_err(|e| format!("its record of parts: {e}"))?;
            let num = |k: &str| {
                v[k].as_u64()
                    .ok_or_else(|| format!("its record of parts has no {k}"))
            };
            let parts = Self {
                slot: u8::try_from(num("slot")?).map_err(|e| e.to_string())?,
                parts: num("parts")? as usize,
                len: num("len")? as usize,
                sha256: v["sha256"].as_str().unwrap_or_default().to_string(),
            };
            if parts.len > max || parts.parts != parts.len.div_ceil(schema::CHECKPOINT_MAX_BYTES) {
                return Err(format!("its record of parts is inconsistent: {parts:?}"));
            }
            Ok(parts)
        })())
    }
}

/// A kind of state row that may be stored in parts: the kind of its row, the kind of its
/// parts, and what a reader is told when its parts cannot be put together.
#[derive(Clone, Copy)]
struct Stored {
    kind: &'static str,
    parts: &'static str,
    unusable: &'static str,
    /// The most it may store, in bytes.
    max: usize,
}

const CHECKPOINT: Stored = Stored {
    kind: "checkpoint",
    parts: "checkpoint_part",
    unusable: "a checkpoint stored in parts cannot be read: its source starts again from no checkpoint",
    max: schema::CHECKPOINT_MAX_TOTAL,
};

const COMMIT_LOG: Stored = Stored {
    kind: "commit",
    parts: "commit_part",
    unusable: "the record of a commit stored in parts cannot be read: the commit it records is repaired without it",
    max: schema::COMMIT_LOG_MAX_TOTAL,
};

fn part_name(source: &str, slot: u8, i: usize) -> String {
    format!("{source}/{slot}/{i}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a query reads of each row ([`ChunkCollection::query_rows`], [`ChunkCollection::query_entries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fields {
    Rows,
    WithVectors,
    Entries,
}

/// The fields [`ChunkCollection::query_entries`] reads.
const ENTRY_FIELDS: [&str; 6] = [
    "chunk_id",
    "doc_key",
    "allow",
    "deny",
    "ordinal",
    schema::META_FIELD,
];

/// Column-wise rows of [`ENTRY_FIELDS`] → [`ChunkRow`]s with no text.
fn entries(method: &'static str, fields: &[FieldData]) -> Result<Vec<ChunkRow>, MilvusError> {
    let bad = |what: &str| protocol(method, format!("column {what} missing or malformed"));
    let chunk_ids = string_column(fields, "chunk_id").ok_or_else(|| bad("chunk_id"))?;
    let doc_keys = string_column(fields, "doc_key").ok_or_else(|| bad("doc_key"))?;
    let n = chunk_ids.len();
    if doc_keys.len() != n {
        return Err(bad("doc_key"));
    }
    let arrays = |name: &'static str| array_column(fields, name, n).ok_or_else(|| bad(name));
    let (allow, deny) = (arrays("allow")?, arrays("deny")?);
    let ordinal = match scalar_data(fields, "ordinal") {
        Some(scalar_field::Data::LongData(l)) if l.data.len() == n => l.data.as_slice(),
        _ => return Err(bad("ordinal")),
    };
    let meta: Vec<serde_json::Value> = match scalar_data(fields, schema::META_FIELD) {
        Some(scalar_field::Data::JsonData(j)) if j.data.len() == n => j
            .data
            .iter()
            .map(|b| serde_json::from_slice(b).map_err(|_| bad(schema::META_FIELD)))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad(schema::META_FIELD)),
    };
    Ok((0..n)
        .map(|i| ChunkRow {
            chunk_id: chunk_ids[i].clone(),
            doc_key: doc_keys[i].clone(),
            allow: allow[i].clone(),
            deny: deny[i].clone(),
            ordinal: ordinal[i],
            meta: meta[i].clone(),
            ..ChunkRow::default()
        })
        .collect())
}

/// The `n` values of an ARRAY<VARCHAR> column; `None` when it is missing or of another shape.
fn array_column(fields: &[FieldData], name: &str, n: usize) -> Option<Vec<Vec<String>>> {
    match scalar_data(fields, name)? {
        scalar_field::Data::ArrayData(a) if a.data.len() == n => a
            .data
            .iter()
            .map(|f| match &f.data {
                Some(scalar_field::Data::StringData(s)) => Some(s.data.clone()),
                None => Some(Vec::new()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn row_fields(vectors: bool) -> Vec<String> {
    let mut f: Vec<String> = schema::ROW_FIELDS.map(String::from).to_vec();
    f.push(schema::META_FIELD.to_string());
    if vectors {
        f.push("dense".to_string());
    }
    f
}

fn column<'a>(fields: &'a [FieldData], name: &str) -> Option<&'a field_data::Field> {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| f.field.as_ref())
}

fn scalar_data<'a>(fields: &'a [FieldData], name: &str) -> Option<&'a scalar_field::Data> {
    match column(fields, name)? {
        field_data::Field::Scalars(ScalarField { data }) => data.as_ref(),
        _ => None,
    }
}

/// Column-wise rows → [`ChunkRow`]s. `ids`: the primary keys when they come apart from the
/// columns (search results); `dim`: the vector dimension, 0 when vectors were not asked for.
fn rows(
    method: &'static str,
    fields: &[FieldData],
    ids: Option<Vec<String>>,
    dim: usize,
) -> Result<Vec<ChunkRow>, MilvusError> {
    let bad = |what: &str| protocol(method, format!("column {what} missing or malformed"));
    let strs = |name: &'static str| string_column(fields, name).ok_or_else(|| bad(name));
    let chunk_ids: Vec<String> = match string_column(fields, "chunk_id") {
        Some(c) => c.to_vec(),
        None => ids.ok_or_else(|| bad("chunk_id"))?,
    };
    let n = chunk_ids.len();
    let longs = |name: &'static str| match scalar_data(fields, name) {
        Some(scalar_field::Data::LongData(l)) if l.data.len() == n => Ok(l.data.as_slice()),
        _ => Err(bad(name)),
    };
    let jsons = |name: &'static str| -> Result<Vec<serde_json::Value>, MilvusError> {
        match scalar_data(fields, name) {
            Some(scalar_field::Data::JsonData(j)) if j.data.len() == n => j
                .data
                .iter()
                .map(|b| serde_json::from_slice(b).map_err(|_| bad(name)))
                .collect(),
            _ => Err(bad(name)),
        }
    };
    let arrays = |name: &'static str| array_column(fields, name, n).ok_or_else(|| bad(name));
    let dense: &[f32] = if dim == 0 {
        &[]
    } else {
        match column(fields, "dense") {
            Some(field_data::Field::Vectors(VectorField {
                data: Some(vector_field::Data::FloatVector(FloatArray { data })),
                ..
            })) if data.len() == n * dim => data,
            _ => return Err(bad("dense")),
        }
    };
    let (doc_key, source, uri, title, heading, text) = (
        strs("doc_key")?,
        strs("source")?,
        strs("uri")?,
        strs("title")?,
        strs("heading")?,
        strs("text")?,
    );
    for c in [doc_key, source, uri, title, heading, text] {
        if c.len() != n {
            return Err(bad("(string column length)"));
        }
    }
    let (allow, deny) = (arrays("allow")?, arrays("deny")?);
    let (attributes, meta) = (jsons("attributes")?, jsons(schema::META_FIELD)?);
    let (ordinal, start, end) = (longs("ordinal")?, longs("span_start")?, longs("span_end")?);
    let mut out = Vec::with_capacity(n);
    for (i, chunk_id) in chunk_ids.into_iter().enumerate() {
        let attributes = attributes[i]
            .get(expr::ATTR_STRINGS)
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        out.push(ChunkRow {
            chunk_id,
            doc_key: doc_key[i].clone(),
            source: source[i].clone(),
            uri: uri[i].clone(),
            title: title[i].clone(),
            heading: heading[i].clone(),
            text: text[i].clone(),
            dense: if dim == 0 {
                Vec::new()
            } else {
                dense[i * dim..(i + 1) * dim].to_vec()
            },
            allow: allow[i].clone(),
            deny: deny[i].clone(),
            attributes,
            ordinal: ordinal[i],
            span: start[i]..end[i],
            meta: meta[i].clone(),
        });
    }
    Ok(out)
}

/// Column-wise hits → rows: `ids`, `scores` and the `doc_key` column are parallel.
fn hits(r: SearchResultData) -> Result<Vec<SearchHit>, MilvusError> {
    let ids: Vec<String> = match r.ids.and_then(|ids| ids.id_field) {
        Some(i_ds::IdField::StrId(s)) => s.data,
        Some(i_ds::IdField::IntId(_)) => return Err(protocol("Search", "integer primary keys")),
        None => Vec::new(),
    };
    let doc_keys = string_column(&r.fields_data, "doc_key").unwrap_or(&[]);
    if r.scores.len() != ids.len() || doc_keys.len() != ids.len() {
        return Err(protocol(
            "Search",
            format!(
                "{} ids, {} scores, {} doc keys",
                ids.len(),
                r.scores.len(),
                doc_keys.len()
            ),
        ));
    }
    Ok(ids
        .into_iter()
        .zip(r.scores)
        .zip(doc_keys)
        .map(|((chunk_id, score), doc_key)| SearchHit {
            chunk_id,
            doc_key: doc_key.clone(),
            score,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: `{:?}` printed the token.
    #[test]
    fn connect_options_do_not_print_their_token() {
        let o = ConnectOptions {
            token: Some("root:Milvus-secret".into()),
            ..ConnectOptions::default()
        };
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("Milvus-secret") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn a_record_of_parts_reads_back_and_an_inconsistent_one_is_refused() {
        let head = Parts {
            slot: 1,
            parts: 3,
            len: schema::CHECKPOINT_MAX_BYTES * 2 + 1,
            sha256: sha256_hex(b"x"),
        };
        assert_eq!(
            Parts::read(&head.write(), schema::CHECKPOINT_MAX_TOTAL),
            Some(Ok(head))
        );
        // A checkpoint row that is the checkpoint.
        assert_eq!(
            Parts::read(b"{\"pos\":1}", schema::CHECKPOINT_MAX_TOTAL),
            None
        );
        let wrong_count = Parts {
            slot: 0,
            parts: 1,
            len: schema::CHECKPOINT_MAX_BYTES + 1,
            sha256: String::new(),
        };
        assert!(matches!(
            Parts::read(&wrong_count.write(), schema::CHECKPOINT_MAX_TOTAL),
            Some(Err(_))
        ));
        let mut garbled = PARTS_MAGIC.to_vec();
        garbled.extend(b"{\"slot\":");
        assert!(matches!(
            Parts::read(&garbled, schema::CHECKPOINT_MAX_TOTAL),
            Some(Err(_))
        ));
        // Past what its kind may store: a checkpoint's record refuses it, a commit's reads it.
        let len = schema::CHECKPOINT_MAX_TOTAL + 1;
        let big = Parts {
            slot: 0,
            parts: len.div_ceil(schema::CHECKPOINT_MAX_BYTES),
            len,
            sha256: String::new(),
        };
        assert!(matches!(
            Parts::read(&big.write(), CHECKPOINT.max),
            Some(Err(_))
        ));
        assert_eq!(Parts::read(&big.write(), COMMIT_LOG.max), Some(Ok(big)));
    }
}
