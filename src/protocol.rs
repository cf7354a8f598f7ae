//! The Ansible side: reading module arguments and writing the one JSON result.
//!
//! Input is a file holding a bare JSON object (ansible-core writes the task's options plus its
//! own `_ansible_*` keys). The `_ansible_*` keys are split off first: `_ansible_check_mode`,
//! `_ansible_diff` and `_ansible_inject_invocation` are honoured, every other one is ignored,
//! whatever future cores add. The rest is
//! checked against the action's JSON schema: unknown options are rejected by name, required ones
//! must be present, and values are coerced the way `AnsibleModule` does ("yes" and "1" for
//! booleans, "3" for integers, "a,b" for lists). Only then is it deserialized into the typed
//! options struct.
//!
//! Output is exactly one JSON object (see [`module_result`]), with every value of a `no_log`
//! option masked wherever it appears, and never an `_ansible_*` key.

use std::io::Read as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::outcome::Outcome;

/// Largest args or params file accepted. Module options are a few hundred bytes; anything near
/// this is a wrong file, and reading it all would only waste memory.
pub const MAX_ARGS_BYTES: u64 = 1024 * 1024;

pub use crate::secrets::{NO_LOG_MASK, NO_LOG_VALUE, mask};

/// Schema extension keyword marking an option whose value must never appear in output.
pub const NO_LOG_KEYWORD: &str = "x-no-log";

/// Schema extension keyword listing an option's other names (Ansible's `aliases`).
pub const ALIASES_KEYWORD: &str = "x-aliases";

/// Schema extension keyword marking a URL option whose `user:password@` part, if any, must never
/// appear in output.
pub const NO_LOG_USERINFO_KEYWORD: &str = "x-no-log-userinfo";

/// Top-level result keys owned by the protocol; actions may not use them for their data.
pub const RESERVED_KEYS: &[&str] = &[
    "changed",
    "failed",
    "msg",
    "hint",
    "failed_step",
    "warnings",
    "diff",
    "invocation",
    "skipped",
    "deprecations",
    "exception",
    "rc",
];

/// What ansible-core tells the module through `_ansible_*` keys, as far as kubemend cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches, each set by one `_ansible_*` key or CLI flag"
)]
pub struct Flags {
    /// `_ansible_check_mode`: report what would change, change nothing.
    pub check_mode: bool,
    /// `_ansible_diff`: include `diff` in the result.
    pub diff: bool,
    /// Print progress lines on stderr as long steps advance (the CLI; never in module mode,
    /// where stderr is not shown).
    pub progress: bool,
    /// `_ansible_inject_invocation: false`: leave `invocation` out of the result. ansible-core
    /// 2.21 sends the key (its INJECT_INVOCATION setting, off by default); older cores do not,
    /// and always expect `invocation`.
    pub omit_invocation: bool,
}

/// Reads an args or params file, refusing files larger than [`MAX_ARGS_BYTES`].
pub fn read_input(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    let read_err = |source| Error::ReadInput {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // `take` bounds the read even for files that grow or lie about their size (pipes, /dev/zero).
    file.take(MAX_ARGS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_ARGS_BYTES {
        return Err(Error::InputTooLarge {
            what,
            path: path.to_owned(),
            limit: MAX_ARGS_BYTES,
        });
    }
    Ok(bytes)
}

/// Parses the bytes of a module args file: must be a non-empty UTF-8 JSON object.
pub fn parse_args_bytes(bytes: &[u8], path: &Path) -> Result<Map<String, Value>> {
    let text = input_text(bytes, path, "args file")?;
    let value: Value = serde_json::from_str(text).map_err(|source| Error::InputNotJson {
        what: "args file",
        path: path.to_owned(),
        source,
    })?;
    into_object(value, path, "args file")
}

/// Parses the bytes of a CLI params file: a JSON or YAML object, same options as the module.
pub fn parse_params_bytes(bytes: &[u8], path: &Path) -> Result<Map<String, Value>> {
    let text = input_text(bytes, path, "params file")?;
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => serde_saphyr::from_str(text).map_err(|err| Error::InputNotYaml {
            what: "params file",
            path: path.to_owned(),
            location: err
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column())),
        })?,
    };
    into_object(value, path, "params file")
}

fn input_text<'a>(bytes: &'a [u8], path: &Path, what: &'static str) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InputNotUtf8 {
        what,
        path: path.to_owned(),
    })?;
    if text.trim().is_empty() {
        return Err(Error::InputEmpty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(text)
}

fn into_object(value: Value, path: &Path, what: &'static str) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(Error::InputNotObject {
            what,
            path: path.to_owned(),
            found: json_kind(&other),
        }),
    }
}

/// "an array", "a string", ...: for messages.
#[must_use]
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Splits off every `_ansible_*` key, returning the module options and the flags that matter.
///
/// Unknown `_ansible_*` keys are dropped silently: each ansible-core release adds some.
pub fn split_internal(args: Map<String, Value>) -> Result<(Map<String, Value>, Flags)> {
    let mut options = Map::new();
    let mut flags = Flags::default();
    for (key, value) in args {
        match key.as_str() {
            "_ansible_check_mode" => flags.check_mode = internal_bool(&key, &value)?,
            "_ansible_diff" => flags.diff = internal_bool(&key, &value)?,
            "_ansible_inject_invocation" => flags.omit_invocation = !internal_bool(&key, &value)?,
            _ if key.starts_with("_ansible_") => {}
            _ => {
                options.insert(key, value);
            }
        }
    }
    Ok((options, flags))
}

