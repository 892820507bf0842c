//! The `sod` binary: a thin shell over the `sod` library.

fn main() -> std::process::ExitCode {
    sod::cli::run()
}
