//! The two collections (docs/milvus.md §2 and §5): the chunk collection and `<name>_state`, as
//! `CollectionSchema`s, their indexes, and the check that an existing collection is one of ours.

use crate::proto::common::KeyValuePair;
use crate::proto::schema::{CollectionSchema, DataType, FieldSchema, FunctionSchema, FunctionType};

/// The dense index. FLAT: exact, and the only index type that keeps filtered recall at 1.0 in
/// Lite (faiss HNSW with an ID selector loses in-scope hits at a small `ef`; docs/milvus.md §6).
pub const DENSE_INDEX: &str = "FLAT";
/// Suffix of the state collection next to the chunk collection.
pub const STATE_SUFFIX: &str = "_state";
/// Largest checkpoint `put_checkpoint` accepts: base64 of it fits the VarChar(65535) payload.
pub const CHECKPOINT_MAX_BYTES: usize = 65_535 / 4 * 3;
/// Largest checkpoint `put_checkpoint` accepts in parts of `CHECKPOINT_MAX_BYTES`.
pub const CHECKPOINT_MAX_TOTAL: usize = 16 << 20;
/// Largest record of a commit `put_commit_log` accepts, in parts of `CHECKPOINT_MAX_BYTES`.
/// Docent splits a larger commit into several, by document (each up to 16 MiB), so only one
/// document larger than this (its rows: text and vectors) commits without its record.
pub const COMMIT_LOG_MAX_TOTAL: usize = 256 << 20;

pub(crate) const TEXT_MAX_BYTES: usize = 65_535;
/// The VarChar limits of the chunk collection's fields (bytes), and of its principal arrays.
pub(crate) const CHUNK_ID_MAX_BYTES: usize = 512;
pub(crate) const DOC_KEY_MAX_BYTES: usize = 1024;
pub(crate) const SOURCE_MAX_BYTES: usize = 256;
pub(crate) const URI_MAX_BYTES: usize = 4096;
pub(crate) const TITLE_MAX_BYTES: usize = 1024;
pub(crate) const HEADING_MAX_BYTES: usize = 2048;
pub(crate) const PRINCIPAL_MAX_BYTES: usize = 512;
pub(crate) const PRINCIPALS_MAX: usize = 1024;
/// Milvus's limit on one value of a JSON field (the `attributes` and `meta` of a row), bytes.
pub(crate) const JSON_MAX_BYTES: usize = 65_536;
pub(crate) const OUTPUT_FIELDS: [&str; 1] = ["doc_key"];
/// Every stored field of a chunk row but the vector (and `sparse`, which is the server's).
pub(crate) const ROW_FIELDS: [&str; 13] = [
    "chunk_id",
    "doc_key",
    "source",
    "uri",
    "title",
    "heading",
    "text",
    "allow",
    "deny",
    "attributes",
    "ordinal",
    "span_start",
    "span_end",
];
/// The JSON column the caller owns (`ChunkRow::meta`).
pub(crate) const META_FIELD: &str = "meta";

fn kv(key: &str, value: impl Into<String>) -> KeyValuePair {
    KeyValuePair {
        key: key.to_string(),
        value: value.into(),
    }
}

fn field(name: &str, data_type: DataType, params: &[(&str, String)]) -> FieldSchema {
    FieldSchema {
        name: name.to_string(),
        data_type: data_type as i32,
        type_params: params.iter().map(|(k, v)| kv(k, v.clone())).collect(),
        ..FieldSchema::default()
    }
}

fn varchar(name: &str, max_length: usize) -> FieldSchema {
    field(
        name,
        DataType::VarChar,
        &[("max_length", max_length.to_string())],
    )
}

fn varchar_array(name: &str) -> FieldSchema {
    FieldSchema {
        element_type: DataType::VarChar as i32,
        ..field(
            name,
            DataType::Array,
            &[
                ("max_length", PRINCIPAL_MAX_BYTES.to_string()),
                ("max_capacity", PRINCIPALS_MAX.to_string()),
            ],
        )
    }
}