fn internal_bool(key: &str, value: &Value) -> Result<bool> {
    // Guessing "false" for a check-mode flag we cannot read (null included) would make
    // changes during --check.
    coerce_bool(value).ok_or_else(|| Error::InvalidOption {
        option: key.to_owned(),
        problem: format!("expected a boolean, got {}", json_kind(value)),
    })
}

/// Ansible's boolean coercion (`check_type_bool`): true/yes/on/y/t/1 and their opposites.
#[must_use]
pub fn coerce_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(1), _) => Some(true),
            (Some(0), _) => Some(false),
            #[allow(clippy::float_cmp, reason = "Ansible accepts exactly 1.0 and 0.0")]
            (None, Some(x)) if x == 1.0 || x == 0.0 => Some(x == 1.0),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" | "t" | "1" | "1.0" => Some(true),
            "false" | "no" | "off" | "n" | "f" | "0" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Checks `options` against `schema` (a schemars root schema), coercing Ansible-style values,
/// and returns the options ready for deserialization.
///
/// Top-level `null` values mean "not given", as with `AnsibleModule`.
pub fn validate_options(
    module: &str,
    schema: &Value,
    options: Map<String, Value>,
) -> Result<Map<String, Value>> {
    let options: Map<String, Value> = options.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let validator = Validator { root: schema };
    match validator.coerce_object(module, "", schema, options)? {
        Value::Object(map) => Ok(map),
        _ => unreachable!("coerce_object returns an object"),
    }
}

/// Deserializes validated options into the typed struct, naming the option on failure.
pub fn deserialize_options<T: DeserializeOwned>(options: Map<String, Value>) -> Result<T> {
    let options = Value::Object(options);
    serde_path_to_error::deserialize(options.clone()).map_err(|err| {
        let option = err.path().to_string();
        let problem = err.into_inner().to_string();
        Error::InvalidOption {
            option: if option == "." {
                options
                    .as_object()
                    .and_then(|o| culprit::<T>(o, &problem))
                    .unwrap_or_else(|| "(options)".into())
            } else {
                option
            },
            problem,
        }
    })
}

/// The option an error without a path is about: serde loses the path inside a flattened
/// struct (the options every rolling operation shares), so each option is left out in turn,
/// and the one whose absence makes the error go (not turn into another) is named.
fn culprit<T: DeserializeOwned>(options: &Map<String, Value>, problem: &str) -> Option<String> {
    options
        .keys()
        .find(|key| {
            let mut without = options.clone();
            without.remove(key.as_str());
            // The very deserialization of the options (one instance of the generated code).
            match serde_path_to_error::deserialize::<_, T>(Value::Object(without)) {
                Ok(_) => true,
                Err(other) => {
                    let other = other.into_inner().to_string();
                    other != problem && !other.starts_with("missing field")
                }
            }
        })
        .cloned()
}

/// Walks a schemars-generated schema (JSON Schema 2020-12 subset) alongside a value.
struct Validator<'a> {
    root: &'a Value,
}

