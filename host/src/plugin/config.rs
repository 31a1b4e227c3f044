//! A plugin's config checked against the JSON Schema it describes, by the
//! host: an upload, a config change or `--plugin-config` that the schema
//! refuses is refused before the plugin sees it, with the path of the
//! failing field. (The plugin's own `init` still has the last word.)

/// A compiled config schema.
pub struct Schema(jsonschema::Validator);

impl Schema {
    /// Compile a plugin's `config-schema` (no remote references: it must
    /// be self-contained).
    pub fn compile(schema: &serde_json::Value) -> Result<Schema, String> {
        jsonschema::options()
            .build(schema)
            .map(Schema)
            .map_err(|e| e.to_string())
    }

    /// Check a config; the error names each failing field by its JSON
    /// pointer (`/min_page_views: 0 is less than the minimum of 1`).
    pub fn check(&self, config: &serde_json::Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .0
            .iter_errors(config)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                };
                format!("{path}: {e}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Check `config` against the config schema of `d`, as the host refuses it:
/// `config refused by the plugin's schema at /min_page_views: …`.
pub fn check(d: &super::Description, config: &serde_json::Value) -> Result<(), String> {
    let schema = Schema::compile(&d.config_schema)
        .map_err(|e| format!("the plugin's config schema is not valid: {e}"))?;
    schema
        .check(config)
        .map_err(|e| format!("config refused by the plugin's schema at {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_failing_field() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"min_page_views": {"type": "integer", "minimum": 1}}
        }))
        .unwrap();
        assert!(schema.check(&json!({"min_page_views": 3})).is_ok());
        let e = schema.check(&json!({"min_page_views": 0})).unwrap_err();
        assert!(e.starts_with("/min_page_views: "), "{e}");
        assert!(e.contains("minimum of 1"), "{e}");
        let e = schema.check(&json!({"min_page_view": 3})).unwrap_err();
        assert!(e.starts_with("/: "), "{e}");
        assert!(e.contains("min_page_view"), "{e}");
        assert!(Schema::compile(&json!({"type": 12})).is_err());
    }
}
