//! The command line as typed: clap's derive for every flag, each defined once here.
//! The options module turns them into what the commands use.
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::model::dtype::Dtype;
use crate::model::hub::DEFAULT_MODEL;
use crate::model::switches::{ProcessingOptions, Step};
use crate::render::Format;
use crate::schema::rounding::Gate;
use crate::shard::Shard;
use crate::sys::device::DeviceRequest;
use crate::sys::memory::SpillPolicy;

const EXIT_CODES: &str = "\
Exit status:
  0  parity holds: every comparison is within tolerance
  1  a tolerance was breached, or a value is NaN/Inf (the full report is still printed/written)
  2  usage, input, model or IO error (one line on stderr names the problem and the fix)";

#[derive(Debug, Parser)]
#[command(name = "gpt2-parity", version, about = "Checks GPT-2 logits, unprocessed and TransformerLens-processed, against reference logits", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run prompts through GPT-2 unprocessed and processed, and compare both with reference logits
    #[command(after_help = EXIT_CODES)]
    Compare(CompareArgs),
    /// Attribute the processed-vs-unprocessed difference to each TransformerLens processing step
    #[command(mut_arg("prompts", |arg| arg.help(PROMPTS_HELP)))]
    Explain(ExplainArgs),
    /// Write a reference file with the bundled Python script (Hugging Face transformers, eager, float32)
    #[command(mut_arg("prompts", |arg| arg.help(PROMPTS_HELP)))]
    Reference(ReferenceArgs),
    /// Combine the JSON reports of `compare --shard I/N` runs into the report of one run over every prompt
    #[command(after_help = EXIT_CODES)]
    Merge(MergeArgs),
}

/// The prompts' help where no reference is read (compare's mentions --reference).
const PROMPTS_HELP: &str = "Prompts to run";

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Prompts to run (with --reference and none given: every prompt the reference holds)
    pub prompts: Vec<String>,
    /// More prompts, as JSON Lines: one JSON string (or {"prompt": "..."}) per line
    #[arg(long, value_name = "FILE")]
    pub prompts_file: Option<PathBuf>,
    /// Hub id or local directory (config.json, model.safetensors, tokenizer.json)
    #[arg(long, value_name = "ID|DIR", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Prepend <|endoftext|> (50256) to every prompt, on both sides
    #[arg(long)]
    pub prepend_bos: bool,
}

/// Tolerances and where the report goes.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Absolute tolerance: |a - b| <= atol + rtol * |b| [default by --dtype: float32 1e-4,
    /// float64 1e-7, float16 0.25, bfloat16 2.0]
    #[arg(long, value_parser = parse_tolerance, allow_negative_numbers = true)]
    pub atol: Option<f64>,
    /// Relative tolerance [default by --dtype: float32 1e-5, float64 2.5e-7, float16 1e-3, bfloat16 1.6e-2]
    #[arg(long, value_parser = parse_tolerance, allow_negative_numbers = true)]
    pub rtol: Option<f64>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report here instead of stdout ("-" is stdout); written whole or not at all
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// After the report, print to stderr where the time went (libtorch start, tokenizer, model
    /// load, digest, reference, processing, forward, statistics, render), CPU time and peak RSS
    #[arg(long)]
    pub timings: bool,
}

/// Where and how the forward passes run.
#[derive(Debug, Args)]
pub struct ComputeArgs {
    /// Device for our forward passes: cpu, cuda, cuda:N, or auto (CUDA when libtorch finds a GPU, else cpu)
    #[arg(long, default_value = "cpu", value_parser = DeviceRequest::parse)]
    pub device: DeviceRequest,
    /// Dtype of our models' weights and forward passes; the reference stays as it was made
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: Dtype,
    /// libtorch's CPU threads; by default libtorch's own choice, the physical cores. Results are
    /// bit-identical run to run for one thread count; another count may change the last bits, so
    /// `--threads 1` gives the same report on every machine of one CPU type (MKL_CBWR=AVX2 and
    /// ATEN_CPU_CAPABILITY=avx2 in the environment: across x86 CPU types)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: Option<i32>,
}

