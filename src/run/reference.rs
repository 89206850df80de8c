//! `gpt2-parity reference`: writes a reference file with the bundled script.
use std::path::Path;

use anyhow::Result;

use super::ModelInputs;
use crate::cli::{check_writable, ReferenceArgs};
use crate::model::process::ProcessingOptions;
use crate::reference::bundled::{find_python, produce, ReferenceRequest};
use crate::render::format::count_of;

pub fn run(args: &ReferenceArgs) -> Result<()> {
    let to_stdout = args.output == Path::new("-");
    if !to_stdout {
        check_writable(&args.output, "--output")?;
    }
    let prompts = args.model.prompts()?;
    let inputs = ModelInputs::resolve(&args.model.model)?;
    inputs.tokenize_all(&prompts, args.model.prepend_bos)?;
    let python = find_python(args.python.as_deref())?;
    let digest = inputs.open_checkpoint()?.digest;
    let request = ReferenceRequest {
        model: &inputs.files,
        weights_digest: &digest,
        prompts: &prompts,
        prepend_bos: args.model.prepend_bos,
        transformer_lens: args.transformer_lens.then(ProcessingOptions::default),
        dtype: args.dtype,
    };
    produce(&python, &request, &args.output)?;
    let written = if to_stdout { "the reference to stdout".to_owned() } else { args.output.display().to_string() };
    eprintln!("wrote {written} ({})", count_of(prompts.len(), "prompt"));
    Ok(())
}
