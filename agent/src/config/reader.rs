//! Typed access to a parsed `KubeletConfiguration` document: each accessor reads one field,
//! treats `null` as absent, and records a [`FieldError`] naming the field and value on a type or
//! range mismatch, so one pass reports every problem.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::FieldError;
use super::quantity::Quantity;

/// Reads typed fields, collecting every error and warning.
pub(super) struct Reader<'a> {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
    pub origin: &'a str,
    pub base_dir: Option<&'a Path>,
}

/// The value at `path`'s last segment, treating `null` as absent.
pub(super) fn get<'v>(obj: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let key = path.rsplit('.').next().unwrap_or(path);
    obj.get(key).filter(|value| !value.is_null())
}

impl Reader<'_> {
    pub(super) fn warn(&mut self, message: &str) {
        self.warnings
            .push(format!("kubelet config {}: {message}", self.origin));
    }

    pub(super) fn invalid(&mut self, path: &str, value: &Value, reason: impl Into<String>) {
        self.errors
            .push(FieldError::invalid(path, value.to_string(), reason));
    }

    pub(super) fn bool(&mut self, obj: &Map<String, Value>, path: &str) -> Option<bool> {
        let value = get(obj, path)?;
        let parsed = value.as_bool();
        if parsed.is_none() {
            self.invalid(path, value, "expected true or false");
        }
        parsed
    }

    /// An integer within `min..=max`.
    pub(super) fn int(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let value = get(obj, path)?;
        let Some(number) = value.as_i64() else {
            self.invalid(path, value, "expected an integer");
            return None;
        };
        if !(min..=max).contains(&number) {
            self.invalid(
                path,
                value,
                format!("must be between {min} and {max}, inclusive"),
            );
            return None;
        }
        Some(number)
    }

    pub(super) fn string(&mut self, obj: &Map<String, Value>, path: &str) -> Option<String> {
        let value = get(obj, path)?;
        let parsed = value.as_str().map(str::to_owned);
        if parsed.is_none() {
            self.invalid(path, value, "expected a string");
        }
        parsed
    }

    /// A string that is left unchanged when empty (upstream's `""` means "default").
    pub(super) fn nonempty_string(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<String> {
        self.string(obj, path).filter(|text| !text.is_empty())
    }

    /// Sets a file path field when present: `None` for `""`; relative paths are joined to the
    /// config file's directory, as upstream's loader does.
    pub(super) fn path(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        target: &mut Option<PathBuf>,
    ) {
        let Some(text) = self.string(obj, path) else {
            return;
        };
        *target = Some(PathBuf::from(text))
            .filter(|file| !file.as_os_str().is_empty())
            .map(|file| match self.base_dir {
                Some(base) if file.is_relative() => base.join(file),
                _ => file,
            });
    }

    pub(super) fn duration(&mut self, obj: &Map<String, Value>, path: &str) -> Option<Duration> {
        let value = get(obj, path)?;
        let Some(text) = value.as_str() else {
            self.invalid(path, value, "expected a duration string such as \"1m0s\"");
            return None;
        };
        match super::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(e) => {
                self.invalid(path, value, e.to_string());
                None
            }
        }
    }

    /// A duration where zero means "use the default".
    pub(super) fn nonzero_duration(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<Duration> {
        self.duration(obj, path)
            .filter(|duration| !duration.is_zero())
    }

    pub(super) fn ip(&mut self, obj: &Map<String, Value>, path: &str) -> Option<IpAddr> {
        let text = self.nonempty_string(obj, path)?;
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.invalid(path, &Value::String(text), "not an IP address");
        }
        parsed
    }

    pub(super) fn percent(&mut self, obj: &Map<String, Value>, path: &str) -> Option<u8> {
        self.int(obj, path, 0, 100).map(|n| n as u8)
    }

    /// A mapping; warns about keys outside `known` (pass `None` to accept any key).
    pub(super) fn object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        known: Option<&[&str]>,
    ) -> Option<&'v Map<String, Value>> {
        let value = get(obj, path)?;
        let Some(map) = value.as_object() else {
            self.invalid(path, value, "expected a mapping");
            return None;
        };
        if let Some(known) = known {
            for key in map.keys().filter(|key| !known.contains(&key.as_str())) {
                self.warn(&format!("unknown field {path}.{key} ignored"));
            }
        }
        Some(map)
    }

    pub(super) fn string_list(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<Vec<String>> {
        let value = get(obj, path)?;
        let items = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        });
        if items.is_none() {
            self.invalid(path, value, "expected a list of strings");
        }
        items
    }

    /// A mapping of strings; numbers are taken as their text, so `cpu: 1` works.
    pub(super) fn string_map(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<BTreeMap<String, String>> {
        let map = self.object(obj, path, None)?;
        let mut out = BTreeMap::new();
        for (key, value) in map {
            match value {
                Value::String(text) => {
                    out.insert(key.clone(), text.clone());
                }
                Value::Number(number) => {
                    out.insert(key.clone(), number.to_string());
                }
                _ => self.invalid(&format!("{path}.{key}"), value, "expected a string"),
            }
        }
        Some(out)
    }

    /// A quantity where `""` means "use the default"; numbers are taken as their text.
    pub(super) fn nonempty_quantity(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<Quantity> {
        let value = get(obj, path)?;
        let text = match value {
            Value::String(text) if text.is_empty() => return None,
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => {
                self.invalid(path, value, "expected a quantity such as \"10Mi\"");
                return None;
            }
        };
        match text.parse::<Quantity>() {
            Ok(quantity) if quantity.is_negative() => {
                self.invalid(path, value, "must not be negative");
                None
            }
            Ok(quantity) => Some(quantity),
            Err(e) => {
                self.invalid(path, value, e.to_string());
                None
            }
        }
    }
}

/// Overwrites `target` when the field was present and valid.
pub(super) fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}