/// Files written besides the report on stdout or --output, each whole or not at all.
#[derive(Debug, Args)]
pub struct ExtraOutputs {
    /// Also write JUnit XML: one testcase per prompt and comparison, failures with their numbers
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write one self-contained HTML page: summary, tables and charts
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write the markdown summary (fit for a pull-request comment). With GITHUB_STEP_SUMMARY
    /// set, it is appended to that file too
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Reference file (gpt2-parity-reference/1); without it the bundled script makes one (cached)
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Check another implementation's logits instead of ours: a file in the reference format
    /// (scripts/write_candidate.py writes one; docs/candidates.md). --model still gives the
    /// tokenizer, shapes and weights digest; no forward runs
    #[arg(long, value_name = "FILE", requires = "reference", conflicts_with_all = ["transformer_lens", "repeat", "attribution", "noise_floor"])]
    pub candidate: Option<PathBuf>,
    /// Check only every N-th prompt, starting at the I-th (I counts from 1: 1/3, 2/3, 3/3 cover
    /// every prompt once); `gpt2-parity merge` joins the shards' JSON reports
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Also run explain's per-step attribution of the processed-vs-unprocessed difference (one
    /// forward per processing step and prompt) and put it in the report and the HTML page
    #[arg(long)]
    pub attribution: bool,
    /// Without --reference: have the bundled script add TransformerLens's logits, processed with
    /// this run's switches (needs scripts/requirements-tl.txt in its Python)
    #[arg(long, conflicts_with = "reference")]
    pub transformer_lens: bool,
    /// Python that runs the bundled reference script [default: $GPT2_PARITY_PYTHON, else the build's venv]
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub outputs: ExtraOutputs,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Compare even when the reference was made from other weights (its digest differs)
    #[arg(long)]
    pub allow_other_weights: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// What a comparison must satisfy to pass: tolerance and the float32 rounding envelope at
    /// every residual snapshot and the logits (envelope), or tolerance on the logits alone
    /// (tolerance) [default: envelope; tolerance with --dtype float16 or bfloat16]
    #[arg(long, value_enum, value_name = "RULE")]
    pub criterion: Option<Gate>,
    /// Also run our model in float64 and report, per comparison, how far each float32 side sits
    /// from it, and whether a breach is rounding noise or real (docs/metrics.md)
    #[arg(long)]
    pub noise_floor: bool,
    /// How the unprocessed and processed models share memory: one weight set resident (the first
    /// pack's unprocessed logits wait in a temporary file in TMPDIR, later packs read the
    /// unprocessed weights back from the checkpoint; memory flat in the prompt count), or both
    /// weight sets held, each pack through both
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub spill: SpillPolicy,
    /// Run every forward N times and fail unless all runs give bit-identical logits
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// TransformerLens's switches, from the one switch table (model::switches).
    #[command(flatten)]
    pub switches: SwitchArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tolerances and output; with explain, a step whose difference spreads by at most atol over
    /// the vocabulary counts as a pure per-position shift
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// The steps explain attributes only when asked, from the one switch table.
    #[command(flatten)]
    pub optional_steps: OptionalStepArgs,
    /// Never drop table columns to fit the terminal (or 100 columns when piped)
    #[arg(long)]
    pub wide: bool,
}

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Reference file to write (safetensors, gpt2-parity-reference/1), written whole or not at all; "-" is stdout
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also record TransformerLens's logits, processed with its defaults and unprocessed (needs
    /// scripts/requirements-tl.txt in the script's Python)
    #[arg(long)]
    pub transformer_lens: bool,
    /// Dtype Hugging Face computes in (torch_dtype); the file stores float32 logits either way
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: Dtype,
    /// Python that runs the bundled reference script [default: $GPT2_PARITY_PYTHON, else the build's venv]
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// JSON reports of `compare --shard I/N --format json`, one per shard, in any order
    #[arg(value_name = "REPORT.json", required = true)]
    pub reports: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the merged report here instead of stdout ("-" is stdout); written whole or not at all
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub outputs: ExtraOutputs,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// How much of a multi-prompt report the table and markdown show; JSON always has it all.
#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// Show every metric in the table and markdown (means, stds, mean |diff|, shift-free max |diff|,
    /// RMSE, cosine, max relative diff, elements outside allclose, smallest passing atol, KL, top-5
    /// overlap), and never drop columns to fit the terminal; JSON always has them all
    #[arg(long)]
    pub wide: bool,
    /// With 4 or more prompts: show every prompt's table after the summary, not only the failing ones'
    #[arg(long)]
    pub verbose: bool,
}

fn parse_tolerance(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number; use e.g. 1e-4"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text} must be a finite number >= 0"));
    }
    Ok(value)
}

/// compare's switch flags, one per row of the switch table: `--no-<step>` for a step on by
/// default, `--<step>` for one off by default.
#[derive(Debug, Clone, Copy)]
pub struct SwitchArgs(pub ProcessingOptions);

/// explain's flags for the steps off by default: each adds its step to the attribution.
#[derive(Debug, Clone, Copy)]
pub struct OptionalStepArgs(pub ProcessingOptions);

/// `flag` as a boolean flag with `help`, its id the flag itself.
fn switch_flag(flag: &'static str, help: &'static str) -> Arg {
    Arg::new(flag).long(flag).action(ArgAction::SetTrue).help(help)
}

/// The default processing with every step whose flag was given turned from its default.
fn switches_given(matches: &ArgMatches, steps: impl Fn(Step) -> bool) -> ProcessingOptions {
    let given = |step: Step| steps(step) && matches.get_flag(step.flag());
    ProcessingOptions::default().with(|step| step.on_by_default() != given(step))
}

impl FromArgMatches for SwitchArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(switches_given(matches, |_| true)))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for SwitchArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        Step::ALL.into_iter().fold(command, |command, step| command.arg(switch_flag(step.flag(), step.help())))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for OptionalStepArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(switches_given(matches, |step| step.explain_help().is_some())))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for OptionalStepArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        Step::ALL
            .into_iter()
            .filter_map(|step| step.explain_help().map(|help| switch_flag(step.flag(), help)))
            .fold(command, |command, flag| command.arg(flag))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}
