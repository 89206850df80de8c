//! Every option resolved once, before any work (ripgrep's HiArgs): output paths checked and `-`
//! made stdout, the device found, threads set, tolerances defaulted by dtype, the criterion
//! checked against the dtype, prompts read, switches gathered. The commands read only these.
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::args::{CompareArgs, ComputeArgs, ExplainArgs, ExtraOutputs, LayoutArgs, MergeArgs, ModelArgs, ReferenceArgs, ReportArgs};
use crate::model::dtype::Dtype;
use crate::model::process::ProcessingOptions;
use crate::prompts::read_prompts_file;
use crate::render::outputs::{Destinations, ExtraFiles, Layout};
use crate::render::Format;
use crate::schema::rounding::Gate;
use crate::schema::Tolerance;
use crate::shard::Shard;
use crate::sys::device;
use crate::sys::memory::SpillPolicy;
use crate::sys::output::{check_writable, file_or_stdout};

/// Where and how the forward passes run.
#[derive(Debug, Clone, Copy)]
pub struct Compute {
    pub device: tch::Device,
    pub dtype: Dtype,
    /// libtorch's CPU threads, as set.
    pub threads: i32,
}

impl Compute {
    /// Resolves the device (loading libtorch's CUDA library only when CUDA is asked for) and
    /// fixes libtorch's thread count.
    fn resolve(args: &ComputeArgs) -> Result<Self> {
        let device = device::resolve(args.device)?;
        // libtorch starts with one thread per physical core (OMP_NUM_THREADS can lower it), which
        // is the default here too; read before any set, it is that count.
        let threads = args.threads.unwrap_or_else(tch::get_num_threads);
        tch::set_num_threads(threads);
        Ok(Self { device, dtype: args.dtype, threads })
    }
}

/// The model and the prompts to run through it.
pub struct ModelChoice {
    /// Hub id or local directory.
    pub model: String,
    /// From --prompts-file first, then those on the command line.
    pub prompts: Vec<String>,
    pub prepend_bos: bool,
}

impl ModelChoice {
    fn resolve(args: &ModelArgs) -> Result<Self> {
        let mut prompts = match &args.prompts_file {
            Some(path) => read_prompts_file(path)?,
            None => Vec::new(),
        };
        prompts.extend(args.prompts.iter().cloned());
        Ok(Self { model: args.model.clone(), prompts, prepend_bos: args.prepend_bos })
    }
}

/// `compare`'s options.
pub struct CompareOptions {
    pub destinations: Destinations,
    pub gate: Gate,
    pub compute: Compute,
    pub model: ModelChoice,
    pub tolerance: Tolerance,
    pub processing: ProcessingOptions,
    pub reference: Option<PathBuf>,
    pub candidate: Option<PathBuf>,
    pub shard: Option<Shard>,
    pub attribution: bool,
    pub transformer_lens: bool,
    /// `--python`; found (or its absence reported) only when the bundled script runs.
    pub python: Option<PathBuf>,
    pub allow_other_weights: bool,
    pub noise_floor: bool,
    pub spill: SpillPolicy,
    pub repeat: u32,
}

impl CompareOptions {
    pub fn resolve(args: &CompareArgs) -> Result<Self> {
        let destinations = destinations(args.report.format, &args.layout, args.report.output.as_ref(), &args.outputs)?;
        let gate = gate(args.criterion, args.compute.dtype)?;
        let compute = Compute::resolve(&args.compute)?;
        Ok(Self {
            destinations,
            gate,
            tolerance: tolerance(&args.report, compute.dtype),
            compute,
            model: ModelChoice::resolve(&args.model)?,
            processing: args.switches.0,
            reference: args.reference.clone(),
            candidate: args.candidate.clone(),
            shard: args.shard,
            attribution: args.attribution,
            transformer_lens: args.transformer_lens,
            python: args.python.clone(),
            allow_other_weights: args.allow_other_weights,
            noise_floor: args.noise_floor,
            spill: args.spill,
            repeat: args.repeat,
        })
    }
}

