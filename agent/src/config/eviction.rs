//! Hard eviction thresholds (`evictionHard`), parsed and defaulted as the upstream kubelet does.
//!
//! Upstream (`cmd/kubelet/app/server.go` `loadConfigFile`, `pkg/kubelet/eviction/defaults_linux.go`
//! and `helpers.go` `parseThresholdStatement`):
//! - `evictionHard` absent (or null): the Linux defaults apply, `memory.available<100Mi`,
//!   `nodefs.available<10%`, `nodefs.inodesFree<5%`, `imagefs.available<15%`,
//!   `imagefs.inodesFree<5%`.
//! - `evictionHard` present (even `{}`): only the listed signals have thresholds, unless
//!   `mergeDefaultEvictionSettings: true`, in which case unlisted signals keep their defaults.
//! - `"0%"` and `"100%"` switch a signal off; other percentages must lie in 0–100 %; quantities
//!   must be positive.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::FieldError;
use super::quantity::Quantity;

/// An eviction signal name as it appears in `evictionHard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvictionSignal {
    MemoryAvailable,
    AllocatableMemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    ContainerFsAvailable,
    ContainerFsInodesFree,
    PidAvailable,
}

impl EvictionSignal {
    pub const ALL: [Self; 9] = [
        Self::MemoryAvailable,
        Self::AllocatableMemoryAvailable,
        Self::NodeFsAvailable,
        Self::NodeFsInodesFree,
        Self::ImageFsAvailable,
        Self::ImageFsInodesFree,
        Self::ContainerFsAvailable,
        Self::ContainerFsInodesFree,
        Self::PidAvailable,
    ];

    /// The upstream spelling, e.g. `"memory.available"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MemoryAvailable => "memory.available",
            Self::AllocatableMemoryAvailable => "allocatableMemory.available",
            Self::NodeFsAvailable => "nodefs.available",
            Self::NodeFsInodesFree => "nodefs.inodesFree",
            Self::ImageFsAvailable => "imagefs.available",
            Self::ImageFsInodesFree => "imagefs.inodesFree",
            Self::ContainerFsAvailable => "containerfs.available",
            Self::ContainerFsInodesFree => "containerfs.inodesFree",
            Self::PidAvailable => "pid.available",
        }
    }
}

impl FromStr for EvictionSignal {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|signal| signal.as_str() == text)
            .ok_or(())
    }
}

impl fmt::Display for EvictionSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threshold below which the signal triggers eviction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvictionThreshold {
    /// An absolute amount (bytes, inodes or pids), always positive.
    Quantity(Quantity),
    /// A fraction of capacity in `(0, 1)`, e.g. `0.1` for `"10%"`.
    Percentage(f64),
}

impl fmt::Display for EvictionThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quantity(quantity) => write!(f, "{quantity}"),
            Self::Percentage(fraction) => write!(f, "{}%", fraction * 100.0),
        }
    }
}

/// Upstream's Linux `DefaultEvictionHard`.
pub const DEFAULT_EVICTION_HARD: [(EvictionSignal, &str); 5] = [
    (EvictionSignal::MemoryAvailable, "100Mi"),
    (EvictionSignal::NodeFsAvailable, "10%"),
    (EvictionSignal::NodeFsInodesFree, "5%"),
    (EvictionSignal::ImageFsAvailable, "15%"),
    (EvictionSignal::ImageFsInodesFree, "5%"),
];

/// The thresholds that apply when `evictionHard` is not set.
#[must_use]
pub fn default_eviction_hard() -> BTreeMap<EvictionSignal, EvictionThreshold> {
    DEFAULT_EVICTION_HARD
        .iter()
        .filter_map(|(signal, text)| Some((*signal, parse_threshold(text).ok()??)))
        .collect()
}

