//! The `tailgate` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    tailgate::cli::main()
}
