//! The version of the plugin contract (`wit/plugin.wit`) this host speaks,
//! and the check that refuses components built for another one with a
//! message naming both versions.

/// The WIT package of the contract.
pub const PACKAGE: &str = "poplar:plugin";
/// The contract version this host implements.
pub const VERSION: &str = "0.2.0";

/// The full name of one of the contract's interfaces, e.g.
/// `poplar:plugin/storage@0.2.0`.
pub fn interface(name: &str) -> String {
    format!("{PACKAGE}/{name}@{VERSION}")
}

/// The contract version named by an import or export such as
/// `poplar:plugin/host@0.1.0`, if it belongs to the contract's package.
pub fn version_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').map_or("", |(_, v)| v))
}

/// Checks that every contract interface a component imports or exports is
/// of [`VERSION`]; the error names the component's version and this one.
pub fn check<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for name in names {
        match version_of(name) {
            Some(VERSION) | None => {}
            Some("") => {
                return Err(format!(
                    "it uses {name} without a version; this host speaks \
                     {PACKAGE}@{VERSION}: rebuild it against wit/plugin.wit of {VERSION}"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "it was built for {PACKAGE}@{other} ({name}), but this host speaks \
                     {PACKAGE}@{VERSION}: rebuild it against wit/plugin.wit of {VERSION}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_versions() {
        assert_eq!(interface("storage"), "poplar:plugin/storage@0.2.0");
        assert_eq!(version_of("poplar:plugin/host@0.1.0"), Some("0.1.0"));
        assert_eq!(version_of("wasi:io/streams@0.2.6"), None);
        assert!(check(["wasi:io/streams@0.2.6", "poplar:plugin/host@0.2.0"]).is_ok());
        let why = check(["poplar:plugin/host@0.2.0", "poplar:plugin/auth@0.1.0"]).unwrap_err();
        assert!(why.contains("poplar:plugin@0.1.0"), "{why}");
        assert!(why.contains("poplar:plugin@0.2.0"), "{why}");
        assert!(
            check(["poplar:plugin/auth"])
                .unwrap_err()
                .contains("without a version")
        );
    }
}
