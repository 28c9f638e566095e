//! Tests of reading variables, shared by every settings group.

use super::*;
use crate::config::vars::Vars;

fn with<T>(pairs: &[(&'static str, &str)], f: impl FnOnce(&Vars) -> T) -> T {
    let m: HashMap<&str, String> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let lookup = |name: &'static str| Ok(m.get(name).cloned());
    f(&Vars::new(&lookup))
}

#[test]
fn blank_is_unset_and_required_names_the_variable() {
    with(&[("a", "  "), ("b", " x ")], |v| {
        assert_eq!(v.get("a").unwrap(), None);
        assert_eq!(v.get("c").unwrap(), None);
        // Values are passed on as given; each setting trims as it needs.
        assert_eq!(v.get("b").unwrap().as_deref(), Some(" x "));
        assert_eq!(v.required("a").unwrap_err(), ConfigError::Missing("a"));
    });
}

#[test]
fn numbers_are_bounded_and_default_when_unset() {
    with(
        &[("n", " 7 "), ("zero", "0"), ("big", "11"), ("x", "1.5")],
        |v| {
            assert_eq!(v.number("n", 3, 10).unwrap(), 7);
            assert_eq!(v.number("unset", 3, 10).unwrap(), 3);
            for name in ["zero", "big", "x"] {
                assert_eq!(
                    v.number(name, 3, 10).unwrap_err(),
                    ConfigError::Invalid {
                        name,
                        reason: "must be a whole number from 1 to 10".into()
                    }
                );
            }
        },
    );
}

#[test]
fn a_switch_takes_its_two_spellings_and_is_off_when_unset() {
    with(&[("on", " allow"), ("off", "deny"), ("bad", "yes")], |v| {
        assert!(v.flag("on", "allow", "deny").unwrap());
        assert!(!v.flag("off", "allow", "deny").unwrap());
        assert!(!v.flag("unset", "allow", "deny").unwrap());
        assert_eq!(
            v.flag("bad", "allow", "deny").unwrap_err(),
            ConfigError::Invalid {
                name: "bad",
                reason: "must be allow or deny".into()
            }
        );
    });
}

#[test]
fn keys_are_optional_and_a_weak_one_is_refused_without_its_value() {
    with(&[("k", "reader-key-0123456789"), ("short", "weak")], |v| {
        assert!(v.keys("unset").unwrap().is_none());
        assert!(v.keys("k").unwrap().is_some());
        let e = v.keys("short").unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { name: "short", .. }),
            "{e}"
        );
        assert!(!e.to_string().contains("weak"), "{e}");
    });
}

#[test]
fn a_lookup_failure_names_the_variable() {
    let lookup = |_: &'static str| Err("provider down".to_owned());
    assert_eq!(
        Vars::new(&lookup).get("x").unwrap_err(),
        ConfigError::Unreadable {
            name: "x",
            reason: "provider down".into()
        }
    );
}