impl<'a> Validator<'a> {
    /// Follows `$ref` into `$defs`, a bounded number of times.
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                return schema;
            };
            let Some(name) = reference.strip_prefix("#/$defs/") else {
                return schema;
            };
            match self.root.get("$defs").and_then(|defs| defs.get(name)) {
                Some(target) => schema = target,
                None => return schema,
            }
        }
        schema
    }

    fn coerce(&self, module: &str, path: &str, schema: &'a Value, value: Value) -> Result<Value> {
        let schema = self.resolve(schema);
        if let Some(alternatives) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            return self.coerce_alternatives(module, path, alternatives, value);
        }
        let types = schema_types(schema);
        if value.is_null() {
            return if types.is_empty() || types.contains(&"null") {
                Ok(Value::Null)
            } else {
                Err(invalid(path, "must not be null"))
            };
        }
        let value = if types.is_empty() {
            value
        } else {
            self.coerce_typed(module, path, schema, &types, &value)?
        };
        check_enum(path, schema, &value)?;
        Ok(value)
    }

    fn coerce_alternatives(
        &self,
        module: &str,
        path: &str,
        alternatives: &'a [Value],
        value: Value,
    ) -> Result<Value> {
        let consts: Option<Vec<&Value>> = alternatives
            .iter()
            .map(|alt| self.resolve(alt))
            .filter(|alt| schema_types(alt) != ["null"])
            .map(|alt| alt.get("const"))
            .collect();
        if let Some(consts) = consts.filter(|c| !c.is_empty()) {
            if value.is_null() && alternatives.iter().any(|a| schema_types(a) == ["null"]) {
                return Ok(Value::Null);
            }
            if consts.contains(&&value) {
                return Ok(value);
            }
            return Err(invalid(
                path,
                &format!(
                    "must be one of {}, got {}",
                    list_values(&consts),
                    show(&value)
                ),
            ));
        }
        let mut first_err = None;
        for alt in alternatives {
            match self.coerce(module, path, alt, value.clone()) {
                Ok(v) => return Ok(v),
                Err(err) => {
                    if first_err.is_none() && schema_types(self.resolve(alt)) != ["null"] {
                        first_err = Some(err);
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| invalid(path, "has an unsupported value")))
    }

    fn coerce_typed(
        &self,
        module: &str,
        path: &str,
        schema: &'a Value,
        types: &[&str],
        value: &Value,
    ) -> Result<Value> {
        // A value already of an accepted type is only checked; otherwise try each coercion.
        let native = types.iter().find(|t| is_type(value, t)).copied();
        let order: Vec<&str> = native
            .into_iter()
            .chain(types.iter().copied().filter(|t| Some(*t) != native))
            .filter(|t| *t != "null")
            .collect();
        let mut first_err = None;
        for ty in order {
            let attempt = match ty {
                "boolean" => coerce_bool(value)
                    .map(Value::Bool)
                    .ok_or_else(|| expected(path, "a boolean", value)),
                "integer" => coerce_integer(path, schema, value),
                "number" => coerce_number(path, value),
                "string" => coerce_string(path, value),
                "array" => self.coerce_array(module, path, schema, value.clone()),
                "object" => self.coerce_object(module, path, schema, object_from(path, value)?),
                _ => Ok(value.clone()),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(err) => {
                    if first_err.is_none() {
                        first_err = Some(err);
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| invalid(path, "has an unsupported type")))
    }

    fn coerce_array(
        &self,
        module: &str,
        path: &str,
        schema: &'a Value,
        value: Value,
    ) -> Result<Value> {
        let items = match value {
            Value::Array(items) => items,
            Value::String(s) if s.trim_start().starts_with('[') => {
                match serde_json::from_str::<Value>(&s) {
                    Ok(Value::Array(items)) => items,
                    _ => return Err(expected(path, "a list", &Value::String(s))),
                }
            }
            // An empty string is not an empty list: a templated variable that came out empty
            // must not silently replace a default (stuck_pods' exclude_namespaces).
            Value::String(s) if s.trim().is_empty() => {
                return Err(invalid(
                    path,
                    "is an empty string: give a list ([] for none), or omit the option to keep \
                     its default",
                ));
            }
            // Ansible's check_type_list: "a,b" is a list of two.
            Value::String(s) => s
                .split(',')
                .map(|part| Value::String(part.trim().to_owned()))
                .collect(),
            Value::Number(n) => vec![Value::String(n.to_string())],
            other => return Err(expected(path, "a list", &other)),
        };
        let item_schema = schema.get("items");
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let item_path = format!("{}[{index}]", display_path(path));
            out.push(match item_schema {
                Some(item_schema) => self.coerce(module, &item_path, item_schema, item)?,
                None => item,
            });
        }
        Ok(Value::Array(out))
    }

    fn coerce_object(
        &self,
        module: &str,
        path: &str,
        schema: &'a Value,
        object: Map<String, Value>,
    ) -> Result<Value> {
        let schema = self.resolve(schema);
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let object = resolve_aliases(module, path, properties, object)?;
        let additional = schema.get("additionalProperties");
        let open = match additional {
            Some(Value::Bool(b)) => *b,
            Some(Value::Object(_)) => true,
            _ => properties.is_empty(),
        };
        let unknown: Vec<String> = object
            .keys()
            .filter(|key| !properties.contains_key(*key))
            .map(|key| join_path(path, key))
            .collect();
        if !open && !unknown.is_empty() {
            return Err(Error::UnknownOptions {
                module: module.to_owned(),
                unknown,
                supported: properties.keys().cloned().collect(),
            });
        }
        let missing: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|name| object.get(*name).is_none_or(Value::is_null))
            .map(|name| join_path(path, name))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingOptions {
                module: module.to_owned(),
                missing,
            });
        }
        let mut out = Map::new();
        for (key, value) in object {
            let child_path = join_path(path, &key);
            let coerced = match properties
                .get(&key)
                .or(additional.filter(|a| a.is_object()))
            {
                Some(child_schema) => self.coerce(module, &child_path, child_schema, value)?,
                None => value,
            };
            out.insert(key, coerced);
        }
        Ok(Value::Object(out))
    }
}

