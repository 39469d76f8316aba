//! `cloudhelp`: the command line. Parses flags and config, builds the parts, runs them.

fn main() {
    println!("cloudhelp");
}