/// Resolves the effective hard thresholds from the file's `evictionHard` entries (signal name
/// to threshold text, `None` when the field is absent) and `mergeDefaultEvictionSettings`.
pub(super) fn resolve_eviction_hard(
    entries: Option<&BTreeMap<String, String>>,
    merge_defaults: bool,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<EvictionSignal, EvictionThreshold> {
    let Some(entries) = entries else {
        return default_eviction_hard();
    };
    let mut texts: BTreeMap<EvictionSignal, &str> = BTreeMap::new();
    if merge_defaults {
        texts.extend(DEFAULT_EVICTION_HARD);
    }
    for (name, text) in entries {
        let field = format!("evictionHard.{name}");
        match name.parse::<EvictionSignal>() {
            Ok(signal) => {
                texts.insert(signal, text);
            }
            Err(()) => errors.push(FieldError::invalid(
                field,
                format!("{text:?}"),
                format!(
                    "unknown eviction signal {name:?}; known signals are {}",
                    EvictionSignal::ALL.map(EvictionSignal::as_str).join(", ")
                ),
            )),
        }
    }
    let mut thresholds = BTreeMap::new();
    for (signal, text) in texts {
        match parse_threshold(text) {
            Ok(Some(threshold)) => {
                thresholds.insert(signal, threshold);
            }
            Ok(None) => {}
            Err(reason) => errors.push(FieldError::invalid(
                format!("evictionHard.{signal}"),
                format!("{text:?}"),
                reason,
            )),
        }
    }
    thresholds
}

/// Parses one threshold value: `Ok(None)` for the disabling `"0%"` / `"100%"`.
pub fn parse_threshold(text: &str) -> Result<Option<EvictionThreshold>, String> {
    if let Some(number) = text.strip_suffix('%') {
        if text == "0%" || text == "100%" {
            return Ok(None);
        }
        let percent: f64 = number.parse().map_err(|_| {
            format!("{number:?} is not a number; expected a percentage such as 10%")
        })?;
        if !percent.is_finite() {
            return Err("the percentage must be a finite number".to_owned());
        }
        if percent < 0.0 {
            return Err("a percentage threshold must be >= 0%".to_owned());
        }
        if percent > 100.0 {
            return Err("a percentage threshold must be <= 100%".to_owned());
        }
        return Ok(Some(EvictionThreshold::Percentage(percent / 100.0)));
    }
    let quantity: Quantity = text.parse().map_err(|e| {
        format!("{e}; expected a quantity such as 100Mi or a percentage such as 10%")
    })?;
    if quantity.is_negative() || quantity.is_zero() {
        return Err("a quantity threshold must be positive".to_owned());
    }
    Ok(Some(EvictionThreshold::Quantity(quantity)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_match_upstream_linux() {
        let defaults = default_eviction_hard();
        assert_eq!(defaults.len(), 5);
        assert_eq!(
            defaults[&EvictionSignal::MemoryAvailable],
            EvictionThreshold::Quantity(Quantity::from_units(100 * 1024 * 1024))
        );
        assert_eq!(
            defaults[&EvictionSignal::NodeFsAvailable],
            EvictionThreshold::Percentage(0.1)
        );
        assert_eq!(
            defaults[&EvictionSignal::NodeFsInodesFree],
            EvictionThreshold::Percentage(0.05)
        );
        assert_eq!(
            defaults[&EvictionSignal::ImageFsAvailable],
            EvictionThreshold::Percentage(0.15)
        );
        assert_eq!(
            defaults[&EvictionSignal::ImageFsInodesFree],
            EvictionThreshold::Percentage(0.05)
        );
    }

    #[test]
    fn absent_means_defaults_and_present_replaces_them() {
        let mut errors = Vec::new();
        assert_eq!(
            resolve_eviction_hard(None, false, &mut errors),
            default_eviction_hard()
        );
        let set = entries(&[("memory.available", "300Mi")]);
        let only = resolve_eviction_hard(Some(&set), false, &mut errors);
        assert_eq!(
            only.keys().copied().collect::<Vec<_>>(),
            [EvictionSignal::MemoryAvailable]
        );
        assert!(resolve_eviction_hard(Some(&BTreeMap::new()), false, &mut errors).is_empty());
        assert!(errors.is_empty());
    }

    #[test]
    fn merge_keeps_unlisted_defaults_and_zero_percent_disables() {
        let mut errors = Vec::new();
        let set = entries(&[("memory.available", "300Mi"), ("imagefs.available", "0%")]);
        let merged = resolve_eviction_hard(Some(&set), true, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(merged.len(), 4);
        assert_eq!(
            merged[&EvictionSignal::MemoryAvailable],
            EvictionThreshold::Quantity(Quantity::from_units(300 * 1024 * 1024))
        );
        assert!(!merged.contains_key(&EvictionSignal::ImageFsAvailable));
        assert_eq!(
            merged[&EvictionSignal::NodeFsAvailable],
            EvictionThreshold::Percentage(0.1)
        );
    }

    #[test]
    fn threshold_values() {
        assert_eq!(parse_threshold("100%"), Ok(None));
        assert_eq!(
            parse_threshold("7.5%"),
            Ok(Some(EvictionThreshold::Percentage(0.075)))
        );
        assert_eq!(
            parse_threshold("1000"),
            Ok(Some(EvictionThreshold::Quantity(Quantity::from_units(
                1000
            ))))
        );
        for bad in ["-1%", "101%", "abc%", "%", "NaN%", "0", "-5Mi", "5 Mi", ""] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_signals_and_bad_values_are_named() {
        let mut errors = Vec::new();
        let set = entries(&[("memory.free", "1Gi"), ("nodefs.available", "ten%")]);
        resolve_eviction_hard(Some(&set), false, &mut errors);
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("evictionHard.memory.free"), "{text}");
        assert!(text.contains("evictionHard.nodefs.available"), "{text}");
        assert!(text.contains("\"ten%\""), "{text}");
    }
}