/// Renames options given by an alias (`x-aliases` in the property schema, as Ansible's
/// `aliases`) to their name; an option given both ways is refused.
fn resolve_aliases(
    module: &str,
    path: &str,
    properties: &Map<String, Value>,
    mut object: Map<String, Value>,
) -> Result<Map<String, Value>> {
    for (name, property) in properties {
        let aliases = property
            .get(ALIASES_KEYWORD)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for alias in aliases {
            let Some(value) = object.remove(alias) else {
                continue;
            };
            if object.get(name).is_some_and(|v| !v.is_null()) && !value.is_null() {
                return Err(Error::InvalidOption {
                    option: join_path(path, name),
                    problem: format!(
                        "given twice for module {module}, also as its alias {}",
                        join_path(path, alias)
                    ),
                });
            }
            if !value.is_null() || !object.contains_key(name) {
                object.insert(name.clone(), value);
            }
        }
    }
    Ok(object)
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_type(value: &Value, ty: &str) -> bool {
    match ty {
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => false,
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "floats are cast only when integral and below 2^53"
)]
fn coerce_integer(path: &str, schema: &Value, value: &Value) -> Result<Value> {
    let parsed: Option<i128> = match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                    .map(|x| x as i128)
            }),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    let Some(number) = parsed else {
        return Err(expected(path, "an integer", value));
    };
    let (min, max) = integer_bounds(schema);
    if number < min || number > max {
        return Err(invalid(
            path,
            &format!("must be between {min} and {max}, got {number}"),
        ));
    }
    Ok(i64::try_from(number)
        .map(Value::from)
        .or_else(|_| u64::try_from(number).map(Value::from))
        .unwrap_or(Value::Null))
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "schema bounds are small integers written as floats"
)]
fn integer_bounds(schema: &Value) -> (i128, i128) {
    let (mut min, mut max) = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => (0, i128::from(u8::MAX)),
        Some("uint16") => (0, i128::from(u16::MAX)),
        Some("uint32" | "uint") => (0, i128::from(u32::MAX)),
        Some("uint64") => (0, i128::from(u64::MAX)),
        Some("int8") => (i128::from(i8::MIN), i128::from(i8::MAX)),
        Some("int16") => (i128::from(i16::MIN), i128::from(i16::MAX)),
        Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
        _ => (i128::from(i64::MIN), i128::from(u64::MAX)),
    };
    if let Some(m) = schema.get("minimum").and_then(Value::as_f64) {
        min = min.max(m.ceil() as i128);
    }
    if let Some(m) = schema.get("maximum").and_then(Value::as_f64) {
        max = max.min(m.floor() as i128);
    }
    (min, max)
}

fn coerce_number(path: &str, value: &Value) -> Result<Value> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    };
    parsed
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| expected(path, "a number", value))
}

fn coerce_string(path: &str, value: &Value) -> Result<Value> {
    match value {
        Value::String(_) => Ok(value.clone()),
        // YAML turns an unquoted 1234 into a number; Ansible converts it back to a string.
        Value::Number(n) if !n.is_f64() => Ok(Value::String(n.to_string())),
        // A float is not: YAML made 3.20 of `3.20`, whose text is lost (3.2 is another
        // version). Ansible warns; kubemend refuses.
        Value::Number(n) => Err(invalid(
            path,
            &format!(
                "got the number {n}: YAML read unquoted text as a number and lost how it was \
                 written (3.20 becomes 3.2); quote the value"
            ),
        )),
        other => Err(expected(path, "a string", other)),
    }
}

fn object_from(path: &str, value: &Value) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map.clone()),
        // A templated or command-line mapping arrives as text: accept JSON or YAML flow style.
        Value::String(s) if !s.trim().is_empty() => {
            let parsed: Option<Value> = serde_json::from_str(s)
                .ok()
                .or_else(|| serde_saphyr::from_str(s).ok());
            match parsed {
                Some(Value::Object(map)) => Ok(map),
                _ => Err(expected(path, "a mapping", value)),
            }
        }
        other => Err(expected(path, "a mapping", other)),
    }
}

fn check_enum(path: &str, schema: &Value, value: &Value) -> Result<()> {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let allowed: Vec<&Value> = allowed.iter().collect();
        return Err(invalid(
            path,
            &format!(
                "must be one of {}, got {}",
                list_values(&allowed),
                show(value)
            ),
        ));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(invalid(
            path,
            &format!("must be {}, got {}", show(constant), show(value)),
        ));
    }
    Ok(())
}

