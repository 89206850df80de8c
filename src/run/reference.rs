//! `gpt2-parity reference`: writes a reference file with the bundled script.
use anyhow::Result;

use crate::cli::options::ReferenceOptions;
use crate::model::inputs::ModelInputs;
use crate::model::process::ProcessingOptions;
use crate::reference::bundled::{produce, ReferenceRequest};
use crate::render::format::count_of;
use crate::sys::python::find_python;

pub fn run(options: &ReferenceOptions) -> Result<()> {
    let prompts = &options.model.prompts;
    let inputs = ModelInputs::resolve(&options.model.model)?;
    inputs.tokenize_all(prompts, options.model.prepend_bos)?;
    let python = find_python(options.python.as_deref())?;
    let digest = inputs.open_checkpoint()?.digest;
    let request = ReferenceRequest {
        model: &inputs.files,
        weights_digest: &digest,
        prompts,
        prepend_bos: options.model.prepend_bos,
        transformer_lens: options.transformer_lens.then(ProcessingOptions::default),
        dtype: options.dtype,
    };
    produce(&python, &request, options.output.as_deref())?;
    let written = options.output.as_ref().map_or("the reference to stdout".to_owned(), |path| path.display().to_string());
    eprintln!("wrote {written} ({})", count_of(prompts.len(), "prompt"));
    Ok(())
}
