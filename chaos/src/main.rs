fn main() {
    eprintln!("quorate-chaos: the chaos harness is not built yet (see issue 6)");
    std::process::exit(2);
}
