//! Reading reports back (`merge`): a statistic that could not be computed is NaN in the Report
//! and `null` in JSON (serde_json writes every non-finite f64 so), and reads back as NaN, so a
//! report with NaN or Inf values merges like any other and still fails.
use serde::{Deserialize, Deserializer};

/// An f64 field: `null` reads as NaN.
pub fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// A list of f64: each `null` reads as NaN.
pub fn numbers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(deserializer)?.into_iter().map(|value| value.unwrap_or(f64::NAN)).collect())
}

/// An optional list of f64: each `null` inside reads as NaN.
pub fn optional_numbers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<f64>>, D::Error> {
    Ok(Option::<Vec<Option<f64>>>::deserialize(deserializer)?
        .map(|values| values.into_iter().map(|value| value.unwrap_or(f64::NAN)).collect()))
}

/// An optional f64: `null` reads as NaN only where the field is present.
pub fn optional_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Ok(Some(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN)))
}
