use clap::Parser;

// glibc's malloc was ~10 % of the processing thread (per-batch vectors and
// per-key state bytes churn); mimalloc's thread-local free lists halve that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let config = rtap_host::config::Config::parse();
    rtap_host::alloc::tune(config.checkpoint_interval.0);
    std::process::exit(rtap_host::app::main(config));
}
