//! The name of the test being run, taken from its own function: messages
//! name it (SKIPPED NAME: ...) and tools/vm/suite.txt lists tests by it, so
//! it must be the function's name exactly, and typing it again invites a
//! stale copy.

/// The name of the function this is written in, without its module path:
/// `"a_test"` inside `#[test] fn a_test() { ... }`, closures in it included.
/// A function item's type name is its whole path, so a function defined
/// right here names the one around it. The thread's name would not do:
/// under --test-threads=1 libtest may run a test on the main thread.
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::common::enclosing_function(::std::any::type_name_of_val(&here))
    }};
}
pub(crate) use test_name;

/// The function around `here`, the type name of a function item defined in
/// it (`crate::module::a_test::{{closure}}::here`): the last segment of its
/// path that is not a closure's.
pub fn enclosing_function(here: &'static str) -> &'static str {
    here.rsplit("::")
        .skip(1)
        .find(|segment| *segment != "{{closure}}")
        .unwrap_or_else(|| panic!("no function around {here}"))
}
