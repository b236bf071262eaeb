//! `offst-relay`: run a relay (see [`offst_relay::cli`]).

fn main() -> std::process::ExitCode {
    offst_relay::cli::main(std::env::args_os())
}
