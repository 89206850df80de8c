//! The one table of TransformerLens's processing switches (fold_ln, center_writing_weights,
//! ...): their names, defaults, command-line flags and help, and whether the bundled script takes
//! them. The CLI's flags, the processing, the reference cache key, the script's arguments, the
//! switches a reference records and the diagnosis's names are all read from it.
use serde::{Deserialize, Serialize};

/// One of TransformerLens's processing steps, in the order it applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    FoldLn,
    CenterWritingWeights,
    CenterUnembed,
    FoldValueBiases,
    RefactorFactoredAttnMatrices,
}

/// One row of the switch table.
struct Switch {
    /// TransformerLens's own name, as reports and reference metadata spell it.
    name: &'static str,
    on_by_default: bool,
    /// The flag that turns the step from its default: `no-<name>` for a step on by default.
    flag: &'static str,
    /// compare's help for the flag.
    help: &'static str,
    /// explain's help, for a step off by default (explain attributes it only when asked).
    explain_help: Option<&'static str>,
    /// Whether scripts/dump_reference.py takes the flag for TransformerLens's processed run.
    script_takes_flag: bool,
}

/// In [`Step`]'s order.
const TABLE: [Switch; 5] = [
    Switch {
        name: "fold_ln",
        on_by_default: true,
        flag: "no-fold-ln",
        help: "Skip TransformerLens's fold_ln in the processed model",
        explain_help: None,
        script_takes_flag: true,
    },
    Switch {
        name: "center_writing_weights",
        on_by_default: true,
        flag: "no-center-writing-weights",
        help: "Skip center_writing_weights",
        explain_help: None,
        script_takes_flag: true,
    },
    Switch {
        name: "center_unembed",
        on_by_default: true,
        flag: "no-center-unembed",
        help: "Skip center_unembed (then processed-vs-reference must match raw, not just up to a shift)",
        explain_help: None,
        script_takes_flag: true,
    },
    Switch {
        name: "fold_value_biases",
        on_by_default: true,
        flag: "no-fold-value-biases",
        help: "Skip fold_value_biases",
        explain_help: None,
        script_takes_flag: true,
    },
    Switch {
        name: "refactor_factored_attn_matrices",
        on_by_default: false,
        flag: "refactor-factored-attn-matrices",
        help: "Apply TransformerLens's refactor_factored_attn_matrices (off by default)",
        explain_help: Some("Also attribute TransformerLens's refactor_factored_attn_matrices (applied last)"),
        script_takes_flag: false,
    },
];

impl Step {
    pub const ALL: [Step; 5] =
        [Step::FoldLn, Step::CenterWritingWeights, Step::CenterUnembed, Step::FoldValueBiases, Step::RefactorFactoredAttnMatrices];

    fn row(self) -> &'static Switch {
        &TABLE[self as usize]
    }

    /// TransformerLens's name: `fold_ln`.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Whether TransformerLens applies the step unless told not to.
    pub fn on_by_default(self) -> bool {
        self.row().on_by_default
    }

    /// The command-line flag (without `--`) that turns the step from its default.
    pub fn flag(self) -> &'static str {
        self.row().flag
    }

    /// compare's help for [`Step::flag`].
    pub fn help(self) -> &'static str {
        self.row().help
    }

    /// explain's help for [`Step::flag`], for a step explain attributes only when asked.
    pub fn explain_help(self) -> Option<&'static str> {
        self.row().explain_help
    }
}

/// Which of TransformerLens's steps to apply; all on is TransformerLens's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingOptions {
    pub fold_ln: bool,
    pub center_writing_weights: bool,
    pub center_unembed: bool,
    pub fold_value_biases: bool,
    /// Off by default, as in TransformerLens; applied last.
    pub refactor_factored_attn_matrices: bool,
}

impl Default for ProcessingOptions {
    fn default() -> Self {
        Self::ALL_OFF.with(|step| step.on_by_default())
    }
}

impl ProcessingOptions {
    const ALL_OFF: Self = Self {
        fold_ln: false,
        center_writing_weights: false,
        center_unembed: false,
        fold_value_biases: false,
        refactor_factored_attn_matrices: false,
    };

    /// Exactly the given steps.
    pub fn only(steps: &[Step]) -> Self {
        Self::ALL_OFF.with(|step| steps.contains(&step))
    }

    /// These options with every step set as `on` says.
    pub fn with(mut self, on: impl Fn(Step) -> bool) -> Self {
        for step in Step::ALL {
            *self.switch_mut(step) = on(step);
        }
        self
    }