pub(crate) fn chunk_schema(name: &str, dim: usize) -> CollectionSchema {
    let mut text = varchar("text", TEXT_MAX_BYTES);
    text.type_params.extend([
        kv("enable_analyzer", "true"),
        // Lite knows only the standard tokenizer (no `english` analyzer, no stemming).
        kv("analyzer_params", r#"{"tokenizer":"standard"}"#),
    ]);
    let fields = vec![
        FieldSchema {
            is_primary_key: true,
            ..varchar("chunk_id", CHUNK_ID_MAX_BYTES)
        },
        varchar("doc_key", DOC_KEY_MAX_BYTES),
        varchar("source", SOURCE_MAX_BYTES),
        varchar("uri", URI_MAX_BYTES),
        varchar("title", TITLE_MAX_BYTES),
        varchar("heading", HEADING_MAX_BYTES),
        text,
        FieldSchema {
            is_function_output: true,
            ..field("sparse", DataType::SparseFloatVector, &[])
        },
        field("dense", DataType::FloatVector, &[("dim", dim.to_string())]),
        varchar_array("allow"),
        varchar_array("deny"),
        field("attributes", DataType::Json, &[]),
        field("ordinal", DataType::Int64, &[]),
        field("span_start", DataType::Int64, &[]),
        field("span_end", DataType::Int64, &[]),
        field("meta", DataType::Json, &[]),
    ];
    CollectionSchema {
        name: name.to_string(),
        fields,
        functions: vec![FunctionSchema {
            name: "text_bm25".to_string(),
            r#type: FunctionType::Bm25 as i32,
            input_field_names: vec!["text".to_string()],
            output_field_names: vec!["sparse".to_string()],
            ..FunctionSchema::default()
        }],
        ..CollectionSchema::default()
    }
}

pub(crate) const STATE_DIM: usize = 2;

pub(crate) fn state_schema(name: &str) -> CollectionSchema {
    CollectionSchema {
        name: name.to_string(),
        fields: vec![
            FieldSchema {
                is_primary_key: true,
                ..varchar("key", 512)
            },
            varchar("kind", 32),
            // base64 of the payload bytes.
            varchar("payload", 65_535),
            field("updated_at", DataType::Int64, &[]),
            // A collection needs a vector field; nothing searches this one.
            field(
                "_v",
                DataType::FloatVector,
                &[("dim", STATE_DIM.to_string())],
            ),
        ],
        ..CollectionSchema::default()
    }
}

/// One `CreateIndex` request's field, name and params (pymilvus order: params, metric, type).
pub(crate) struct IndexSpec {
    pub field: &'static str,
    pub params: Vec<KeyValuePair>,
}

pub(crate) fn chunk_indexes() -> Vec<IndexSpec> {
    vec![
        IndexSpec {
            field: "dense",
            params: vec![kv("metric_type", "COSINE"), kv("index_type", DENSE_INDEX)],
        },
        IndexSpec {
            field: "sparse",
            params: vec![
                kv("inverted_index_algo", "DAAT_MAXSCORE"),
                // Explicit: Lite's defaults (k1 = 1.5) differ from a cluster's and tantivy's.
                kv("bm25_k1", "1.2"),
                kv("bm25_b", "0.75"),
                kv("metric_type", "BM25"),
                kv("index_type", "SPARSE_INVERTED_INDEX"),
            ],
        },
    ]
}

pub(crate) fn state_indexes() -> Vec<IndexSpec> {
    vec![IndexSpec {
        field: "_v",
        params: vec![kv("metric_type", "L2"), kv("index_type", "FLAT")],
    }]
}

fn param<'a>(f: &'a FieldSchema, key: &str) -> Option<&'a str> {
    f.type_params
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

fn type_name(t: i32) -> String {
    DataType::try_from(t)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type {t}"))
}

/// Why `existing` cannot serve as `wanted`, or `None` when it can: every wanted field present
/// with the same type (element type, primary key, vector dimension), and the same functions.
/// Extra fields on the server are tolerated (a later Docent may add some).
pub(crate) fn incompatibility(
    wanted: &CollectionSchema,
    existing: &CollectionSchema,
) -> Option<String> {
    for w in &wanted.fields {
        let Some(e) = existing.fields.iter().find(|e| e.name == w.name) else {
            return Some(format!("field {} is missing", w.name));
        };
        if e.data_type != w.data_type {
            return Some(format!(
                "field {} is {}, expected {}",
                w.name,
                type_name(e.data_type),
                type_name(w.data_type)
            ));
        }
        if w.data_type == DataType::Array as i32 && e.element_type != w.element_type {
            return Some(format!(
                "field {} holds {}, expected {}",
                w.name,
                type_name(e.element_type),
                type_name(w.element_type)
            ));
        }
        if e.is_primary_key != w.is_primary_key {
            return Some(format!(
                "field {} primary key: {}, expected {}",
                w.name, e.is_primary_key, w.is_primary_key
            ));
        }
        if let Some(dim) = param(w, "dim")
            && param(e, "dim") != Some(dim)
        {
            return Some(format!(
                "field {} has dimension {}, expected {dim}",
                w.name,
                param(e, "dim").unwrap_or("(none)")
            ));
        }
    }
    for wf in &wanted.functions {
        let found = existing.functions.iter().any(|ef| {
            ef.r#type == wf.r#type
                && ef.input_field_names == wf.input_field_names
                && ef.output_field_names == wf.output_field_names
        });
        if !found {
            return Some(format!(
                "function {} ({:?} → {:?}) is missing",
                wf.name, wf.input_field_names, wf.output_field_names
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_schema_is_compatible() {
        let s = chunk_schema("c", 8);
        assert_eq!(incompatibility(&s, &s), None);
        let st = state_schema("c_state");
        assert_eq!(incompatibility(&st, &st), None);
    }

    #[test]
    fn other_dimension_or_missing_parts_are_not() {
        let wanted = chunk_schema("c", 8);
        assert_eq!(
            incompatibility(&wanted, &chunk_schema("c", 16)).as_deref(),
            Some("field dense has dimension 16, expected 8")
        );
        let mut no_bm25 = chunk_schema("c", 8);
        no_bm25.functions.clear();
        assert!(
            incompatibility(&wanted, &no_bm25)
                .unwrap()
                .contains("text_bm25")
        );
        let mut no_deny = chunk_schema("c", 8);
        no_deny.fields.retain(|f| f.name != "deny");
        assert_eq!(
            incompatibility(&wanted, &no_deny).as_deref(),
            Some("field deny is missing")
        );
        assert_eq!(
            incompatibility(&wanted, &state_schema("c")).as_deref(),
            Some("field chunk_id is missing")
        );
    }
}
