//! `Prefer: dynamic=true`: response data generated from the schema instead of an example,
//! deterministic for a given `--seed`, operation and status.

use exports_spec::Spec;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value};

/// A generator seeded from the mock's seed and what is being answered.
pub fn rng(seed: u64, operation: &str, status: &str) -> StdRng {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in operation.bytes().chain([0]).chain(status.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(hash)
}

/// A value the schema allows, or `None` when the schema says too little to make one.
pub fn generate(spec: &Spec, schema: &Value, rng: &mut StdRng, depth: usize) -> Option<Value> {
    if depth > 12 {
        return None;
    }
    let schema = spec.resolve(schema).ok()?;
    if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        return generate(spec, only, rng, depth + 1);
    }
    if let Some(values) = schema
        .get("enum")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
    {
        return Some(values[rng.random_range(0..values.len())].clone());
    }
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut object = Map::new();
            for (name, property) in schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                object.insert(name.clone(), generate(spec, property, rng, depth + 1)?);
            }
            Some(Value::Object(object))
        }
        Some("array") => {
            let min = number("minItems").unwrap_or(1.0) as usize;
            let max = number("maxItems").map_or(min.max(3), |m| m as usize).max(min);
            let items = schema.get("items")?;
            (0..rng.random_range(min..=max))
                .map(|_| generate(spec, items, rng, depth + 1))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        }
        Some("integer") => {
            let min = number("minimum").unwrap_or(0.0) as i64;
            let max = number("maximum").map_or(min + 1000, |m| m as i64).max(min);
            Some(Value::from(rng.random_range(min..=max)))
        }
        Some("number") => {
            let min = number("minimum").unwrap_or(0.0);
            let max = number("maximum").unwrap_or(min + 1000.0).max(min);
            let value = (rng.random_range(min..=max) * 100.0).round() / 100.0;
            Some(Value::from(value.clamp(min, max)))
        }
        Some("boolean") => Some(Value::from(rng.random_bool(0.5))),
        Some("string") => Some(Value::from(string(schema, rng))),
        _ => None,
    }
}

fn string(schema: &Value, rng: &mut StdRng) -> String {
    let day = |rng: &mut StdRng| {
        format!(
            "2025-{:02}-{:02}",
            rng.random_range(1..=12),
            rng.random_range(1..=28)
        )
    };
    match schema.get("format").and_then(Value::as_str) {
        Some("uuid") => uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string(),
        Some("date") => day(rng),
        Some("date-time") => format!(
            "{}T{:02}:{:02}:{:02}Z",
            day(rng),
            rng.random_range(0..24),
            rng.random_range(0..60),
            rng.random_range(0..60)
        ),
        Some("uri") => format!("https://example.com/{}", word(rng, 8)),
        Some("email") => format!("{}@example.com", word(rng, 6)),
        // A pattern is not generated from: the schema's own example is known to match it.
        _ if schema.get("pattern").is_some() && schema.get("example").is_some_and(Value::is_string) => {
            schema["example"].as_str().unwrap_or_default().to_string()
        }
        _ => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(4) as usize;
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .map_or(min.max(12), |m| m as usize)
                .max(min);
            let length = rng.random_range(min..=max);
            word(rng, length)
        }
    }
}

fn word(rng: &mut StdRng, length: usize) -> String {
    (0..length)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_the_schema_holds() {
        let spec = Spec::bundled();
        let schema = serde_json::json!({"$ref": "#/components/schemas/Export"});
        let a = generate(&spec, &schema, &mut rng(7, "getExport", "200"), 0).unwrap();
        let b = generate(&spec, &schema, &mut rng(7, "getExport", "200"), 0).unwrap();
        let c = generate(&spec, &schema, &mut rng(8, "getExport", "200"), 0).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        spec.validate(&schema, &a).unwrap();
        assert!(generate(&spec, &serde_json::json!({}), &mut rng(0, "x", "200"), 0).is_none());
    }
}