    /// The enabled steps, in TransformerLens's order.
    pub fn steps(&self) -> Vec<Step> {
        Step::ALL.into_iter().filter(|step| self.enables(*step)).collect()
    }

    pub fn enables(&self, step: Step) -> bool {
        *{ *self }.switch_mut(step)
    }

    /// Every switch with its setting, in TransformerLens's order.
    pub fn switches(&self) -> impl Iterator<Item = (Step, bool)> + '_ {
        Step::ALL.into_iter().map(|step| (step, self.enables(step)))
    }

    /// The flags (with `--`) that turn on-by-default steps off for the bundled script's
    /// TransformerLens run.
    pub fn script_args(&self) -> Vec<String> {
        self.switches()
            .filter(|&(step, on)| step.row().script_takes_flag && on != step.on_by_default())
            .map(|(step, _)| format!("--{}", step.flag()))
            .collect()
    }

    /// What the reference cache's key records of these switches: every name and setting, spelled
    /// as the key has always spelled them (this struct's Debug form), so existing caches stay valid.
    pub fn cache_key(&self) -> String {
        let switches: Vec<String> = self.switches().map(|(step, on)| format!("{}: {on}", step.name())).collect();
        format!("ProcessingOptions {{ {} }}", switches.join(", "))
    }

    /// The switches on which these options and a reference's recorded ones disagree, as
    /// (step, ours, the reference's); a switch the reference does not record is not compared.
    pub fn differences_from(&self, recorded: &RecordedSwitches) -> Vec<(Step, bool, bool)> {
        self.switches()
            .filter_map(|(step, ours)| recorded.get(step).filter(|&theirs| theirs != ours).map(|theirs| (step, ours, theirs)))
            .collect()
    }

    /// The one place a step maps to its field.
    fn switch_mut(&mut self, step: Step) -> &mut bool {
        match step {
            Step::FoldLn => &mut self.fold_ln,
            Step::CenterWritingWeights => &mut self.center_writing_weights,
            Step::CenterUnembed => &mut self.center_unembed,
            Step::FoldValueBiases => &mut self.fold_value_biases,
            Step::RefactorFactoredAttnMatrices => &mut self.refactor_factored_attn_matrices,
        }
    }
}

/// The switches a reference records for TransformerLens's processed logits (its
/// `transformer_lens_processing` metadata object); a switch it does not record (or records as
/// something other than a boolean) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedSwitches([Option<bool>; 5]);

impl RecordedSwitches {
    /// From the metadata's JSON object; names this table does not know are ignored.
    pub fn from_json(object: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self(Step::ALL.map(|step| object.get(step.name()).and_then(serde_json::Value::as_bool)))
    }

    pub fn get(&self, step: Step) -> Option<bool> {
        self.0[step as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_step_order_and_names_each_flag_after_its_step() {
        for step in Step::ALL {
            let dashed = step.name().replace('_', "-");
            let expected = if step.on_by_default() { format!("no-{dashed}") } else { dashed };
            assert_eq!(step.flag(), expected, "{step:?}");
            assert_eq!(serde_json::to_value(step).unwrap(), step.name(), "{step:?}");
        }
    }

    #[test]
    fn the_cache_key_is_the_key_existing_caches_were_made_with() {
        // Until this table, the key was the Debug form: every combination must keep it.
        for bits in 0..32u32 {
            let options = ProcessingOptions::ALL_OFF.with(|step| bits & (1 << step as u32) != 0);
            assert_eq!(options.cache_key(), format!("{options:?}"));
        }
    }

    #[test]
    fn the_script_gets_a_flag_for_each_default_step_turned_off() {
        assert!(ProcessingOptions::default().script_args().is_empty());
        let options =
            ProcessingOptions { fold_ln: false, center_unembed: false, refactor_factored_attn_matrices: true, ..Default::default() };
        assert_eq!(options.script_args(), ["--no-fold-ln", "--no-center-unembed"]);
    }

    #[test]
    fn differences_name_only_recorded_switches_that_disagree() {
        let recorded: serde_json::Value =
            serde_json::json!({"fold_ln": false, "center_unembed": true, "fold_value_biases": "yes", "other": true});
        let recorded = RecordedSwitches::from_json(recorded.as_object().unwrap());
        let ours = ProcessingOptions::default();
        assert_eq!(ours.differences_from(&recorded), [(Step::FoldLn, true, false)]);
        assert_eq!(recorded.get(Step::FoldValueBiases), None);
    }
}
