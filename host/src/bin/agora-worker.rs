//! A worker process of the host's supervisor (see `agora_host::pool`):
//! `agora-worker [--gpu auto|wgpu|none]`, speaking the worker protocol on
//! stdin/stdout. The `agora` program embeds the same entry point.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gpu = match args.as_slice() {
        [] => agora_host::GpuChoice::Auto,
        [flag, choice] if flag == "--gpu" => match choice.parse() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("agora-worker: {e}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: agora-worker [--gpu auto|wgpu|none]");
            std::process::exit(2);
        }
    };
    std::process::exit(agora_host::worker::main(gpu));
}
