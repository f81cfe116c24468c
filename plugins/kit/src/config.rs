//! Reading a plugin's own config keys from the raw network config.

use cni::Error;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One key of the config: absent and `null` are both `None` (as Go's decoder treats them); a
/// value of the wrong type is an invalid config (code 7) that names the key and the value.
pub fn field<T: DeserializeOwned>(raw: &Value, key: &str) -> Result<Option<T>, Error> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::invalid_config(format!("invalid \"{key}\": {v}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_and_null_are_none_and_a_wrong_type_names_key_and_value() {
        let raw = json!({"mtu": 1400, "gone": null, "bad": "x"});
        assert_eq!(field::<u32>(&raw, "mtu").unwrap(), Some(1400));
        assert_eq!(field::<u32>(&raw, "gone").unwrap(), None);
        assert_eq!(field::<u32>(&raw, "missing").unwrap(), None);
        let e = field::<u32>(&raw, "bad").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("invalid \"bad\": \"x\""), "{}", e.msg);
    }
}
