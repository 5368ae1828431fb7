fn main() -> std::process::ExitCode {
    memstall::app::main()
}
