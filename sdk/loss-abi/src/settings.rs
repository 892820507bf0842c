//! Key/value settings, parsed and validated with messages that name the key and the value.

use crate::plugin::PluginError;

/// Settings given to a plugin. A plugin takes the keys it knows with the `take_*` methods;
/// [`Settings::finish`] then rejects whatever is left, so a typo never passes silently.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    entries: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl Settings {
    /// Builds settings from pairs, rejecting a key given twice or an empty key.
    pub fn new<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, PluginError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (key, value) in pairs {
            let key = key.into();
            if key.is_empty() {
                return Err(PluginError::config("a setting has an empty key"));
            }
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(PluginError::config(format!(
                    "setting '{key}' is given more than once"
                )));
            }
            entries.push((key, value.into()));
        }
        Ok(Settings {
            entries,
            known: Vec::new(),
        })
    }

    fn take(&mut self, key: &'static str) -> Option<String> {
        self.known.push(key);
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// Takes a finite number, or `default` if the key is absent.
    pub fn take_f64(&mut self, key: &'static str, default: f64) -> Result<f64, PluginError> {
        match self.take(key) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(value) if value.is_finite() => Ok(value),
                Ok(_) => Err(PluginError::config(format!(
                    "setting '{key}' = '{raw}' must be finite"
                ))),
                Err(_) => Err(PluginError::config(format!(
                    "setting '{key}' = '{raw}' is not a number"
                ))),
            },
        }
    }

    /// Takes a number at least `min` (inclusive when `inclusive`), or `default` if absent.
    pub fn take_f64_at_least(
        &mut self,
        key: &'static str,
        default: f64,
        min: f64,
        inclusive: bool,
    ) -> Result<f64, PluginError> {
        let value = self.take_f64(key, default)?;
        let ok = if inclusive { value >= min } else { value > min };
        if ok {
            Ok(value)
        } else {
            let relation = if inclusive { ">=" } else { ">" };
            Err(PluginError::config(format!(
                "setting '{key}' = {value} must be {relation} {min}"
            )))
        }
    }

    /// Takes a non-negative integer if the key is present.
    pub fn take_u64(&mut self, key: &'static str) -> Result<Option<u64>, PluginError> {
        match self.take(key) {
            None => Ok(None),
            Some(raw) => raw.trim().parse::<u64>().map(Some).map_err(|_| {
                PluginError::config(format!(
                    "setting '{key}' = '{raw}' is not a non-negative integer"
                ))
            }),
        }
    }

    /// Takes a boolean (`true`/`false`/`1`/`0`/`yes`/`no`/`on`/`off`), or `default` if absent.
    pub fn take_bool(&mut self, key: &'static str, default: bool) -> Result<bool, PluginError> {
        match self.take(key) {
            None => Ok(default),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(PluginError::config(format!(
                    "setting '{key}' = '{raw}' is not a boolean (true/false)"
                ))),
            },
        }
    }

    /// Takes one of `choices` (the first is the default when the key is absent).
    pub fn take_choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str, PluginError> {
        match self.take(key) {
            None => Ok(choices[0]),
            Some(raw) => choices
                .iter()
                .find(|c| **c == raw.trim())
                .copied()
                .ok_or_else(|| {
                    PluginError::config(format!(
                        "setting '{key}' = '{raw}' must be one of {}",
                        choices.join(", ")
                    ))
                }),
        }
    }

    /// Rejects every key no `take_*` call asked for, listing the keys the plugin knows.
    pub fn finish(self, plugin: &str) -> Result<(), PluginError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let unknown: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Err(PluginError::config(format!(
            "unknown setting{} {} for loss '{plugin}' (known settings: {known})",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_with_named_messages() {
        let mut settings = Settings::new([("c", "0.5"), ("flag", "no"), ("typo", "1")]).unwrap();
        assert_eq!(settings.take_f64("c", 1.0).unwrap(), 0.5);
        assert_eq!(settings.take_f64("delta", 0.2).unwrap(), 0.2);
        assert!(!settings.take_bool("flag", true).unwrap());
        let error = settings.finish("sod").unwrap_err().to_string();
        assert!(error.contains("'typo'"), "{error}");
        assert!(error.contains("c, delta, flag"), "{error}");

        let mut bad = Settings::new([("c", "abc"), ("d", "inf"), ("b", "maybe")]).unwrap();
        assert!(
            bad.take_f64("c", 1.0)
                .unwrap_err()
                .to_string()
                .contains("'c' = 'abc' is not a number")
        );
        assert!(
            bad.take_f64("d", 1.0)
                .unwrap_err()
                .to_string()
                .contains("must be finite")
        );
        assert!(
            bad.take_bool("b", true)
                .unwrap_err()
                .to_string()
                .contains("not a boolean")
        );

        let mut negative = Settings::new([("eps", "0")]).unwrap();
        let error = negative
            .take_f64_at_least("eps", 1e-6, 0.0, false)
            .unwrap_err();
        assert!(
            error.to_string().contains("'eps' = 0 must be > 0"),
            "{error}"
        );

        assert!(Settings::new([("c", "1"), ("c", "2")]).is_err());
    }
}
