use clap::Parser;

fn main() {
    let config = rtap_host::config::Config::parse();
    std::process::exit(rtap_host::app::main(config));
}
