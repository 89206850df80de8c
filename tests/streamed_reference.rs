//! The bundled script writes a reference prompt by prompt: the header first (the token counts
//! fix every shape), then each prompt's tensors as soon as they are computed, so that its memory
//! does not grow with the prompt count. The files must be byte for byte what writing the whole
//! file at once gave (tests/support/whole_file_reference.py keeps that writer), and still appear
//! whole or not at all.
mod common;

use std::path::Path;

use common::{binary, fixture_dir, gpt2_parity, interrupt, prompts_file, python, wait_until};

fn whole_file_reference(args: &[&std::ffi::OsStr]) {
    python("tests/support/whole_file_reference.py", args);
}

fn assert_same_bytes(streamed: &Path, whole: &Path) {
    let (streamed, whole) = (std::fs::read(streamed).unwrap(), std::fs::read(whole).unwrap());
    assert_eq!(streamed.len(), whole.len(), "file sizes differ");
    let first_difference = streamed.iter().zip(&whole).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the streamed file differs from the whole-file writer's");
}

#[test]
fn the_layout_is_what_safetensors_writes_for_every_tensor_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, streamed) = (dir.path().join("whole.safetensors"), dir.path().join("streamed.safetensors"));
    whole_file_reference(&["synthetic".as_ref(), "--whole".as_ref(), whole.as_os_str(), "--streamed".as_ref(), streamed.as_os_str()]);
    assert_same_bytes(&streamed, &whole);
}

#[test]
fn a_streamed_reference_of_the_fixture_is_byte_for_byte_the_whole_file_one() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path(), 12);
    let (whole, streamed) = (dir.path().join("whole.safetensors"), dir.path().join("streamed.safetensors"));
    gpt2_parity()
        .arg("reference")
        .arg("--prompts-file")
        .arg(&prompts)
        .arg("--model")
        .arg(fixture_dir())
        .arg("--output")
        .arg(&streamed)
        .assert()
        .code(0);
    whole_file_reference(&[
        "dump".as_ref(),
        "--model".as_ref(),
        fixture_dir().as_os_str(),
        "--prompts-file".as_ref(),
        prompts.as_os_str(),
        "--output".as_ref(),
        whole.as_os_str(),
    ]);
    assert_same_bytes(&streamed, &whole);
}

/// Ctrl-C while prompts are being written: the temporary file goes, the target never appears.
#[test]
fn ctrl_c_midway_through_the_stream_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts_file(dir.path(), 300);
    let output_dir = dir.path().join("out");
    std::fs::create_dir(&output_dir).unwrap();
    let target = output_dir.join("reference.safetensors");
    let mut child = binary()
        .arg("reference")
        .arg("--prompts-file")
        .arg(&prompts)
        .arg("--model")
        .arg(fixture_dir())
        .arg("--output")
        .arg(&target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let temporary_size =
        || std::fs::read_dir(&output_dir).unwrap().flatten().filter_map(|entry| entry.metadata().ok()).map(|m| m.len()).max();
    // Past the header: at least one prompt's logits are on disk, and hundreds more to come.
    wait_until(&mut child, "a prompt's logits were written", || temporary_size().is_some_and(|size| size > 1 << 20));
    let status = interrupt(&mut child);
    assert_eq!(status.code(), Some(130), "{status:?}");
    let left: Vec<_> = std::fs::read_dir(&output_dir).unwrap().flatten().map(|entry| entry.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
