//! A validator for the subset of Swagger 2.0 that Firecracker's API definition uses.
//!
//! `api/firecracker.yaml` is the official definition, embedded here with `include_str!`. Both
//! sides of banger's Firecracker boundary are checked against it: the client's contract test
//! validates every body the client can produce, and the simulator (`banger-fcsim`) validates
//! every body it receives. A misspelt field therefore fails a test instead of reaching a VM.
//!
//! Supported keywords: `type` (object, array, string, integer, number, boolean), `properties`,
//! `required`, `additionalProperties` (bool or schema), `items`, `enum` (strings), `minimum`,
//! `maximum`, `format: int32|int64` (as integer ranges), and `$ref` to `#/definitions/<name>`.
//! Everything else (`description`, `default`, `example`, `readOnly`, string `format`s) is
//! ignored.
//!
//! One deliberate strictness: an object schema that lists `properties` and says nothing about
//! `additionalProperties` is treated as closed. JSON Schema would allow extra fields there, but
//! Firecracker's own parser denies unknown fields (`#[serde(deny_unknown_fields)]` on every
//! request type), so a body with an unknown field is rejected by the real VMM too.
//!
//! Routes come from the definition's `paths`: [`ApiSchema::route`] maps a method and a
//! concrete path (`/drives/rootfs`) to its template (`/drives/{drive_id}`) and the definition
//! its body must match.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;
use serde_yaml::Value as Yaml;

/// The official Firecracker API definition (Swagger 2.0), see `api/SOURCE`.
pub const FIRECRACKER_YAML: &str = include_str!("../api/firecracker.yaml");

/// [`FIRECRACKER_YAML`] as this validator reads it: every definition and route, as the typed
/// [`ApiSchema`] serialised to JSON, without the descriptions and examples the validator
/// ignores. It is what [`ApiSchema::firecracker`] loads: a simulator loads the definition at
/// every start, and building it from the YAML took several milliseconds of each VM's boot, from
/// the whole document as JSON 1.3 ms, from this well under a tenth of that. Generated from the
/// YAML; a test fails when the two differ (`BANGER_WRITE_API_JSON=1 cargo test -p
/// banger-firecracker --lib schema` rewrites it).
pub const FIRECRACKER_DIGEST: &str = include_str!("../api/firecracker.schema.json");

/// The definition could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text is not YAML.
    #[error("parsing the api definition as yaml")]
    Yaml(#[source] serde_yaml::Error),
    /// The text is not a definition digest.
    #[error("parsing the api definition digest")]
    Json(#[source] serde_json::Error),
    /// The YAML is not the shape this subset understands.
    #[error("api definition at {at}: {what}")]
    Shape {
        /// Where in the document (`definitions.Drive.properties.cache_type`).
        at: String,
        /// What was wrong.
        what: String,
    },
}

/// A body does not match its definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "body" } else { path.as_str() })]
pub struct SchemaViolation {
    /// Where in the body, dotted (`rx_rate_limiter.bandwidth.size`, `network_overrides[0]`);
    /// empty for the body itself.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// One schema node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Schema {
    /// `$ref: "#/definitions/<name>"`.
    Ref(String),
    /// `type: object`.
    Object {
        properties: BTreeMap<String, Schema>,
        required: Vec<String>,
        additional: Additional,
    },
    /// `type: array`.
    Array(Box<Schema>),
    /// `type: string`, optionally an `enum`.
    String(Option<Vec<String>>),
    /// `type: integer`, with inclusive bounds.
    Integer { min: Option<f64>, max: Option<f64> },
    /// `type: number`.
    Number { min: Option<f64>, max: Option<f64> },
    /// `type: boolean`.
    Boolean,
    /// No `type`: anything goes.
    Any,
}

/// What an object allows besides its listed properties.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Additional {
    /// Nothing (explicit `false`, or properties listed and the keyword absent; see module doc).
    Denied,
    /// Anything.
    Any,
    /// Values matching a schema.
    Schema(Box<Schema>),
}

/// One `paths.<template>.<method>` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    /// Upper-case HTTP method.
    pub method: String,
    /// The path template, e.g. `/drives/{drive_id}`.
    pub template: String,
    /// The definition the body must match, when the operation takes one.
    pub body: Option<String>,
    /// Whether the body parameter is required.
    pub body_required: bool,
}

