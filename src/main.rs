//! The `kubemend` binary: everything happens in [`kubemend::run`].

fn main() {
    let code = kubemend::run(std::env::args_os());
    #[allow(
        clippy::disallowed_methods,
        reason = "main is the one place that exits"
    )]
    std::process::exit(code);
}
