//! `wa-register` is not built yet: it arrives with its own issue. It says so and exits
//! non-zero so that nothing mistakes it for a working service.

fn main() {
    eprintln!("wa-register: not built yet (see the project's issues); exiting");
    std::process::exit(69);
}
