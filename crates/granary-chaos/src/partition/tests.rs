//! Parsing the partition commands.

use super::*;

#[test]
fn commands_round_trip_and_bad_lines_are_refused() {
    let cut = PartitionCommand::Cut {
        silo: "s1@1765000000123".into(),
        addr: "127.0.0.1:4000".parse().expect("an address"),
    };
    assert_eq!(PartitionCommand::parse(&cut.line()), Ok(cut));
    assert_eq!(
        PartitionCommand::parse(" heal "),
        Ok(PartitionCommand::Heal)
    );
    for bad in [
        "",
        "cut s1 127.0.0.1:1",
        "cut s1@1 nowhere",
        "partition x",
        "heal now",
    ] {
        assert!(PartitionCommand::parse(bad).is_err(), "{bad:?}");
    }
}
