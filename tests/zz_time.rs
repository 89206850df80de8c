use gpt2_parity::model::load::Checkpoint;
use gpt2_parity::model::process::{process_part, Part, ProcessingOptions};
use gpt2_parity::model::Gpt2Config;
#[test]
fn time_parts() {
    tch::set_num_threads(1);
    let dir = std::path::Path::new("/tmp/speedbench/small");
    let config = Gpt2Config::read(&dir.join("config.json")).unwrap();
    for _ in 0..2 {
        let weights = Checkpoint::open(&dir.join("model.safetensors")).unwrap().into_weights(&config, tch::Device::Cpu).unwrap();
        let mut w = weights;
        for part in Part::ALL {
            let cpu = || {
                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
                ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
            };
            let (t, c) = (std::time::Instant::now(), cpu());
            w = process_part(w, ProcessingOptions::default(), part);
            println!("{part:?}: wall {:.3}s cpu {:.3}s", t.elapsed().as_secs_f64(), cpu() - c);
        }
    }
}
