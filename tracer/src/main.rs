fn main() -> std::process::ExitCode {
    memstall::main()
}
