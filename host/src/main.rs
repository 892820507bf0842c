//! The `sod` binary: a thin shell over the `sod` library.

fn main() -> std::process::ExitCode {
    sod::alloc::tune_for_tensors();
    sod::cli::run()
}
