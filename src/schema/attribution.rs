//! explain's rows as reports hold them (`explain`, and `compare --attribution`): what each
//! processing step changes in the weights and does to the logits. diagnose::attribution measures them.
use serde::{Deserialize, Serialize};

use crate::model::switches::Step;

/// How a row's weights were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// No step: only the untied unembedding every processed model has.
    Baseline,
    /// One step on its own.
    Alone,
    /// The steps so far, in TransformerLens's order.
    Accumulated,
}

/// What a row does to the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogitEffect {
    /// Every logit within atol of the unprocessed one.
    Unchanged,
    /// Logits move, but each position by one constant (spread within atol): softmax unchanged.
    PureShift,
    /// The spread exceeds atol: the next-token distribution changes.
    ChangesDistribution,
}

/// One tensor a row's processing changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorChange {
    pub tensor: String,
    /// ||after - before|| / max(||before||, ||after||), Frobenius norms: 0 unchanged, up to 2.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub relative_change: f64,
}

/// A row's effect on one prompt, against the unprocessed model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptEffect {
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub max_abs_diff: f64,
    /// Max over positions of the difference's spread across the vocabulary once its per-position
    /// mean is removed: 0 for a pure per-position shift.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub shift_spread: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub log_softmax_max_abs_diff: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub top1_agreement: f64,
    /// <Δ_row, Δ_all> / ||Δ_all||², Δ = logits minus unprocessed logits, Δ_all for all steps:
    /// the share of the whole raw difference this row accounts for.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub share_of_raw_difference: f64,
    /// Per position, the mean of the difference over the vocabulary.
    #[serde(deserialize_with = "crate::schema::nullable::numbers")]
    pub position_shift: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRow {
    pub name: String,
    pub kind: RowKind,
    pub steps: Vec<Step>,
    pub changed_tensors: Vec<TensorChange>,
    /// Over all prompts: the largest |diff|, spread and log-softmax |diff|; the smallest top-1
    /// agreement and share.
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub max_abs_diff: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub shift_spread: f64,
    /// What the row does to the logits, judged with atol.
    pub logit_effect: LogitEffect,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub log_softmax_max_abs_diff: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub top1_agreement: f64,
    #[serde(deserialize_with = "crate::schema::nullable::number")]
    pub min_share_of_raw_difference: f64,
    pub per_prompt: Vec<PromptEffect>,
}

impl StepRow {
    /// The tensor the row's processing changed most, relatively.
    pub fn largest_change(&self) -> Option<&TensorChange> {
        self.changed_tensors.iter().max_by(|a, b| a.relative_change.total_cmp(&b.relative_change))
    }

    /// "fold_ln + center_unembed", or "no processing".
    pub fn step_names(&self) -> String {
        if self.steps.is_empty() {
            return "no processing".to_owned();
        }
        self.steps.iter().map(|step| step.name()).collect::<Vec<_>>().join(" + ")
    }
}
