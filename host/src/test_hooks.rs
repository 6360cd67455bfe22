//! The `HOKAN_TEST_*` variables through which the end-to-end tests inject faults and a fast
//! clock: a kill right after a step, a disk that fills, a clock that runs 60 times as fast.
//!
//! They are read only in a build with the `test-hooks` feature, which only the test crate turns
//! on. An installed hokan must never kill itself or fake a full disk because somebody's
//! environment happened to name a variable, so in every other build [`var`] is `None` whatever
//! the environment says. Every hook reads its variable here, so that one place decides.

/// The variables the hooks read, for the documentation and the checks below.
pub const VARIABLES: &[&str] = &[
    "HOKAN_TEST_KILL_AFTER",
    "HOKAN_TEST_SPACE_LEFT",
    "HOKAN_TEST_CLOCK",
];

/// A test variable's value: the environment's in a build with `test-hooks`, else always `None`.
pub fn var(name: &str) -> Option<String> {
    read(name, |n| std::env::var(n).ok())
}

/// [`var`] over any lookup, so that the tests can check the gate without touching the
/// process's environment.
fn read(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    debug_assert!(
        VARIABLES.contains(&name),
        "{name} is not a known test variable"
    );
    if cfg!(feature = "test-hooks") {
        lookup(name)
    } else {
        None
    }
}

/// Whether this build reads the test variables (`hokan --version` says so, so that a build
/// with hooks is never mistaken for the product).
pub const ENABLED: bool = cfg!(feature = "test-hooks");

#[cfg(test)]
mod tests {
    use super::*;

    fn everything_set(_: &str) -> Option<String> {
        Some("1".to_string())
    }

    #[test]
    #[cfg(not(feature = "test-hooks"))]
    fn the_product_build_ignores_every_test_variable() {
        for name in VARIABLES {
            assert_eq!(read(name, everything_set), None, "{name} is read");
        }
        const { assert!(!ENABLED) };
    }

    #[test]
    #[cfg(feature = "test-hooks")]
    fn the_test_build_reads_the_test_variables() {
        for name in VARIABLES {
            assert_eq!(read(name, everything_set).as_deref(), Some("1"), "{name}");
        }
        assert_eq!(read("HOKAN_TEST_CLOCK", |_| None), None);
        const { assert!(ENABLED) };
    }
}