fn list_values(values: &[&Value]) -> String {
    values
        .iter()
        .map(|v| show(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value for a message: short, never the whole of a huge input.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn expected(path: &str, what: &str, value: &Value) -> Error {
    let got = match value {
        Value::String(_) => format!("{} {}", json_kind(value), show(value)),
        _ => json_kind(value).to_owned(),
    };
    invalid(path, &format!("expected {what}, got {got}"))
}

fn invalid(path: &str, problem: &str) -> Error {
    Error::InvalidOption {
        option: display_path(path).to_owned(),
        problem: problem.to_owned(),
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "(options)" } else { path }
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The values of every option marked `no_log` in the schema (top level), as given.
///
/// Taken from the raw options so that masking works even when validation fails.
#[must_use]
pub fn no_log_values(schema: &Value, raw: &Map<String, Value>) -> Vec<String> {
    let mut secrets = Vec::new();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return secrets;
    };
    for (name, property) in properties {
        if property.get(NO_LOG_USERINFO_KEYWORD) == Some(&Value::Bool(true))
            && let Some(Value::String(url)) = raw.get(name)
        {
            secrets.extend(url_userinfo(url));
        }
        if property.get(NO_LOG_KEYWORD) != Some(&Value::Bool(true)) {
            continue;
        }
        if let Some(value) = raw.get(name) {
            leaves(value, &mut secrets);
        }
    }
    secrets.retain(|s| !s.is_empty());
    with_trimmed(&mut secrets);
    secrets
}

/// Every string and number inside `value`, as text: what Ansible adds to its no_log values for
/// an option's value (booleans and nulls are not secrets).
fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|item| leaves(item, out)),
        Value::Object(map) => map.values().for_each(|item| leaves(item, out)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// Everything needed to print the result of one invocation.
#[derive(Debug)]
pub struct Report {
    /// Module name.
    pub module: String,
    /// Flags from ansible-core or the CLI.
    pub flags: Flags,
    /// The options after validation (defaults filled in), or as given when validation failed.
    pub module_args: Map<String, Value>,
    /// Values to mask.
    pub secrets: Vec<String>,
    /// What the action found and did; `None` when it never started (bad input).
    pub outcome: Option<Outcome>,
    /// The step that failed and why.
    pub failure: Option<(&'static str, Error)>,
}

impl Report {
    /// A report for a run about to start.
    #[must_use]
    pub fn new(
        module: &str,
        flags: Flags,
        module_args: Map<String, Value>,
        secrets: Vec<String>,
    ) -> Self {
        Self {
            module: module.to_owned(),
            flags,
            module_args,
            secrets,
            outcome: None,
            failure: None,
        }
    }

    /// A report for a failure before any options could be read.
    #[must_use]
    pub fn early_failure(module: &str, error: Error) -> Self {
        let mut report = Self::new(module, Flags::default(), Map::new(), env_secrets());
        report.fail("validate", error);
        report
    }

    /// Records the outcome of the run, its typed report turned into result keys.
    pub fn set_outcome<R: serde::Serialize>(&mut self, outcome: Outcome<R>) {
        self.outcome = Some(outcome.into_json());
    }

    /// Records the failure of `step`.
    pub fn fail(&mut self, step: &'static str, error: Error) {
        self.failure = Some((step, error));
    }

    /// Whether the run failed.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Whether the run changed (or, in check mode, would change) something, also when it
    /// failed after a change. A check-mode run that failed changed nothing and, having not
    /// finished its plan, cannot say what it would change: false.
    #[must_use]
    pub fn changed(&self) -> bool {
        if self.flags.check_mode && self.failed() {
            return false;
        }
        self.outcome.as_ref().is_some_and(|o| o.changed)
    }
}

/// Secrets that may be in play without being options: the AWX-injected token.
#[must_use]
pub fn env_secrets() -> Vec<String> {
    let mut secrets: Vec<String> = ["K8S_AUTH_API_KEY"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .filter(|value| !value.is_empty())
        .collect();
    with_trimmed(&mut secrets);
    if let Ok(host) = std::env::var("K8S_AUTH_HOST") {
        secrets.extend(url_userinfo(&host));
    }
    secrets
}

/// The `user:password@` part of a URL and the password alone, if it has one.
#[must_use]
pub fn url_userinfo(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let mut found = vec![userinfo.to_owned()];
    if let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        found.push(password.to_owned());
    }
    found.retain(|s| !s.is_empty());
    found
}

/// Adds the form without a trailing line break of every secret that has one: a token is sent
/// (and may be echoed) without it.
fn with_trimmed(secrets: &mut Vec<String>) {
    let trimmed: Vec<String> = secrets
        .iter()
        .map(|s| s.trim_end_matches(['\n', '\r']))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .filter(|t| !secrets.contains(t))
        .collect();
    secrets.extend(trimmed);
}

/// The module result: one JSON object with `changed`, `failed`, `msg` (on failure the error,
/// with `hint` and `failed_step`), the action's report keys (also on failure, as far as the run
/// got), `warnings`, `diff` (in diff mode), `invocation.module_args` (unless ansible-core
/// asked for none), all masked.
#[must_use]
pub fn module_result(report: &Report) -> Value {
    let mut out = Map::new();
    out.insert("changed".into(), Value::Bool(report.changed()));
    out.insert("failed".into(), Value::Bool(report.failed()));
    let empty = Outcome::default();
    let outcome = report.outcome.as_ref().unwrap_or(&empty);
    match &report.failure {
        None => {
            out.insert("msg".into(), Value::String(outcome.msg.clone()));
        }
        Some((step, error)) => {
            let hint = error.hint();
            let mut msg = error.message_with_causes();
            if let Some(hint) = &hint {
                msg = format!("{msg} (hint: {hint})");
            }
            out.insert("msg".into(), Value::String(msg));
            if let Some(hint) = hint {
                out.insert("hint".into(), Value::String(hint));
            }
            out.insert("failed_step".into(), Value::String((*step).to_owned()));
        }
    }
    if let Some(skipped) = outcome.skipped {
        out.insert("skipped".into(), Value::Bool(skipped));
    }
    for (key, value) in &outcome.report {
        if !RESERVED_KEYS.contains(&key.as_str()) && !key.starts_with("_ansible_") {
            out.insert(key.clone(), value.clone());
        }
    }
    if report.outcome.is_some() {
        out.insert(
            "warnings".into(),
            Value::Array(
                outcome
                    .warnings
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        );
    }
    if report.flags.diff && !outcome.diff.is_empty() {
        let diffs: Vec<Value> = outcome
            .diff
            .iter()
            .map(crate::outcome::Diff::to_json)
            .collect();
        let diff = match <[Value; 1]>::try_from(diffs) {
            Ok([single]) => single,
            Err(many) => Value::Array(many),
        };
        out.insert("diff".into(), diff);
    }
    if !report.flags.omit_invocation {
        let mut args = report.module_args.clone();
        args.retain(|key, _| !key.starts_with("_ansible_"));
        let mut invocation = Map::new();
        invocation.insert("module_args".into(), Value::Object(args));
        out.insert("invocation".into(), Value::Object(invocation));
    }
    let mut value = Value::Object(out);
    mask(&mut value, &report.secrets);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer", "format": "uint32", "minimum": 0},
                "force": {"type": "boolean", "default": false},
                "tags": {"type": "array", "items": {"type": "string"}},
                "api_key": {"type": ["string", "null"], "x-no-log": true},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "rules": {"type": ["array", "null"], "items": {"$ref": "#/$defs/Rule"}},
                "kind": {"anyOf": [{"$ref": "#/$defs/Kind"}, {"type": "null"}]}
            },
            "required": ["name"],
            "$defs": {
                "Rule": {
                    "type": "object",
                    "properties": {
                        "verbs": {"type": "array", "items": {"type": "string"}},
                        "resources": {"type": "array", "items": {"type": "string"}}
                    },
                    "required": ["verbs"]
                },
                "Kind": {"oneOf": [
                    {"type": "string", "const": "mutating"},
                    {"type": "string", "const": "validating"}
                ]}
            }
        })
    }

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn validate(value: Value) -> Result<Map<String, Value>> {
        validate_options("probe", &schema(), obj(value))
    }

    #[test]
    fn ansible_booleans_and_numeric_strings_are_coerced() {
        for (given, want) in [
            ("yes", true),
            ("no", false),
            ("True", true),
            ("1", true),
            ("on", true),
            ("off", false),
        ] {
            let got = validate(json!({"name": "a", "force": given})).unwrap();
            assert_eq!(got["force"], json!(want), "{given}");
        }
        let got = validate(json!({"name": 1234, "count": "3", "tags": "a, b"})).unwrap();
        assert_eq!(got["name"], json!("1234"));
        assert_eq!(got["count"], json!(3));
        assert_eq!(got["tags"], json!(["a", "b"]));
        let got = validate(json!({"name": "a", "count": 4.0})).unwrap();
        assert_eq!(got["count"], json!(4));
    }

    #[test]
    fn wrong_type_names_the_option() {
        let err = validate(json!({"name": "a", "force": "maybe"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for option \"force\": expected a boolean, got a string \"maybe\""
        );
        let err = validate(json!({"name": "a", "count": -1})).unwrap_err();
        assert!(err.to_string().contains("\"count\""), "{err}");
        let err = validate(json!({"name": "a", "count": "many"})).unwrap_err();
        assert!(err.to_string().contains("expected an integer"), "{err}");
        let err = validate(json!({"name": "a", "mode": "medium"})).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be one of \"fast\", \"slow\""),
            "{err}"
        );
        let err = validate(json!({"name": "a", "kind": "both"})).unwrap_err();
        assert!(err.to_string().contains("\"kind\""), "{err}");
        assert!(err.to_string().contains("\"mutating\""), "{err}");
    }

    #[test]
    fn unknown_option_is_rejected_with_the_valid_ones_listed() {
        let err = validate(json!({"name": "a", "nmae": "b"})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nmae"), "{text}");
        assert!(
            text.contains("supported options are: name, count, force"),
            "{text}"
        );
    }

    #[test]
    fn missing_required_option_is_named() {
        let err = validate(json!({"force": true})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required option(s) for module probe: name"
        );
        // null means "not given"
        let err = validate(json!({"name": null})).unwrap_err();
        assert!(err.to_string().contains("missing required option"), "{err}");
    }

    #[test]
    fn aliases_are_renamed_and_both_forms_refused() {
        let schema = json!({
            "type": "object",
            "properties": {
                "validate_certs": {"type": ["boolean", "null"], "x-aliases": ["verify_ssl"]}
            }
        });
        let got = validate_options("probe", &schema, obj(json!({"verify_ssl": "no"}))).unwrap();
        assert_eq!(got, obj(json!({"validate_certs": false})));
        let err = validate_options(
            "probe",
            &schema,
            obj(json!({"verify_ssl": true, "validate_certs": false})),
        )
        .unwrap_err();
        assert!(err.to_string().contains("alias verify_ssl"), "{err}");
        let err = validate_options("probe", &schema, obj(json!({"verify": true}))).unwrap_err();
        assert!(matches!(err, Error::UnknownOptions { .. }), "{err}");
    }

    #[test]
    fn nested_objects_are_checked_and_paths_named() {
        let ok = validate(json!({"name": "a", "rules": [{"verbs": "get,list"}]})).unwrap();
        assert_eq!(ok["rules"], json!([{"verbs": ["get", "list"]}]));
        let ok =
            validate(json!({"name": "a", "rules": ["{verbs: [get], resources: [pods]}"]})).unwrap();
        assert_eq!(
            ok["rules"],
            json!([{"verbs": ["get"], "resources": ["pods"]}])
        );
        let err =
            validate(json!({"name": "a", "rules": [{"verbs": ["get"], "verb": 1}]})).unwrap_err();
        assert!(err.to_string().contains("rules[0].verb"), "{err}");
        let err = validate(json!({"name": "a", "rules": [{"resources": ["x"]}]})).unwrap_err();
        assert!(err.to_string().contains("rules[0].verbs"), "{err}");
    }

    #[test]
    fn internal_keys_are_split_off_and_unknown_ones_ignored() {
        let (options, flags) = split_internal(obj(json!({
            "name": "a",
            "_ansible_check_mode": true,
            "_ansible_diff": "yes",
            "_ansible_tracebacks_for": [],
            "_ansible_some_future_key": {"x": 1}
        })))
        .unwrap();
        assert_eq!(options, obj(json!({"name": "a"})));
        assert_eq!(
            flags,
            Flags {
                check_mode: true,
                diff: true,
                progress: false,
                omit_invocation: false,
            }
        );
        let err = split_internal(obj(json!({"_ansible_check_mode": "perhaps"}))).unwrap_err();
        assert!(err.to_string().contains("_ansible_check_mode"), "{err}");
    }

    #[test]
    fn invocation_is_left_out_only_when_ansible_core_says_so() {
        let flags = |args: Value| split_internal(obj(args)).unwrap().1;
        assert!(
            !flags(json!({})).omit_invocation,
            "cores before 2.21 send no key"
        );
        assert!(!flags(json!({"_ansible_inject_invocation": true})).omit_invocation);
        assert!(flags(json!({"_ansible_inject_invocation": false})).omit_invocation);
        let report = |omit_invocation| {
            let flags = Flags {
                omit_invocation,
                ..Flags::default()
            };
            let mut report = Report::new("probe", flags, obj(json!({"name": "a"})), Vec::new());
            report.set_outcome(Outcome::<Map<String, Value>>::default());
            report
        };
        assert_eq!(
            module_result(&report(false))["invocation"],
            json!({"module_args": {"name": "a"}})
        );
        assert!(module_result(&report(true)).get("invocation").is_none());
    }

    #[test]
    fn args_file_errors_say_what_is_wrong() {
        let path = Path::new("args");
        let err = parse_args_bytes(b"", path).unwrap_err();
        assert!(matches!(err, Error::InputEmpty { .. }), "{err}");
        let err = parse_args_bytes(b"  \n", path).unwrap_err();
        assert!(matches!(err, Error::InputEmpty { .. }), "{err}");
        let err = parse_args_bytes(b"{\"a\": ", path).unwrap_err();
        assert!(matches!(err, Error::InputNotJson { .. }), "{err}");
        let err = parse_args_bytes(b"[1, 2]", path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "args file \"args\" must hold a JSON object of options, but holds a list"
        );
        let err = parse_args_bytes(&[0xff, 0xfe, b'{'], path).unwrap_err();
        assert!(matches!(err, Error::InputNotUtf8 { .. }), "{err}");
        // Not wrapped the Python way: the wrapper key would just be an unknown option.
        let map = parse_args_bytes(br#"{"ANSIBLE_MODULE_ARGS": {}}"#, path).unwrap();
        assert!(map.contains_key("ANSIBLE_MODULE_ARGS"));
    }

    #[test]
    fn params_file_may_be_yaml() {
        let map = parse_params_bytes(b"name: x\nforce: yes\n", Path::new("p.yml")).unwrap();
        assert_eq!(map["name"], json!("x"));
        let err = parse_params_bytes(b"- a\n- b\n", Path::new("p.yml")).unwrap_err();
        assert!(matches!(err, Error::InputNotObject { .. }), "{err}");
    }

    #[test]
    fn params_yaml_error_gives_a_position_not_the_text() {
        for bad in [
            &b"name: x\napi_key: s3cr3t-t0ken\n  bad: [\n"[..],
            &b"api_key: \"s3cr3t-t0ken\nname: [x\n"[..],
        ] {
            let err = parse_params_bytes(bad, Path::new("p.yml")).unwrap_err();
            let text = err.message_with_causes();
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("line "), "{text}");
        }
    }

    #[test]
    fn missing_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read_input(&missing, "args file").unwrap_err();
        assert!(matches!(err, Error::ReadInput { .. }), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 10 * 1024 * 1024]).unwrap();
        let err = read_input(&big, "args file").unwrap_err();
        assert!(matches!(err, Error::InputTooLarge { .. }), "{err}");
    }

    #[test]
    fn no_log_values_are_masked_everywhere() {
        let raw = obj(json!({"name": "a", "api_key": "s3cret-token"}));
        let secrets = no_log_values(&schema(), &raw);
        assert_eq!(secrets, vec!["s3cret-token".to_owned()]);
        let mut report = Report::new("probe", Flags::default(), raw, secrets);
        report.set_outcome(Outcome::<Map<String, Value>> {
            msg: "token s3cret-token was used".into(),
            warnings: vec!["s3cret-token".into()],
            ..Outcome::default()
        });
        let result = module_result(&report);
        let text = result.to_string();
        assert!(!text.contains("s3cret-token"), "{text}");
        assert_eq!(
            result["invocation"]["module_args"]["api_key"],
            json!(NO_LOG_VALUE)
        );
        assert_eq!(result["msg"], json!("token ******** was used"));
        assert_eq!(result["warnings"], json!([NO_LOG_VALUE]));
        assert_eq!(result["changed"], json!(false));
        assert_eq!(result["failed"], json!(false));
    }

    #[test]
    fn no_log_values_that_are_not_strings_are_masked_leaf_by_leaf() {
        for api_key in [
            json!(123_456_789),
            json!(["s3cret-a", 987_654_321]),
            json!({"token": "s3cret-b", "nested": {"n": 24_681_357}}),
        ] {
            let raw = obj(json!({"name": "a", "api_key": api_key.clone()}));
            let secrets = no_log_values(&schema(), &raw);
            let mut report = Report::new("probe", Flags::default(), raw, secrets);
            report.fail("validate", Error::ModuleUsage);
            let text = module_result(&report).to_string();
            for leaf in ["123456789", "s3cret-a", "987654321", "s3cret-b", "24681357"] {
                assert!(!text.contains(leaf), "{api_key}: {text}");
            }
        }
    }

    #[test]
    fn check_mode_flags_that_are_not_clear_booleans_fail() {
        for bad in [json!(null), json!("maybe"), json!([true])] {
            let args = obj(json!({"_ansible_check_mode": bad}));
            let err = split_internal(args).unwrap_err();
            assert!(err.to_string().contains("_ansible_check_mode"), "{err}");
        }
        let (_, flags) = split_internal(obj(json!({"_ansible_check_mode": "yes"}))).unwrap();
        assert!(flags.check_mode);
    }

    #[test]
    fn a_float_for_a_text_option_is_refused_as_yaml_lost_its_text() {
        let schema = json!({"type": "object", "properties": {"v": {"type": ["string", "null"]}}});
        let err = validate_options("probe", &schema, obj(json!({"v": 3.2}))).unwrap_err();
        assert!(err.to_string().contains("quote the value"), "{err}");
        let ok = validate_options("probe", &schema, obj(json!({"v": 1234}))).unwrap();
        assert_eq!(ok["v"], json!("1234"));
    }

    #[test]
    fn an_empty_string_for_a_list_option_is_refused_not_taken_as_an_empty_list() {
        let schema = json!({"type": "object", "properties": {
            "l": {"type": "array", "items": {"type": "string"}, "default": ["kube-system"]}}});
        let err = validate_options("probe", &schema, obj(json!({"l": ""}))).unwrap_err();
        assert!(err.to_string().contains("empty string"), "{err}");
        let ok = validate_options("probe", &schema, obj(json!({"l": []}))).unwrap();
        assert_eq!(ok["l"], json!([]));
    }

    #[test]
    fn failure_result_has_msg_and_no_internal_keys() {
        let mut report = Report::new(
            "probe",
            Flags::default(),
            obj(json!({"name": "a", "_ansible_debug": true})),
            Vec::new(),
        );
        report.fail("validate", Error::ModuleUsage);
        let result = module_result(&report);
        assert_eq!(result["failed"], json!(true));
        assert_eq!(result["failed_step"], json!("validate"));
        assert!(
            result["msg"]
                .as_str()
                .unwrap()
                .starts_with("expected exactly one argument")
        );
        assert!(!result.to_string().contains("_ansible_"));
    }

    #[test]
    fn a_check_mode_run_that_failed_reports_no_change() {
        let flags = Flags {
            check_mode: true,
            ..Flags::default()
        };
        let mut report = Report::new("probe", flags, Map::new(), Vec::new());
        report.set_outcome(Outcome {
            changed: true,
            msg: "would restart kubelite on k8s01".into(),
            report: Map::new(),
            ..Outcome::default()
        });
        assert!(report.changed());
        report.fail("plan", Error::ModuleUsage);
        assert_eq!(module_result(&report)["changed"], json!(false));
    }

    #[test]
    fn a_failure_after_a_change_reports_changed_and_what_was_done() {
        let mut report = Report::new("probe", Flags::default(), Map::new(), Vec::new());
        let mut data = Map::new();
        data.insert(
            "deleted".into(),
            json!([{"name": "a", "manifest": {"kind": "Pod"}}]),
        );
        report.set_outcome(Outcome {
            changed: true,
            msg: "force-deleted 1 stuck pod(s): ns/a".into(),
            report: data,
            ..Outcome::default()
        });
        report.fail("apply", Error::ModuleUsage);
        let result = module_result(&report);
        assert_eq!(result["failed"], json!(true));
        assert_eq!(result["changed"], json!(true));
        assert_eq!(result["failed_step"], json!("apply"));
        assert_eq!(result["deleted"][0]["manifest"]["kind"], json!("Pod"));
    }
}
