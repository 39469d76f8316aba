//! Canonical JSON (RFC 8785, JCS) restricted to integers: the only form a statement or log entry
//! body is ever signed or hashed in.
//!
//! Owns the byte form of signed JSON. It must never "repair" input: [`parse_canonical`] accepts bytes
//! only when re-canonicalizing them gives the very same bytes. Floats are refused outright (their JCS
//! form depends on ECMAScript number printing, a needless risk for signed data), and so are integers
//! outside ±(2^53 − 1), the range every JSON implementation (and the browser) holds exactly.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::Error;

/// The largest integer magnitude allowed in signed JSON: 2^53 − 1 (I-JSON, RFC 7493 §2.2).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Returns the RFC 8785 canonical bytes of `value`; fails on floats or out-of-range integers.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, Error> {
    check_numbers(value)?;
    serde_json_canonicalizer::to_vec(value).map_err(|e| Error::NonCanonicalJson(e.to_string()))
}

/// Parses `bytes` as JSON and accepts it only if it is already in canonical form.
///
/// Duplicate object keys, floats, out-of-range integers, insignificant whitespace, unsorted keys,
/// and escapes that JCS would not write are all rejected with a reason.
pub fn parse_canonical(bytes: &[u8]) -> Result<Value, Error> {
    let StrictValue(value) = serde_json::from_slice(bytes)
        .map_err(|e| Error::NonCanonicalJson(format!("not valid JSON: {e}")))?;
    let canonical = canonicalize(&value)?;
    if canonical != bytes {
        let at = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(bytes.len()));
        return Err(Error::NonCanonicalJson(format!(
            "differs from its RFC 8785 form at byte {at}"
        )));
    }
    Ok(value)
}

/// How deep signed JSON may nest. cloudhelp's own statements, key files and proofs nest at most 5
/// levels; the cap keeps a crafted file from costing more than its size.
pub const MAX_DEPTH: usize = 32;

/// Where a bad number or a too-deep value is: segments collected on the way back up, so a path is
/// built only for the one value reported, never for every value checked.
#[derive(Default)]
struct Location(Vec<String>);

impl Location {
    fn within(mut self, segment: impl FnOnce() -> String) -> Self {
        self.0.push(segment());
        self
    }

    fn path(&self) -> String {
        std::iter::once("$".to_string())
            .chain(self.0.iter().rev().cloned())
            .collect()
    }
}

fn check_numbers(value: &Value) -> Result<(), Error> {
    check_value(value, 0).map_err(|(location, problem)| {
        Error::NonCanonicalJson(format!("{}: {problem}", location.path()))
    })
}

fn check_value(value: &Value, depth: usize) -> Result<(), (Location, String)> {
    if depth > MAX_DEPTH {
        return Err((
            Location::default(),
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match value {
        Value::Number(n) => {
            let ok = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u <= MAX_SAFE_INTEGER,
                (None, Some(i)) => i.unsigned_abs() <= MAX_SAFE_INTEGER,
                (None, None) => false,
            };
            if ok {
                Ok(())
            } else {
                Err((
                    Location::default(),
                    format!("{n} is not an integer within ±(2^53 − 1)"),
                ))
            }
        }
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
            check_value(v, depth + 1)
                .map_err(|(at, problem)| (at.within(|| format!("[{i}]")), problem))
        }),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_value(v, depth + 1)
                .map_err(|(at, problem)| (at.within(|| format!(".{k}")), problem))
        }),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// A JSON value parsed without serde_json's silent "last duplicate key wins" and without floats.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without floats or duplicate keys")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        Err(E::custom(format!(
            "number {v} is not an integer (floats are not allowed)"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(StrictValue(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rejects(input: &str) -> String {
        match parse_canonical(input.as_bytes()) {
            Ok(v) => panic!("{input} was accepted as {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn keys_are_sorted_by_utf16_code_units_as_rfc_8785_requires() {
        // RFC 8785 §3.2.3: "\u{20ac}" (U+20AC) sorts after "\r" and before the emoji (a surrogate pair
        // 0xD83D..), and U+FB33 sorts after the surrogate pair although its UTF-8 is smaller.
        let value = json!({"\u{fb33}": 1, "\u{1f600}": 2, "\u{20ac}": 3, "\r": 4, "1": 5, "10": 6});
        let bytes = canonicalize(&value).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"\\r\":4,\"1\":5,\"10\":6,\"\u{20ac}\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn strings_are_escaped_the_way_rfc_8785_writes_them() {
        let value = json!({"s": "\u{0}\u{1f}\"\\/\u{7f}é\n"});
        let text = String::from_utf8(canonicalize(&value).unwrap()).unwrap();
        assert_eq!(text, "{\"s\":\"\\u0000\\u001f\\\"\\\\/\u{7f}é\\n\"}");
    }

    #[test]
    fn canonical_input_parses_back_to_the_same_value() {
        let value = json!({"a": [1, -2, true, null, "x"], "b": {"c": 9007199254740991_u64}});
        let bytes = canonicalize(&value).unwrap();
        assert_eq!(parse_canonical(&bytes).unwrap(), value);
    }

    #[test]
    fn whitespace_is_rejected_not_repaired() {
        assert!(rejects("{\"a\": 1}").contains("byte 5"));
    }

    #[test]
    fn unsorted_keys_are_rejected() {
        rejects("{\"b\":1,\"a\":2}");
    }

    #[test]
    fn duplicate_keys_are_rejected_with_the_key_named() {
        assert!(rejects("{\"a\":1,\"a\":1}").contains("duplicate key \"a\""));
    }

    #[test]
    fn floats_are_rejected_even_when_integral() {
        rejects("{\"a\":1.0}");
        rejects("{\"a\":1e3}");
        rejects("{\"a\":-0}");
        assert!(canonicalize(&json!({"a": 0.5})).is_err());
    }

    #[test]
    fn integers_beyond_two_to_the_53_are_rejected() {
        rejects("9007199254740992");
        rejects("-9007199254740992");
        rejects("18446744073709551616");
        assert!(parse_canonical(b"-9007199254740991").is_ok());
    }

    #[test]
    fn a_bad_number_is_reported_with_its_path() {
        let message = rejects("{\"a\":[1,{\"b\":9007199254740992}]}");
        assert!(message.contains("$.a[1].b: 9007199254740992"), "{message}");
    }

    #[test]
    fn nesting_deeper_than_the_cap_is_rejected_with_where() {
        let deep = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        assert!(parse_canonical(deep(MAX_DEPTH).as_bytes()).is_ok());
        let message = rejects(&deep(MAX_DEPTH + 1));
        assert!(
            message.contains("nested deeper than 32 levels"),
            "{message}"
        );
        assert!(
            message.contains(&format!("${}", "[0]".repeat(MAX_DEPTH))),
            "{message}"
        );
    }

    #[test]
    fn needless_escapes_are_rejected() {
        rejects("\"\\u0041\"");
        rejects("\"\\/\"");
    }

    #[test]
    fn trailing_bytes_and_invalid_utf8_are_rejected() {
        rejects("{}\n");
        assert!(parse_canonical(b"\"\xff\"").is_err());
        rejects("\"\\ud800\"");
    }
}