/// `explain`'s options.
pub struct ExplainOptions {
    pub format: Format,
    /// The report's file; `None` for stdout.
    pub output: Option<PathBuf>,
    pub wide: bool,
    pub compute: Compute,
    pub model: ModelChoice,
    pub tolerance: Tolerance,
    /// The steps to attribute: TransformerLens's defaults, and the optional ones asked for.
    pub processing: ProcessingOptions,
}

impl ExplainOptions {
    pub fn resolve(args: &ExplainArgs) -> Result<Self> {
        let output = output_file(args.report.output.as_ref(), "--output")?;
        let compute = Compute::resolve(&args.compute)?;
        Ok(Self {
            format: args.report.format,
            output,
            wide: args.wide,
            tolerance: tolerance(&args.report, compute.dtype),
            compute,
            model: ModelChoice::resolve(&args.model)?,
            processing: args.optional_steps.0,
        })
    }
}

/// `reference`'s options.
pub struct ReferenceOptions {
    /// The file to write; `None` for stdout.
    pub output: Option<PathBuf>,
    pub model: ModelChoice,
    pub transformer_lens: bool,
    pub dtype: Dtype,
    /// `--python`; found when the script runs.
    pub python: Option<PathBuf>,
}

impl ReferenceOptions {
    pub fn resolve(args: &ReferenceArgs) -> Result<Self> {
        Ok(Self {
            output: output_file(Some(&args.output), "--output")?,
            model: ModelChoice::resolve(&args.model)?,
            transformer_lens: args.transformer_lens,
            dtype: args.dtype,
            python: args.python.clone(),
        })
    }
}

/// `merge`'s options.
pub struct MergeOptions {
    pub destinations: Destinations,
    pub reports: Vec<PathBuf>,
}

impl MergeOptions {
    pub fn resolve(args: &MergeArgs) -> Result<Self> {
        Ok(Self {
            destinations: destinations(args.format, &args.layout, args.output.as_ref(), &args.outputs)?,
            reports: args.reports.clone(),
        })
    }
}

/// Where a report and its extra files go, every path checked writable and distinct.
fn destinations(format: Format, layout: &LayoutArgs, output: Option<&PathBuf>, extra: &ExtraOutputs) -> Result<Destinations> {
    let destinations = Destinations {
        format,
        layout: Layout { wide: layout.wide, verbose: layout.verbose },
        output: output.and_then(|path| file_or_stdout(path)).map(PathBuf::from),
        extra: ExtraFiles { junit: extra.junit.clone(), html: extra.html.clone(), markdown: extra.markdown.clone() },
    };
    destinations.check()?;
    Ok(destinations)
}

/// An output option's file, checked writable; `None` for stdout (`-`, or the option not given).
fn output_file(path: Option<&PathBuf>, option: &str) -> Result<Option<PathBuf>> {
    let file = path.and_then(|path| file_or_stdout(path));
    if let Some(file) = file {
        check_writable(file, option)?;
    }
    Ok(file.map(PathBuf::from))
}

/// --atol and --rtol, each defaulting to the dtype's own.
fn tolerance(args: &ReportArgs, dtype: Dtype) -> Tolerance {
    let default = Tolerance::default_for(dtype);
    Tolerance { atol: args.atol.unwrap_or(default.atol), rtol: args.rtol.unwrap_or(default.rtol) }
}

/// `--criterion`, defaulting by dtype: half precision is judged by tolerance alone, since the
/// envelope measures float32's rounding.
fn gate(criterion: Option<Gate>, dtype: Dtype) -> Result<Gate> {
    let half = matches!(dtype, Dtype::Float16 | Dtype::Bfloat16);
    match criterion {
        Some(Gate::Envelope) if half => bail!(
            "--criterion envelope measures float32's rounding and cannot judge --dtype {}; use --criterion tolerance (the default for half precision)",
            dtype.name()
        ),
        Some(gate) => Ok(gate),
        None if half => Ok(Gate::Tolerance),
        None => Ok(Gate::Envelope),
    }
}