/// The loaded definition: every `definitions` entry and every route.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiSchema {
    definitions: BTreeMap<String, Schema>,
    routes: Vec<Route>,
}

impl ApiSchema {
    /// The embedded official definition, parsed once per process.
    ///
    /// # Errors
    /// Only if the embedded file is broken, which the crate's tests rule out.
    pub fn firecracker() -> Result<&'static Self, &'static LoadError> {
        static CELL: OnceLock<Result<ApiSchema, LoadError>> = OnceLock::new();
        CELL.get_or_init(|| Self::from_digest(FIRECRACKER_DIGEST))
            .as_ref()
    }

    /// Loads a definition digest ([`FIRECRACKER_DIGEST`]'s form), checking its `$ref`s.
    ///
    /// # Errors
    /// When the text is not a digest, or refers to a definition it does not have.
    pub fn from_digest(text: &str) -> Result<Self, LoadError> {
        let schema: Self = serde_json::from_str(text).map_err(LoadError::Json)?;
        schema.check_refs()?;
        Ok(schema)
    }

    /// This definition as a digest, the text [`ApiSchema::from_digest`] loads: indented, so an
    /// update of the definition shows in review as the lines that changed.
    ///
    /// # Errors
    /// Never in practice: every part serialises.
    pub fn digest(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Parses a Swagger 2.0 document.
    ///
    /// # Errors
    /// When the text is not YAML or uses schema shapes outside the supported subset.
    pub fn parse(text: &str) -> Result<Self, LoadError> {
        Self::from_document(serde_yaml::from_str(text).map_err(LoadError::Yaml)?)
    }

    fn from_document(doc: Yaml) -> Result<Self, LoadError> {
        let mut definitions = BTreeMap::new();
        if let Some(defs) = doc.get("definitions").and_then(Yaml::as_mapping) {
            for (name, node) in defs {
                let name = key_str(name, "definitions")?;
                let at = format!("definitions.{name}");
                definitions.insert(name.to_owned(), parse_schema(node, &at)?);
            }
        }
        let mut routes = Vec::new();
        if let Some(paths) = doc.get("paths").and_then(Yaml::as_mapping) {
            for (template, ops) in paths {
                let template = key_str(template, "paths")?;
                let Some(ops) = ops.as_mapping() else {
                    continue;
                };
                for (method, op) in ops {
                    let method = key_str(method, template)?;
                    let at = format!("paths.{template}.{method}");
                    let (body, body_required) = body_parameter(op, &at)?;
                    routes.push(Route {
                        method: method.to_ascii_uppercase(),
                        template: template.to_owned(),
                        body,
                        body_required,
                    });
                }
            }
        }
        let schema = Self {
            definitions,
            routes,
        };
        schema.check_refs()?;
        Ok(schema)
    }

    /// Every route of the definition.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether `name` is a definition.
    pub fn has_definition(&self, name: &str) -> bool {
        self.definitions.contains_key(name)
    }

    /// The route for `method` on the concrete `path` (`/drives/rootfs` matches
    /// `/drives/{drive_id}`), with the path parameters it bound.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Route, BTreeMap<String, String>)> {
        self.routes
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method))
            .find_map(|r| match_template(&r.template, path).map(|params| (r, params)))
    }

    /// Whether any route has the concrete `path`, whatever the method (for telling "no such
    /// path" from "no such method").
    pub fn has_path(&self, path: &str) -> bool {
        self.routes
            .iter()
            .any(|r| match_template(&r.template, path).is_some())
    }

    /// Validates `value` against definition `name`.
    ///
    /// # Errors
    /// The first place where the body does not match; an unknown definition name is reported
    /// the same way (path empty).
    pub fn validate(&self, name: &str, value: &Value) -> Result<(), SchemaViolation> {
        let Some(schema) = self.definitions.get(name) else {
            return Err(violation("", format!("no definition named {name}")));
        };
        self.check(schema, value, &mut String::new())
    }

    /// The property names of definition `name` that `value` does not contain, recursively
    /// through nested objects and arrays (`rx_rate_limiter.bandwidth.one_time_burst`). The
    /// contract test uses it to prove its "every optional field set" bodies really set every
    /// field the definition knows.
    pub fn missing_properties(&self, name: &str, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(schema) = self.definitions.get(name) {
            self.collect_missing(schema, value, "", &mut out);
        }
        out
    }

    fn resolve<'a>(&'a self, schema: &'a Schema) -> Option<&'a Schema> {
        let mut s = schema;
        // Bounded: a definition that refers to itself directly is not in the subset.
        for _ in 0..16 {
            match s {
                Schema::Ref(name) => s = self.definitions.get(name)?,
                other => return Some(other),
            }
        }
        None
    }

    fn check(
        &self,
        schema: &Schema,
        value: &Value,
        path: &mut String,
    ) -> Result<(), SchemaViolation> {
        let Some(schema) = self.resolve(schema) else {
            return Err(violation(
                path,
                "the definition has an unresolvable $ref".to_owned(),
            ));
        };
        match schema {
            Schema::Ref(_) | Schema::Any => Ok(()),
            Schema::Boolean => match value {
                Value::Bool(_) => Ok(()),
                other => Err(type_violation(path, "a boolean", other)),
            },
            Schema::String(allowed) => {
                let Value::String(s) = value else {
                    return Err(type_violation(path, "a string", value));
                };
                match allowed {
                    Some(allowed) if !allowed.iter().any(|a| a == s) => Err(violation(
                        path,
                        format!("{s:?} is not one of {}", allowed.join(", ")),
                    )),
                    _ => Ok(()),
                }
            }
            Schema::Integer { min, max } => {
                let Value::Number(n) = value else {
                    return Err(type_violation(path, "an integer", value));
                };
                if !(n.is_i64() || n.is_u64()) {
                    return Err(violation(path, format!("{n} is not an integer")));
                }
                check_bounds(path, n, *min, *max)
            }
            Schema::Number { min, max } => {
                let Value::Number(n) = value else {
                    return Err(type_violation(path, "a number", value));
                };
                check_bounds(path, n, *min, *max)
            }
            Schema::Array(items) => {
                let Value::Array(elems) = value else {
                    return Err(type_violation(path, "an array", value));
                };
                for (i, elem) in elems.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.check(items, elem, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Schema::Object {
                properties,
                required,
                additional,
            } => {
                let Value::Object(fields) = value else {
                    return Err(type_violation(path, "an object", value));
                };
                if let Some(missing) = required.iter().find(|r| !fields.contains_key(*r)) {
                    return Err(violation(
                        path,
                        format!("missing required field `{missing}`"),
                    ));
                }
                for (key, field) in fields {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    let result = match (properties.get(key), additional) {
                        (Some(s), _) => self.check(s, field, path),
                        (None, Additional::Schema(s)) => self.check(s, field, path),
                        (None, Additional::Any) => Ok(()),
                        (None, Additional::Denied) => {
                            path.truncate(len);
                            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                            return Err(violation(
                                path,
                                format!(
                                    "unknown field `{key}`, expected one of {}",
                                    known.join(", ")
                                ),
                            ));
                        }
                    };
                    result?;
                    path.truncate(len);
                }
                Ok(())
            }
        }
    }

    fn collect_missing(&self, schema: &Schema, value: &Value, path: &str, out: &mut Vec<String>) {
        let Some(schema) = self.resolve(schema) else {
            return;
        };
        match (schema, value) {
            (Schema::Object { properties, .. }, Value::Object(fields)) => {
                for (key, sub) in properties {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match fields.get(key) {
                        Some(v) => self.collect_missing(sub, v, &at, out),
                        None => out.push(at),
                    }
                }
            }
            (Schema::Array(items), Value::Array(elems)) => {
                if elems.is_empty() {
                    out.push(format!("{path}[]"));
                }
                for (i, elem) in elems.iter().enumerate() {
                    self.collect_missing(items, elem, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    fn check_refs(&self) -> Result<(), LoadError> {
        fn walk(s: &Schema, defs: &BTreeMap<String, Schema>, at: &str) -> Result<(), LoadError> {
            match s {
                Schema::Ref(name) if !defs.contains_key(name) => Err(LoadError::Shape {
                    at: at.to_owned(),
                    what: format!("$ref to unknown definition {name}"),
                }),
                Schema::Object {
                    properties,
                    additional,
                    ..
                } => {
                    for (k, p) in properties {
                        walk(p, defs, &format!("{at}.{k}"))?;
                    }
                    if let Additional::Schema(a) = additional {
                        walk(a, defs, at)?;
                    }
                    Ok(())
                }
                Schema::Array(items) => walk(items, defs, at),
                _ => Ok(()),
            }
        }
        for (name, s) in &self.definitions {
            walk(s, &self.definitions, name)?;
        }
        for r in &self.routes {
            if let Some(body) = &r.body
                && !self.definitions.contains_key(body)
            {
                return Err(LoadError::Shape {
                    at: format!("paths.{}", r.template),
                    what: format!("body refers to unknown definition {body}"),
                });
            }
        }
        Ok(())
    }
}

fn violation(path: &str, message: String) -> SchemaViolation {
    SchemaViolation {
        path: path.to_owned(),
        message,
    }
}

fn type_violation(path: &str, expected: &str, got: &Value) -> SchemaViolation {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    violation(path, format!("expected {expected}, got {got}"))
}

fn check_bounds(
    path: &str,
    n: &serde_json::Number,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<(), SchemaViolation> {
    // Bounds in the definition are small (<= 2^32), so f64 compares them exactly enough; a
    // value too large for f64 precision is far outside every bound anyway.
    let Some(x) = n.as_f64() else {
        return Err(violation(path, format!("{n} is not a finite number")));
    };
    let below = |bound: f64| x < bound;
    let above = |bound: f64| x > bound;
    if let Some(min) = min
        && below(min)
    {
        return Err(violation(path, format!("{n} is below the minimum {min}")));
    }
    if let Some(max) = max
        && above(max)
    {
        return Err(violation(path, format!("{n} is above the maximum {max}")));
    }
    Ok(())
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

/// Matches `/drives/{drive_id}` against `/drives/rootfs`, binding `drive_id`.
fn match_template(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            params.insert(name.to_owned(), (*ps).to_owned());
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

fn key_str<'a>(key: &'a Yaml, at: &str) -> Result<&'a str, LoadError> {
    key.as_str().ok_or_else(|| LoadError::Shape {
        at: at.to_owned(),
        what: format!("key {key:?} is not a string"),
    })
}

fn shape(at: &str, what: impl Into<String>) -> LoadError {
    LoadError::Shape {
        at: at.to_owned(),
        what: what.into(),
    }
}

/// The body parameter of one operation: its definition name and whether it is required.
fn body_parameter(op: &Yaml, at: &str) -> Result<(Option<String>, bool), LoadError> {
    let Some(params) = op.get("parameters").and_then(Yaml::as_sequence) else {
        return Ok((None, false));
    };
    for p in params {
        if p.get("in").and_then(Yaml::as_str) != Some("body") {
            continue;
        }
        let required = p.get("required").and_then(Yaml::as_bool).unwrap_or(false);
        let reference = p
            .get("schema")
            .and_then(|s| s.get("$ref"))
            .and_then(Yaml::as_str)
            .ok_or_else(|| shape(at, "body parameter without a $ref schema"))?;
        return Ok((Some(ref_name(reference, at)?), required));
    }
    Ok((None, false))
}

fn ref_name(reference: &str, at: &str) -> Result<String, LoadError> {
    reference
        .strip_prefix("#/definitions/")
        .map(str::to_owned)
        .ok_or_else(|| shape(at, format!("unsupported $ref {reference:?}")))
}

fn number(node: &Yaml, key: &str, at: &str) -> Result<Option<f64>, LoadError> {
    match node.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| shape(at, format!("{key} is not a number"))),
    }
}

fn parse_schema(node: &Yaml, at: &str) -> Result<Schema, LoadError> {
    if let Some(reference) = node.get("$ref").and_then(Yaml::as_str) {
        return Ok(Schema::Ref(ref_name(reference, at)?));
    }
    let ty = node.get("type").and_then(Yaml::as_str);
    Ok(match ty {
        Some("object") | None if node.get("properties").is_some() || ty.is_some() => {
            let mut properties = BTreeMap::new();
            if let Some(props) = node.get("properties").and_then(Yaml::as_mapping) {
                for (k, v) in props {
                    let k = key_str(k, at)?;
                    properties.insert(k.to_owned(), parse_schema(v, &format!("{at}.{k}"))?);
                }
            }
            let required = match node.get("required").and_then(Yaml::as_sequence) {
                Some(seq) => seq
                    .iter()
                    .map(|r| r.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| shape(at, "required is not a list of names"))?,
                None => Vec::new(),
            };
            let additional = match node.get("additionalProperties") {
                Some(Yaml::Bool(true)) => Additional::Any,
                Some(Yaml::Bool(false)) => Additional::Denied,
                Some(schema) => Additional::Schema(Box::new(parse_schema(schema, at)?)),
                // See the module doc: closed when properties are listed, like Firecracker.
                None if node.get("properties").is_some() => Additional::Denied,
                None => Additional::Any,
            };
            Schema::Object {
                properties,
                required,
                additional,
            }
        }
        Some("array") => {
            let items = node
                .get("items")
                .ok_or_else(|| shape(at, "array without items"))?;
            Schema::Array(Box::new(parse_schema(items, &format!("{at}[]"))?))
        }
        Some("string") => {
            let allowed = match node.get("enum").and_then(Yaml::as_sequence) {
                Some(seq) => Some(
                    seq.iter()
                        .map(|v| match v {
                            Yaml::String(s) => Some(s.clone()),
                            // `enum: [2M]` style entries parse as YAML scalars of other types.
                            Yaml::Number(n) => Some(n.to_string()),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| shape(at, "enum holds a non-scalar"))?,
                ),
                None => None,
            };
            Schema::String(allowed)
        }
        Some("integer") => {
            let (fmin, fmax) = match node.get("format").and_then(Yaml::as_str) {
                Some("int32") => (Some(f64::from(i32::MIN)), Some(f64::from(i32::MAX))),
                _ => (None, None),
            };
            Schema::Integer {
                min: number(node, "minimum", at)?.or(fmin),
                max: number(node, "maximum", at)?.or(fmax),
            }
        }
        Some("number") => Schema::Number {
            min: number(node, "minimum", at)?,
            max: number(node, "maximum", at)?,
        },
        Some("boolean") => Schema::Boolean,
        Some(other) => return Err(shape(at, format!("unsupported type {other:?}"))),
        None => Schema::Any,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_digest_is_the_yaml_definition() {
        let from_yaml = ApiSchema::parse(FIRECRACKER_YAML).unwrap();
        let digest = from_yaml.digest().unwrap() + "\n";
        if std::env::var_os("BANGER_WRITE_API_JSON").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/api/firecracker.schema.json");
            std::fs::write(path, &digest).unwrap();
        }
        assert!(
            FIRECRACKER_DIGEST == digest,
            "api/firecracker.schema.json is not api/firecracker.yaml: rewrite it with \
             BANGER_WRITE_API_JSON=1 cargo test -p banger-firecracker --lib schema"
        );
        let loaded = ApiSchema::firecracker().unwrap();
        assert_eq!(*loaded, from_yaml);
        assert!(!loaded.routes().is_empty());
    }

    #[test]
    fn a_digest_with_a_dangling_ref_is_refused() {
        let mut broken = ApiSchema::parse(FIRECRACKER_YAML).unwrap();
        broken.definitions.remove("MachineConfiguration");
        let err = ApiSchema::from_digest(&broken.digest().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("MachineConfiguration")
                || format!("{err:?}").contains("MachineConfiguration"),
            "{err:?}"
        );
        assert!(matches!(
            ApiSchema::from_digest("{}"),
            Err(LoadError::Json(_))
        ));
    }

    use serde_json::json;

    use super::*;

    fn fc() -> &'static ApiSchema {
        ApiSchema::firecracker().unwrap()
    }

    #[test]
    fn the_embedded_definition_loads_with_every_route_and_definition() {
        let s = fc();
        for name in [
            "MachineConfiguration",
            "BootSource",
            "Drive",
            "NetworkInterface",
            "Vsock",
            "InstanceActionInfo",
            "Logger",
            "Metrics",
            "Vm",
            "SnapshotCreateParams",
            "SnapshotLoadParams",
        ] {
            assert!(s.has_definition(name), "{name}");
        }
        let (route, params) = s.route("PUT", "/drives/rootfs").unwrap();
        assert_eq!(route.template, "/drives/{drive_id}");
        assert_eq!(route.body.as_deref(), Some("Drive"));
        assert_eq!(params["drive_id"], "rootfs");
        assert_eq!(
            s.route("PATCH", "/vm").unwrap().0.body.as_deref(),
            Some("Vm")
        );
        assert!(s.route("GET", "/").unwrap().0.body.is_none());
        assert!(s.route("PUT", "/nope").is_none());
        assert!(s.route("DELETE", "/vm").is_none());
        assert!(s.has_path("/vm"));
    }

    #[test]
    fn a_misspelt_field_is_rejected_naming_it() {
        let err = fc()
            .validate(
                "MachineConfiguration",
                &json!({"vcpu_count": 2, "mem_size_mb": 256}),
            )
            .unwrap_err();
        // The required field is reported first: the typo left it missing.
        assert!(err.message.contains("mem_size_mib"), "{err}");
        let err = fc()
            .validate(
                "MachineConfiguration",
                &json!({"vcpu_count": 2, "mem_size_mib": 256, "smt_enabled": false}),
            )
            .unwrap_err();
        assert!(err.message.contains("unknown field `smt_enabled`"), "{err}");
    }

    #[test]
    fn nested_refs_are_followed_and_errors_name_the_nested_path() {
        let err = fc()
            .validate(
                "NetworkInterface",
                &json!({
                    "iface_id": "eth0",
                    "host_dev_name": "tap0",
                    "rx_rate_limiter": {"bandwidth": {"size": "big", "refill_time": 1}}
                }),
            )
            .unwrap_err();
        assert_eq!(err.path, "rx_rate_limiter.bandwidth.size");
        assert!(err.message.contains("expected an integer"), "{err}");
    }

    #[test]
    fn bounds_enums_and_types_are_enforced() {
        let s = fc();
        let mc = |v: Value| s.validate("MachineConfiguration", &v);
        assert!(mc(json!({"vcpu_count": 1, "mem_size_mib": 128})).is_ok());
        assert!(mc(json!({"vcpu_count": 0, "mem_size_mib": 128})).is_err());
        assert!(mc(json!({"vcpu_count": 33, "mem_size_mib": 128})).is_err());
        assert!(mc(json!({"vcpu_count": 1.5, "mem_size_mib": 128})).is_err());
        assert!(mc(json!({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"})).is_ok());
        assert!(mc(json!({"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "4M"})).is_err());
        assert!(mc(json!({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"})).is_ok());
        assert!(mc(json!({"vcpu_count": "1", "mem_size_mib": 128})).is_err());
        assert!(mc(json!([1])).is_err());
        assert!(
            s.validate("Vsock", &json!({"guest_cid": 2, "uds_path": "/x"}))
                .is_err()
        );
        assert!(s.validate("Vm", &json!({"state": "Stopped"})).is_err());
        let nic = json!({"iface_id": "a", "host_dev_name": "t", "mtu": 67});
        assert!(s.validate("NetworkInterface", &nic).is_err());
        assert!(s.validate("Nope", &json!({})).is_err());
    }

    #[test]
    fn additional_properties_schemas_are_applied() {
        let s = fc();
        let ok = json!({"metrics_path": "/m", "properties": {"a": "b"}});
        assert!(s.validate("Metrics", &ok).is_ok());
        let bad = json!({"metrics_path": "/m", "properties": {"a": 1}});
        assert_eq!(
            s.validate("Metrics", &bad).unwrap_err().path,
            "properties.a"
        );
        assert!(
            s.validate("MmdsContentsObject", &json!({"any": {"thing": 1}}))
                .is_ok()
        );
    }

    #[test]
    fn missing_properties_lists_unset_optional_fields() {
        let missing = fc().missing_properties(
            "BootSource",
            &json!({"kernel_image_path": "/k", "boot_args": "x"}),
        );
        assert_eq!(missing, vec!["initrd_path".to_owned()]);
    }

    #[test]
    fn a_ref_to_an_unknown_definition_fails_loading() {
        let doc = "definitions:\n  A:\n    type: object\n    properties:\n      b:\n        $ref: \"#/definitions/B\"\n";
        assert!(matches!(
            ApiSchema::parse(doc),
            Err(LoadError::Shape { .. })
        ));
    }
}
