//! The operator's config for a plugin: a JSON object.

use serde::de::DeserializeOwned;

use crate::Settings;

/// A plugin's config, as the JSON object the operator gave (or the plugin's
/// `default_config`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    value: serde_json::Value,
}

impl Config {
    /// Parse a config from JSON text. An empty string is `{}`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(text).map_err(|e| format!("config is not valid JSON: {e}"))?
        };
        if !value.is_object() {
            return Err("config must be a JSON object".into());
        }
        Ok(Config { value })
    }

    /// Deserialize the whole config into a typed struct (use
    /// `#[serde(deny_unknown_fields, default)]` on it). A settings struct
    /// takes [`Config::settings`], which also enforces its bounds.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone()).map_err(|e| format!("invalid config: {e}"))
    }

    /// Deserialize the config into settings struct `T` (see
    /// [`crate::settings`]) after checking each option it gives against the
    /// bounds of `T`'s fields, with the messages of [`crate::check`]:
    /// `invalid config: min_page_views must be within 1..=100000, got 0`.
    pub fn settings<T: Settings>(&self) -> Result<T, String> {
        if let Some(options) = self.value.as_object() {
            crate::settings::check_bounds::<T>(options)?;
        }
        self.parse()
    }

    /// Refuse any key: what a plugin without config does (the default
    /// `configure`), so a misspelt option is an error, not ignored.
    pub fn ensure_empty(&self) -> Result<(), String> {
        match self.value.as_object() {
            Some(o) if !o.is_empty() => {
                let keys: Vec<&str> = o.keys().map(String::as_str).collect();
                Err(format!(
                    "invalid config: this plugin takes no options, got {}",
                    keys.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }

    /// The raw JSON value.
    pub fn json(&self) -> &serde_json::Value {
        &self.value
    }
}
